"""The parameter grid of the asv suite and the profiles that select parts of it. Imports no framework.

Every benchmark class of :mod:`benchmarks.bench_convlstm` takes the same fixed grid, whatever is installed::

    params = [VARIANTS, WORKLOADS, MODES, DTYPES];  param_names = ["variant", "workload", "mode", "dtype"]

A combination that the active profile does not select, that the variant cannot run (e.g. a peer in
bfloat16), or whose framework is missing raises ``NotImplementedError`` in ``setup``: asv shows it as
skipped (n/a). The profile comes from the environment variable ``BENCH_PROFILE`` (``quick``, the default, or
``full``), optionally narrowed by ``BENCH_VARIANTS``, ``BENCH_WORKLOADS``, ``BENCH_MODES`` and ``BENCH_DTYPES``
(comma-separated lists); ``BENCH_TIMING`` borrows another profile's sampling budget.

Variants of one *family* (same adapter, same packages) share a process: :func:`group_of` lists the profile's
combinations measured together, in paired rounds, with one of them.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
from collections.abc import Mapping, Sequence

from implementations.workloads import WORKLOADS as _WORKLOADS

# ---------------------------------------------------------------------------------------------
# The variants and the parameters
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Variant:
    """One row of the comparison: which adapter builds it, what it needs, what it is."""

    name: str
    adapter: str  # module of benchmarks.adapters: torch, keras, jax
    packages: tuple[str, ...]  # importable top-level packages it needs (checked without importing)
    role: str  # ours | ours-extra | peer | trap
    description: str
    dtypes: tuple[str, ...] = ("float32",)


_HALF = ("float32", "bfloat16", "float16")

VARIANT_TABLE: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("torch", "torch", ("torch",), "ours", "implementations.torch_impl.ConvLSTM, eager", _HALF),
        Variant(
            "torch-compile", "torch", ("torch",), "ours", "the same module under torch.compile (inductor)", _HALF
        ),
        Variant(
            "torch-fused",
            "torch",
            ("torch",),
            "peer",
            "fused-conv module (one Conv2d over cat([x, h]), gates i,f,o,g), weights via interop.to_torch_fused",
        ),
        Variant(
            "torch-fused-compile",
            "torch",
            ("torch",),
            "peer",
            "the fused-conv peer module under torch.compile (inductor): the best PyTorch peer path",
        ),
        Variant(
            "keras-tf",
            "keras",
            ("keras", "tensorflow"),
            "ours",
            "implementations.keras_impl.ConvLSTMStack on TensorFlow, compile(jit_compile=False): tf.function graph",
            _HALF,
        ),
        Variant(
            "keras-tf-xla",
            "keras",
            ("keras", "tensorflow"),
            "ours",
            "the same Keras model on TensorFlow with compile(jit_compile=True): XLA",
            _HALF,
        ),
        Variant(
            "keras-jax", "keras", ("keras", "jax"), "ours-extra", "the same Keras model on the JAX backend (jit)", _HALF
        ),
        Variant(
            "keras-torch",
            "keras",
            ("keras", "torch"),
            "ours-extra",
            "the same Keras model on the torch backend (eager)",
            _HALF,
        ),
        Variant(
            "keras-builtin",
            "keras",
            ("keras", "tensorflow"),
            "peer",
            "keras.layers.ConvLSTM2D stack from interop.to_keras on TensorFlow, Keras' default jit_compile='auto' "
            "(XLA on GPU machines, off on CPU-only ones; the resolved value is recorded)",
        ),
        Variant(
            "jax",
            "jax",
            ("jax", "flax", "optax"),
            "ours",
            "implementations.jax_impl.convlstm_apply under jax.jit, time loop fully unrolled",
            _HALF,
        ),
        Variant(
            "jax-scan",
            "jax",
            ("jax", "flax", "optax"),
            "trap",
            "the same with a rolled lax.scan (unroll=1): the XLA training trap",
            _HALF,
        ),
        Variant(
            "flax-linen",
            "jax",
            ("jax", "flax", "optax"),
            "peer",
            "flax.linen.RNN(ConvLSTMCell) stack, unroll=T, weights via interop.to_flax",
        ),
        Variant(
            "flax-linen-scan",
            "jax",
            ("jax", "flax", "optax"),
            "trap",
            "flax.linen.RNN(ConvLSTMCell) with flax's default unroll=1 (a rolled scan): the trap",
        ),
    )
}
VARIANTS: tuple[str, ...] = tuple(VARIANT_TABLE)
WORKLOADS: tuple[str, ...] = tuple(_WORKLOADS)
MODES: tuple[str, ...] = ("forward", "train")
DTYPES: tuple[str, ...] = _HALF

PARAM_NAMES = ["variant", "workload", "mode", "dtype"]
PARAMS = [list(VARIANTS), list(WORKLOADS), list(MODES), list(DTYPES)]

Combo = tuple[str, str, str, str]

#: Training (mode ``train``): MSE against a fixed target, plain SGD with this learning rate.
LEARNING_RATE = 1e-2

ITEMSIZE = {"float32": 4, "bfloat16": 2, "float16": 2}


def family(variant: str) -> tuple[str, tuple[str, ...]]:
    """Variants of one family can share a process: the same adapter and the same packages (for Keras: the same
    backend, which is process-wide). The paired rounds compare the variants of one family."""
    row = VARIANT_TABLE[variant]
    return row.adapter, row.packages


def predicted_activation_bytes(workload: str, dtype: str) -> int:
    """The spec's activation memory of one training step (StackSpec.activation_bytes) in ``dtype``."""
    wl = _WORKLOADS[workload]
    return wl.spec.activation_bytes(wl.input_shape, ITEMSIZE[dtype])


def missing_packages(variant: str) -> list[str]:
    """Packages of ``variant`` that cannot be found (``importlib.util.find_spec``; nothing is imported)."""
    out = []
    for name in VARIANT_TABLE[variant].packages:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append(name)
    return out


def combo_label(combo: Combo) -> str:
    """How asv prints a parameter combination: ``('torch', 'tiny', 'forward', 'float32')``."""
    return "(" + ", ".join(repr(v) for v in combo) + ")"



def variant_list(text: str, parser: argparse.ArgumentParser) -> list[str]:
    """A comma-separated variant list from a command line; ``parser.error`` (exit 2) names any unknown variant."""
    variants = [v.strip() for v in text.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; expected some of {list(VARIANTS)}")
    return variants


# ---------------------------------------------------------------------------------------------
# Profiles
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Profile:
    """Which combinations run, and how long each measurement may take."""

    name: str
    combos: frozenset[Combo]
    min_samples: int  # timed calls per measurement, at least ...
    max_samples: int  # ... at most ...
    max_time: float  # ... and stop after this many seconds once min_samples are in
    timeout: float  # asv timeout of one benchmark process (setup included), seconds
    warmup_seconds: float  # warm-up after the first call: at least one more call, and this long
    peak_seconds: float  # each peak probe (matmul, conv): warm-up and then best call within this long
    rounds: int = 8  # paired rounds of the Metrics process (benchmarks.paired): one block per variant and round
    block_seconds: float = 0.25  # each block times steps for at least this long (>= contention.MIN_BLOCK_SECONDS)
    skip_benchmarks: tuple[str, ...] = ()  # benchmark classes this profile does not run


#: The quick profile: ours (one row per framework) against the three peers, both modes, float32, on the
#: CI-sized and the radar workload; sized to finish in under 10 minutes on 2 CPU cores (see README).
QUICK_VARIANTS = {
    "tiny": ("torch", "keras-tf-xla", "jax", "torch-fused", "keras-builtin", "flax-linen"),
    "radar": ("torch", "keras-tf-xla", "jax", "torch-fused", "keras-builtin", "flax-linen"),
}


def _quick_combos() -> frozenset[Combo]:
    return frozenset(
        (v, w, m, "float32") for w, variants in QUICK_VARIANTS.items() for v in variants for m in MODES
    )


def _full_combos() -> frozenset[Combo]:
    return frozenset(
        (v, w, m, d)
        for v in VARIANTS
        for w in WORKLOADS
        for m in MODES
        for d in DTYPES
        if d in VARIANT_TABLE[v].dtypes
    )


PROFILES: dict[str, Profile] = {
    # quick leaves out PeakMemory and ImportBaseline (a third and fourth process per combination and variant):
    # training memory comes from TrainMemory, which measures over the build in a process of its own.
    "quick": Profile(
        "quick", _quick_combos(), min_samples=5, max_samples=300, max_time=1.0, timeout=300.0,
        warmup_seconds=0.3, peak_seconds=0.3, rounds=16, block_seconds=0.3,
        skip_benchmarks=("PeakMemory", "ImportBaseline"),
    ),
    "full": Profile(
        "full", _full_combos(), min_samples=10, max_samples=1000, max_time=10.0, timeout=3600.0,
        warmup_seconds=1.0, peak_seconds=1.0, rounds=24, block_seconds=0.5,
    ),
}
_FILTER_ENV = {
    "variant": "BENCH_VARIANTS",
    "workload": "BENCH_WORKLOADS",
    "mode": "BENCH_MODES",
    "dtype": "BENCH_DTYPES",
}


def _env_list(name: str, allowed: Sequence[str], env: Mapping[str, str]) -> set[str] | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    values = {v.strip() for v in raw.split(",") if v.strip()}
    unknown = sorted(values - set(allowed))
    if unknown:
        raise ValueError(f"{name}: unknown value(s) {unknown}; expected some of {list(allowed)}")
    return values


def active_profile(env: Mapping[str, str] | None = None) -> Profile:
    """The profile named by ``BENCH_PROFILE`` (default quick), narrowed by the BENCH_* lists.

    ``BENCH_TIMING`` names a profile whose sampling budget (samples, seconds, warm-up) replaces this one's.
    """
    env = os.environ if env is None else env
    name = env.get("BENCH_PROFILE", "quick").strip() or "quick"
    if name not in PROFILES:
        raise ValueError(f"BENCH_PROFILE={name!r}: expected one of {sorted(PROFILES)}")
    base = PROFILES[name]
    timing = env.get("BENCH_TIMING", "").strip()
    if timing:
        if timing not in PROFILES:
            raise ValueError(f"BENCH_TIMING={timing!r}: expected one of {sorted(PROFILES)}")
        sampling = {f.name: getattr(PROFILES[timing], f.name) for f in dataclasses.fields(Profile)}
        sampling.update(name=base.name, combos=base.combos, timeout=base.timeout, skip_benchmarks=base.skip_benchmarks)
        base = Profile(**sampling)
    filters = [
        _env_list(_FILTER_ENV[key], allowed, env)
        for key, allowed in zip(PARAM_NAMES, (VARIANTS, WORKLOADS, MODES, DTYPES))
    ]
    if all(f is None for f in filters):
        return base
    combos = frozenset(c for c in base.combos if all(f is None or v in f for f, v in zip(filters, c)))
    return dataclasses.replace(base, combos=combos)


def support_reason(combo: Combo) -> str | None:
    """Why the variant cannot run this combination at all (None: it can)."""
    variant, workload, mode, dtype = combo
    if variant not in VARIANT_TABLE:
        return f"unknown variant {variant!r}"
    if workload not in WORKLOADS or mode not in MODES or dtype not in DTYPES:
        return f"unknown combination {combo}"
    if dtype not in VARIANT_TABLE[variant].dtypes:
        return f"{variant} runs {'/'.join(VARIANT_TABLE[variant].dtypes)} only, not {dtype}"
    return None


def skip_reason(combo: Combo, profile: Profile | None = None) -> str | None:
    """Why ``setup`` must raise NotImplementedError for this combination (None: run it). Imports nothing."""
    reason = support_reason(combo)
    if reason:
        return reason
    profile = active_profile() if profile is None else profile
    if combo not in profile.combos:
        return f"not in the {profile.name!r} profile (BENCH_PROFILE / BENCH_* filters)"
    missing = missing_packages(combo[0])
    if missing:
        return f"{combo[0]}: package(s) {missing} not installed"
    return None


def variant_skip_reason(variant: str, profile: Profile | None = None) -> str | None:
    """Why a per-variant benchmark (the import baseline) is skipped: not in the profile, or not installed."""
    if variant not in VARIANT_TABLE:
        return f"unknown variant {variant!r}"
    profile = active_profile() if profile is None else profile
    if not any(c[0] == variant for c in profile.combos):
        return f"{variant} is not in the {profile.name!r} profile"
    missing = missing_packages(variant)
    if missing:
        return f"{variant}: package(s) {missing} not installed"
    return None


def spec_skip_reason(profile: Profile | None = None, **fixed: str) -> str | None:
    """Why a spec-only benchmark is skipped: no profile combination has these values (e.g. workload, dtype)."""
    profile = active_profile() if profile is None else profile
    index = {name: PARAM_NAMES.index(name) for name in fixed}
    if any(all(c[index[k]] == v for k, v in fixed.items()) for c in profile.combos):
        return None
    return f"no combination of the {profile.name!r} profile has {fixed}"



def group_of(combo: Combo, profile: Profile) -> list[Combo]:
    """The profile's combinations measured in one process with ``combo``: same workload, mode, dtype and family,
    in the grid's variant order."""
    variant, workload, mode, dtype = combo
    fam = family(variant)
    members = {c for c in profile.combos if c[1:] == (workload, mode, dtype) and family(c[0]) == fam} | {combo}
    return sorted(members, key=lambda c: VARIANTS.index(c[0]))



def asv_regexes(profile: Profile, only: str | None = None) -> list[str]:
    """``asv run -b`` regular expressions selecting exactly the profile's combinations.

    asv matches each regex against ``name(param0, param1, ...)`` of every parameter combination, so
    unselected combinations are not even started. One alternation per (workload, mode, dtype); benchmarks
    with other parameter lists (import baselines, spec-derived values) get their own expressions.
    ``only``: a regex the benchmark name must also match (e.g. ``TimeStep``), as a lookahead.
    """
    import re

    groups: dict[tuple[str, str, str], list[str]] = {}
    for v, w, m, d in sorted(profile.combos):
        groups.setdefault((w, m, d), []).append(v)
    out = []
    for (w, m, d), variants in sorted(groups.items()):
        alt = "|".join(re.escape(v) for v in sorted(variants))
        out.append(rf"\('({alt})', '{re.escape(w)}', '{re.escape(m)}', '{re.escape(d)}'\)$")
    variants = sorted({c[0] for c in profile.combos})
    if variants:
        out.append(r"\.peakmem_import\('(" + "|".join(re.escape(v) for v in variants) + r")'\)$")
    pairs = sorted({(c[1], c[3]) for c in profile.combos})
    if pairs:
        out.append(
            r"\.track_predicted_activation_bytes\(("
            + "|".join(f"'{re.escape(w)}', '{re.escape(d)}'" for w, d in pairs)
            + r")\)$"
        )
    modes = sorted({(c[1], c[2]) for c in profile.combos})
    if modes:
        out.append(
            r"\.track_spec_gflop\(("
            + "|".join(f"'{re.escape(w)}', '{re.escape(m)}'" for w, m in modes)
            + r")\)$"
        )
    if only:
        out = [f"^(?=.*(?:{only})).*{r}" for r in out]
    if profile.skip_benchmarks:
        skipped = "|".join(re.escape(f".{name}.") for name in profile.skip_benchmarks)
        out = [f"^(?!.*(?:{skipped}))" + (r[1:] if r.startswith("^") else ".*" + r) for r in out]
    return out

