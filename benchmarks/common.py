"""Framework-free core of the asv suite: the parameter grid, profiles, device choice, verification, measuring.

Every benchmark class of :mod:`benchmarks.bench_convlstm` takes the same fixed grid, whatever is installed::

    params = [VARIANTS, WORKLOADS, MODES, DTYPES];  param_names = ["variant", "workload", "mode", "dtype"]

A combination that the active profile does not select, that the variant cannot run (e.g. a peer in
bfloat16), or whose framework is missing raises ``NotImplementedError`` in ``setup``: asv shows it as
skipped (n/a). The profile comes from the environment variable ``BENCH_PROFILE`` (``quick``, the default, or
``full``), optionally narrowed by ``BENCH_VARIANTS``, ``BENCH_WORKLOADS``, ``BENCH_MODES`` and ``BENCH_DTYPES``
(comma-separated lists); ``BENCH_TIMING`` borrows another profile's sampling budget. ``BENCH_DEVICE``
(``cpu`` or ``gpu``) overrides the device choice.

A benchmark never times a wrong model: :func:`prepare_case` builds the variant through its adapter
(:mod:`benchmarks.adapters`), makes the first call on the benchmark input (timed: that is the first-call /
compile time), checks the outputs against the float64 reference (:func:`implementations.reference.forward`)
on a reduced input (batch 1, the first ``VERIFY_STEPS`` steps: outputs at step t depend on steps <= t only,
and batch elements are independent, so the slice of the full run must equal the reference on the slice),
checks that the training loss is the MSE of those outputs, and warms up. Only then is anything timed.

Side file ``reports/asv/environment.json`` (``$BENCH_ENV_FILE`` overrides the path). Written atomically
(temporary file + rename, under a lock) by every benchmark process that prepared a case and by
:mod:`benchmarks.run_profile`. Schema (version 1)::

    {
      "schema": "convlstm-bench/asv-environment", "schema_version": 1,
      "updated_at": "<ISO 8601 UTC>",
      "host": {"hostname", "platform", "python", "cpu", "cpu_count", "memory_bytes"},
      "run": {"profile", "commit", "machine", "started_at", "finished_at", "wall_seconds",
              "asv_command", "returncode"},                      # written by run_profile only
      "variants": {"<variant>": {"framework", "role", "description", "versions": {package: version},
                                 "device", "device_kind", "device_name", "options": {...},
                                 "updated_at"}},
      "cases": {"<variant>/<workload>/<mode>/<dtype>": {
                 "variant", "workload", "mode", "dtype", "device", "device_name",
                 "input_shape", "verify": {"max_abs_err", "atol", "batch", "steps",
                                           "loss", "loss_expected", "loss_rel_err"},
                 "first_call_seconds", "updated_at"}}
    }

``device`` is the framework's id (``cpu``, ``cuda:0``, ``gpu:0``); ``device_kind`` ``cpu`` or ``gpu``;
``device_name`` a human name (CPU model from /proc/cpuinfo, or the GPU's name).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib
import importlib.util
import json
import math
import os
import platform
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from implementations import reference
from implementations.fileio import atomic_open, write_json_atomic  # noqa: F401 - write_json_atomic re-exported
from implementations.weights import Weights, init_weights
from implementations.workloads import WORKLOADS as _WORKLOADS
from implementations.workloads import Workload, get_workload  # noqa: F401 - the suite's registry, re-exported

from . import contention, paired, threads

# ---------------------------------------------------------------------------------------------
# The grid
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

#: Training: MSE against a fixed target, plain SGD with this learning rate.
LEARNING_RATE = 1e-2
#: Verification input: batch elements and leading time steps of the workload input.
VERIFY_BATCH = 1
VERIFY_STEPS = 3
#: Max abs error of the outputs (bounded activations, |h| <= 1) against the float64 reference, per dtype.
#: float32: rounding through convolutions of up to k*k*(C+F) = 3600 terms (moving_mnist); a wrong gate order
#: or padding gives errors of order 0.1-1. Half types: their own rounding (eps 2^-8 / 2^-11) dominates.
VERIFY_ATOL = {"float32": 1e-4, "bfloat16": 1e-1, "float16": 2e-2}
#: Relative error allowed between the training loss a framework reports and the MSE of its outputs
#: (float32 sums of up to ~1e6 squares: XLA's CPU reduction was seen 2.5e-4 off; a wrong loss is off by far more).
LOSS_RTOL = {"float32": 2e-3, "bfloat16": 5e-2, "float16": 1e-2}
SEED = 0


class VerificationError(AssertionError):
    """A model's outputs or loss differ from the reference: the benchmark refuses to time it."""


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
        warmup_seconds=0.3, peak_seconds=0.3, rounds=8, block_seconds=0.25,
        skip_benchmarks=("PeakMemory", "ImportBaseline"),
    ),
    "full": Profile(
        "full", _full_combos(), min_samples=10, max_samples=1000, max_time=10.0, timeout=3600.0,
        warmup_seconds=1.0, peak_seconds=1.0, rounds=12, block_seconds=0.5,
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


def variant_list(text: str, parser: argparse.ArgumentParser) -> list[str]:
    """A comma-separated variant list from a command line; ``parser.error`` (exit 2) names any unknown variant."""
    variants = [v.strip() for v in text.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; expected some of {list(VARIANTS)}")
    return variants


def family(variant: str) -> tuple[str, tuple[str, ...]]:
    """Variants of one family can share a process: the same adapter and the same packages (for Keras: the same
    backend, which is process-wide). The paired rounds compare the variants of one family."""
    row = VARIANT_TABLE[variant]
    return row.adapter, row.packages


def group_of(combo: Combo, profile: Profile) -> list[Combo]:
    """The profile's combinations measured in one process with ``combo``: same workload, mode, dtype and family,
    in the grid's variant order."""
    variant, workload, mode, dtype = combo
    fam = family(variant)
    members = {c for c in profile.combos if c[1:] == (workload, mode, dtype) and family(c[0]) == fam} | {combo}
    return sorted(members, key=lambda c: VARIANTS.index(c[0]))


ITEMSIZE = {"float32": 4, "bfloat16": 2, "float16": 2}


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


# ---------------------------------------------------------------------------------------------
# Devices
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DeviceCandidate:
    """A device a framework offers: ``kind`` cpu|gpu, the framework's ``id``, a human ``name``, a ``handle``."""

    kind: str
    id: str
    name: str
    handle: Any = None


def choose_device(candidates: Sequence[DeviceCandidate], override: str | None = None) -> DeviceCandidate:
    """The device a benchmark runs on: the first GPU the framework offers, else its first CPU.

    ``override`` (``$BENCH_DEVICE``): ``"cpu"`` forces the CPU, ``"gpu"`` requires a GPU (NotImplementedError
    without one, so the combination is skipped rather than silently run on the CPU).
    """
    override = (override or "").strip().lower() or None
    if override not in (None, "cpu", "gpu", "cuda"):
        raise ValueError(f"BENCH_DEVICE={override!r}: expected 'cpu' or 'gpu'")
    gpus = [c for c in candidates if c.kind == "gpu"]
    cpus = [c for c in candidates if c.kind == "cpu"]
    if override == "cpu":
        if not cpus:
            raise NotImplementedError("BENCH_DEVICE=cpu but the framework offers no CPU device")
        return cpus[0]
    if override in ("gpu", "cuda"):
        if not gpus:
            raise NotImplementedError("BENCH_DEVICE=gpu but the framework sees no GPU")
        return gpus[0]
    if gpus:
        return gpus[0]
    if cpus:
        return cpus[0]
    raise NotImplementedError("the framework offers no device")


def device_override() -> str | None:
    return os.environ.get("BENCH_DEVICE") or None


def cpu_name() -> str:
    """The CPU model (from /proc/cpuinfo on Linux), else ``platform.processor()``."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "cpu"


# ---------------------------------------------------------------------------------------------
# The adapters' surface
# ---------------------------------------------------------------------------------------------


class Model:
    """What every adapter's ``build(workload, variant, dtype, weights, x, target)`` returns.

    The input batch and the training target live on the device already, in the framework's layout.
    ``forward()`` / ``train_step()`` start one inference pass / one training step (forward, MSE against the
    target, backward, SGD update) and keep its results; ``sync()`` waits until they are computed
    (torch.cuda.synchronize, block_until_ready, or a host copy for TensorFlow). ``outputs()`` is the last
    output sequence as NumPy (B, T, *S', F) channels-last; ``loss()`` the last training loss.
    """

    variant: str = "?"
    framework: str = "?"
    device: str = "cpu"
    device_kind: str = "cpu"
    device_name: str = "cpu"
    #: True when train_step() also yields the outputs of its forward pass (pre-update weights).
    train_returns_outputs: bool = True

    def prepare(self, mode: str) -> None:
        """Untimed set-up before the first call of ``mode`` (e.g. creating the optimizer for ``train``)."""

    def forward(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def train_step(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def sync(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def outputs(self) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def loss(self) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def device_peak_bytes(self) -> int | None:
        """Peak bytes of the framework's device allocator in this process; None on the CPU."""
        return None

    def live_train_bytes(self) -> tuple[int, str]:
        """Live tensor memory of one training step, in bytes, and how it was measured (``benchmarks.live_memory``).

        Call after a warm-up step. NotImplementedError where the framework exposes no such figure on the device.
        """
        raise NotImplementedError(f"{self.variant}: no live-tensor memory figure for this framework")

    def first_weight(self) -> np.ndarray:  # pragma: no cover - abstract
        """A host copy of one trainable weight array (to check that training updates the weights)."""
        raise NotImplementedError

    def peak_gflops(self) -> dict[str, float]:  # pragma: no cover - abstract
        """``{"matmul": GFLOP/s, "conv": GFLOP/s}`` of the framework's own kernels, same device and dtype."""
        raise NotImplementedError

    def versions(self) -> dict[str, str]:
        return {}

    def options(self) -> dict[str, Any]:
        return {}


def get_adapter(variant: str) -> Any:
    """The adapter module of ``variant`` (imports the adapter, which imports no framework at import)."""
    return importlib.import_module(f"{__package__}.adapters.{VARIANT_TABLE[variant].adapter}")


# ---------------------------------------------------------------------------------------------
# Probe sizes for the peak measurements
# ---------------------------------------------------------------------------------------------


def matmul_size(device_kind: str) -> int:
    """Side n of the square matmul probe (2 n^3 FLOPs): big enough to saturate the device, short on a CPU."""
    return 8192 if device_kind == "gpu" else 1024


@dataclasses.dataclass(frozen=True)
class ConvProbe:
    """The bare gate convolution of one layer: (N, *S', C_in + F) -> (N, *S', 4F), kernel k, stride 1, 'same'."""

    batch: int
    spatial: tuple[int, ...]
    in_channels: int
    out_channels: int
    kernel: tuple[int, ...]

    @property
    def flops(self) -> int:
        return 2 * self.batch * math.prod(self.spatial) * math.prod(self.kernel) * self.in_channels * self.out_channels


def conv_probe(workload: Workload, device_kind: str) -> ConvProbe:
    """The gate-sized convolution of the workload's costliest layer, batch capped to keep one call short.

    Uncapped the batch is B*T (the workload's own); on a CPU it is cut to ~4 GFLOP per call (on a GPU
    ~500 GFLOP), which does not change the achievable rate of the kernel.
    """
    spec = workload.spec
    states = spec.state_spatials(workload.input_shape[2:-1])
    best = None
    for i, (layer, spatial) in enumerate(zip(spec.layers, states)):
        probe = ConvProbe(
            workload.batch * workload.steps,
            tuple(spatial),
            spec.layer_input_channels(i) + layer.filters,
            4 * layer.filters,
            tuple(layer.kernel_size),
        )
        if best is None or probe.flops > best.flops:
            best = probe
    assert best is not None
    target = 5e11 if device_kind == "gpu" else 4e9
    per_image = best.flops / best.batch
    batch = max(1, min(best.batch, int(target // per_image)))
    return dataclasses.replace(best, batch=batch)


def best_rate(
    run: Callable[[], None], flops: float, *, min_calls: int = 3, seconds: float | None = None
) -> float:
    """GFLOP/s of the fastest synced call of ``run``: a warm-up of ``seconds`` (default: the active profile's
    ``peak_seconds``), then at least ``min_calls`` calls and more until ``seconds`` (at most 1000): on a shared
    machine the best call is the one least disturbed by other processes."""
    budget = active_profile().peak_seconds if seconds is None else seconds
    start = time.perf_counter()
    calls = 0
    while calls < 2 or (time.perf_counter() - start < budget and calls < 1000):
        run()
        calls += 1
    best = math.inf
    start = time.perf_counter()
    for i in range(1000):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
        if i + 1 >= min_calls and time.perf_counter() - start > budget:
            break
    return flops / best / 1e9


# ---------------------------------------------------------------------------------------------
# Cases: build, first call, verify, warm up
# ---------------------------------------------------------------------------------------------


def case_weights(workload: Workload) -> Weights:
    """Seeded float32 initial weights (Keras' defaults) of the workload: the same for every variant."""
    return init_weights(workload.spec, seed=SEED, dtype=np.float32)


def case_data(workload: Workload) -> tuple[np.ndarray, np.ndarray]:
    """Input frames (B, T, *S, C) and the fixed training target (B, T, *S', F), float32 channels-last."""
    x = workload.make_input(seed=SEED, dtype="float32")
    target = np.random.default_rng(SEED + 1).uniform(-0.5, 0.5, workload.spec.output_shape(x.shape))
    return x, target.astype(np.float32)


@dataclasses.dataclass
class Case:
    """A built, verified, warmed-up model of one combination, ready to be timed."""

    combo: Combo
    workload: Workload
    model: Model
    first_call_seconds: float
    verify: dict[str, Any]

    @property
    def variant(self) -> str:
        return self.combo[0]

    @property
    def mode(self) -> str:
        return self.combo[2]

    @property
    def dtype(self) -> str:
        return self.combo[3]

    def run(self) -> None:
        """One step of the case's mode (inference pass or training step), synchronised."""
        if self.mode == "forward":
            self.model.forward()
        else:
            self.model.train_step()
        self.model.sync()


def first_call(model: Model, mode: str) -> tuple[float, np.ndarray, float | None]:
    """Time the very first call on the benchmark input; return (seconds, outputs to verify, first loss)."""
    if mode == "forward":
        t0 = time.perf_counter()
        model.forward()
        model.sync()
        return time.perf_counter() - t0, model.outputs(), None
    if model.train_returns_outputs:
        t0 = time.perf_counter()
        model.train_step()
        model.sync()
        seconds = time.perf_counter() - t0
        return seconds, model.outputs(), model.loss()
    # The outputs come from a separate inference call made *before* the first update.
    model.forward()
    model.sync()
    outputs = model.outputs()
    t0 = time.perf_counter()
    model.train_step()
    model.sync()
    return time.perf_counter() - t0, outputs, model.loss()


def reference_outputs(weights: Weights, x: np.ndarray, cache_dir: Path | None = None) -> np.ndarray:
    """``reference.forward(weights, x).outputs``, cached on disk by content.

    The key hashes the weights (spec and arrays), the input and the reference module's source, so a cached
    array is only ever reused for the very same computation (radar: 0.8 s saved per benchmark process,
    moving_mnist: 7 s). The cache lives beside the environment file (reports/asv/reference-cache/).
    """
    import hashlib
    import inspect

    digest = hashlib.sha256()
    digest.update(inspect.getsource(reference).encode())
    digest.update(json.dumps(weights.spec.to_meta(), sort_keys=True).encode())
    for key in sorted(weights.arrays):
        arr = np.ascontiguousarray(weights.arrays[key])
        digest.update(f"{key}:{arr.dtype.str}:{arr.shape}".encode())
        digest.update(arr.tobytes())
    xc = np.ascontiguousarray(x)
    digest.update(f"x:{xc.dtype.str}:{xc.shape}".encode())
    digest.update(xc.tobytes())
    folder = environment_file().parent / "reference-cache" if cache_dir is None else Path(cache_dir)
    path = folder / f"{digest.hexdigest()[:32]}.npy"
    with contextlib.suppress(OSError, ValueError):
        cached = np.load(path, allow_pickle=False)
        if cached.shape == weights.spec.output_shape(x.shape):
            return cached
    out = reference.forward(weights, x).outputs
    with contextlib.suppress(OSError):
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_open(path, "wb") as fh:
            np.save(fh, out, allow_pickle=False)
    return out


def verify_case(
    weights: Weights, x: np.ndarray, target: np.ndarray, outputs: np.ndarray, loss: float | None, dtype: str
) -> dict[str, Any]:
    """Check a model's outputs on the benchmark input (and its first training loss) against the reference.

    Raises :class:`VerificationError` when they differ; returns the errors found.
    """
    want_shape = weights.spec.output_shape(x.shape)
    if tuple(outputs.shape) != tuple(want_shape):
        raise VerificationError(f"outputs have shape {outputs.shape}, the spec says {want_shape}")
    b, t = min(VERIFY_BATCH, x.shape[0]), min(VERIFY_STEPS, x.shape[1])
    expected = reference_outputs(weights, x[:b, :t])
    got = np.asarray(outputs[:b, :t], dtype=np.float64)
    atol = VERIFY_ATOL[dtype]
    err = float(np.max(np.abs(got - expected))) if np.all(np.isfinite(got)) else math.inf
    info: dict[str, Any] = {"max_abs_err": err, "atol": atol, "batch": b, "steps": t}
    if not err <= atol:
        raise VerificationError(
            f"outputs differ from the float64 reference by {err:.3g} (> {atol:g}) on batch {b}, steps {t}: "
            "the model is wrong, it is not timed"
        )
    if loss is not None:
        expected_loss = float(np.mean((np.asarray(outputs, np.float64) - target) ** 2))
        rel = abs(loss - expected_loss) / max(abs(expected_loss), 1e-12)
        info.update(loss=float(loss), loss_expected=expected_loss, loss_rel_err=rel)
        if not rel <= LOSS_RTOL[dtype]:
            raise VerificationError(
                f"the training step reports loss {loss:.6g}, the MSE of its outputs is {expected_loss:.6g} "
                f"(relative error {rel:.3g} > {LOSS_RTOL[dtype]:g})"
            )
    return info


def prepare_case(
    variant: str,
    workload: str,
    mode: str,
    dtype: str,
    *,
    profile: Profile | None = None,
    warmup_calls: int = 1,
    warmup_seconds: float | None = None,
    record: bool = True,
) -> Case:
    """Build, first-call (timed), verify and warm up one combination; NotImplementedError when skipped.

    ``record``: write the variant's versions/device and the verification into the environment file.
    ``warmup_seconds``: default the profile's. A framework that is installed but fails to import (ImportError
    while building) is a skip too.
    """
    combo: Combo = (variant, workload, mode, dtype)
    profile = active_profile() if profile is None else profile
    reason = skip_reason(combo, profile)
    if reason:
        raise NotImplementedError(reason)
    threads.require_applied()
    warmup_seconds = profile.warmup_seconds if warmup_seconds is None else warmup_seconds
    wl = _WORKLOADS[workload]
    weights = case_weights(wl)
    x, target = case_data(wl)
    try:
        model = get_adapter(variant).build(wl, variant, dtype, weights, x, target)
    except ImportError as exc:  # installed but broken (e.g. a missing CUDA library): skipped, like not installed
        raise NotImplementedError(f"{variant}: framework import failed: {exc}") from exc
    model.prepare(mode)
    before = model.first_weight() if mode == "train" else None
    first, outputs, first_loss = first_call(model, mode)
    info = verify_case(weights, x, target, outputs, first_loss, dtype)
    # Warm up by count and by time: thread pools (OpenMP/oneDNN, Eigen) take a few hundred ms to settle.
    start, calls = time.perf_counter(), 0
    while calls < warmup_calls or (calls and time.perf_counter() - start < warmup_seconds and calls < 1000):
        if mode == "forward":
            model.forward()
        else:
            model.train_step()
        model.sync()
        calls += 1
    if mode == "train":
        # One SGD step on a mean over ~1e6 outputs may move the loss by less than float32 resolves: check
        # that the weights moved, and that the loss did not grow beyond rounding.
        # (float32 only: in a half type lr * grad can round away entirely.)
        if dtype == "float32" and np.array_equal(before, model.first_weight()):
            raise VerificationError("the training step left the weights unchanged: the optimizer update is missing")
        if calls > 0:
            later = model.loss()
            if not later <= first_loss * (1 + LOSS_RTOL[dtype]):  # type: ignore[operator]
                raise VerificationError(
                    f"training increases the loss on a fixed batch ({first_loss:.6g} -> {later:.6g})"
                )
            info["loss_after_warmup"] = later
    case = Case(combo, wl, model, first, info)
    if record:
        with contextlib.suppress(OSError):
            record_case(case)
    return case


_CASES: dict[Combo, Case | BaseException] = {}


def get_case(combo: Combo, **options: Any) -> Case:
    """:func:`prepare_case`, once per process: asv calls ``setup`` again before every timing sample.

    A failure (skip included) is remembered too and raised again, so it is not retried per sample.
    """
    combo = tuple(combo)  # type: ignore[assignment]
    if combo not in _CASES:
        try:
            _CASES[combo] = prepare_case(*combo, **options)
        except BaseException as exc:
            _CASES[combo] = exc
            raise
    found = _CASES[combo]
    if isinstance(found, BaseException):
        raise found
    return found


def sample_seconds(run: Callable[[], None], profile: Profile) -> list[float]:
    """Wall-clock seconds of repeated synced calls: at least ``min_samples``, then until ``max_time``."""
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < profile.max_samples:
        t0 = time.perf_counter()
        run()
        samples.append(time.perf_counter() - t0)
        if len(samples) >= profile.min_samples and time.perf_counter() - start >= profile.max_time:
            break
    return samples


def minor_page_faults() -> int | None:
    """Minor page faults of this process so far (``getrusage``), or None where the platform has no count."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)


def measure_case(case: Case, profile: Profile | None = None) -> dict[str, Any]:
    """Every derived metric of a prepared case, all measured in this one process.

    Steady-state step time (median of :func:`sample_seconds`), throughput, achieved GFLOP/s from
    :meth:`StackSpec.flops`, the framework's own matmul/conv peaks on the same device and dtype, the
    fractions of those peaks, the device allocator's peak bytes (None on a CPU), and the minor page faults per
    timed step (first touches of memory the C allocator got from, or gave back to, the kernel; None where the
    platform does not count them).
    """
    profile = active_profile() if profile is None else profile
    faults0 = minor_page_faults()
    samples = sample_seconds(case.run, profile)
    faults1 = minor_page_faults()
    median = float(np.median(samples))
    b, t = case.workload.batch, case.workload.steps
    flops = case.workload.spec.flops(case.workload.input_shape, case.mode)
    achieved = flops / median / 1e9
    peaks = case.model.peak_gflops()
    return {
        "combo": list(case.combo),
        "first_call_seconds": case.first_call_seconds,
        "step_seconds": median,
        "step_samples": samples,
        "sequences_per_second": b / median,
        "frames_per_second": b * t / median,
        "flops_per_step": flops,
        "achieved_gflops": achieved,
        "peak_matmul_gflops": peaks["matmul"],
        "peak_conv_gflops": peaks["conv"],
        "fraction_of_matmul_peak": achieved / peaks["matmul"],
        "fraction_of_conv_peak": achieved / peaks["conv"],
        "device_peak_bytes": case.model.device_peak_bytes(),
        "minor_faults_per_step": None if faults0 is None or faults1 is None else (faults1 - faults0) / len(samples),
        "device": case.model.device,
        "device_name": case.model.device_name,
        "verify": case.verify,
    }


def measure_group(combos: Sequence[Combo], profile: Profile | None = None) -> dict[Combo, dict[str, Any]]:
    """Prepare the combinations of one family (:func:`group_of`) in this process and time them in paired,
    interleaved rounds (:mod:`benchmarks.paired`); return per combination ``{"ok": metrics}``, ``{"skip": why}``
    or ``{"error": what}``.

    The metrics are those of :func:`measure_case`, with the step time = median over the variant's clean rounds,
    plus ``paired``: the rounds, the contaminated ones and why, and for each of ours the comparison with every
    peer of the group and with the fastest one (``vs_best_peer``: ratio, 95 % interval, verdict). The group's
    comparison is also stored in the environment file (``comparisons``)."""
    profile = active_profile() if profile is None else profile
    out: dict[Combo, dict[str, Any]] = {}
    cases: dict[str, Case] = {}
    for combo in combos:
        try:
            cases[combo[0]] = prepare_case(*combo, profile=profile)
        except NotImplementedError as exc:
            out[combo] = {"skip": str(exc)}
        except Exception as exc:  # noqa: BLE001 - one failing variant must not hide the others' numbers
            out[combo] = {"error": f"{type(exc).__name__}: {exc}"}
    if not cases:
        return out
    blocks = paired.interleaved_rounds({v: c.run for v, c in cases.items()}, profile.rounds, profile.block_seconds,
                                       counter=minor_page_faults)
    summaries = {v: paired.summarize(blocks[v]) for v in cases}
    roles = {v: VARIANT_TABLE[v].role for v in cases}
    peers = [v for v in cases if roles[v] == "peer"]
    best = paired.best_peer(summaries, peers)
    comparisons = {}
    for v in cases:
        if roles[v] in ("ours", "ours-extra") and peers:
            comparisons[v] = {"vs_best_peer": paired.compare(blocks, v, best),
                              "vs_peers": {p: paired.compare(blocks, v, p) for p in peers}}
    for v, case in cases.items():
        m = _metrics(case, summaries[v], blocks[v])
        m["paired"] = {**summaries[v], "group": sorted(cases), "best_peer": best, **comparisons.get(v, {})}
        out[case.combo] = {"ok": m}
    with contextlib.suppress(OSError):
        record_comparison(next(iter(cases.values())).combo, summaries, comparisons, best, profile)
    return out


def _metrics(case: Case, summary: dict[str, Any], blocks: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """:func:`measure_case`'s dictionary from a variant's paired rounds."""
    median = summary["step_seconds"]
    samples = [t for b in blocks for t in b["seconds"]]
    faults = [b.get("faults") for b in blocks]
    b, t = case.workload.batch, case.workload.steps
    flops = case.workload.spec.flops(case.workload.input_shape, case.mode)
    achieved = flops / median / 1e9
    peaks = case.model.peak_gflops()
    return {
        "combo": list(case.combo),
        "first_call_seconds": case.first_call_seconds,
        "step_seconds": median,
        "step_samples": samples,
        "sequences_per_second": b / median,
        "frames_per_second": b * t / median,
        "flops_per_step": flops,
        "achieved_gflops": achieved,
        "peak_matmul_gflops": peaks["matmul"],
        "peak_conv_gflops": peaks["conv"],
        "fraction_of_matmul_peak": achieved / peaks["matmul"],
        "fraction_of_conv_peak": achieved / peaks["conv"],
        "device_peak_bytes": case.model.device_peak_bytes(),
        "minor_faults_per_step": None if None in faults else sum(faults) / max(1, len(samples)),
        "device": case.model.device,
        "device_name": case.model.device_name,
        "verify": case.verify,
    }


# ---------------------------------------------------------------------------------------------
# Per-run measurement cache (shared by the track_ benchmarks of one asv run)
# ---------------------------------------------------------------------------------------------


def metrics_path(cache_dir: str | os.PathLike, combo: Combo, kind: str = "metrics") -> Path:
    """Where :func:`cached_metrics` stores ``kind``'s measurements of ``combo`` in an asv run's directory."""
    return Path(cache_dir) / (kind + "__" + "__".join(combo) + ".json")


def cached_metrics(
    cache_dir: str | os.PathLike,
    combo: Combo,
    *,
    measure: Callable[[], dict[str, Any]] | None = None,
    kind: str = "metrics",
) -> dict[str, Any]:
    """The metrics of ``combo`` in this asv run: read from ``cache_dir``, else measured now and stored.

    The first track_ benchmark of a combination pays for preparing and measuring it (in its own fresh
    process, in ``setup``); the others of the same run read the stored result, so every number of one
    combination comes from one process (achieved rate and peaks included). A skip or an error is stored
    too, so it is not retried by every benchmark method. ``kind`` names a different set of measurements of the
    same combination (e.g. ``train_rss``), stored in its own file; ``measure`` then says how to take them.
    """
    path = metrics_path(cache_dir, combo, kind)
    if not path.is_file() and measure is None:
        # the whole family of the combination, paired in this process; every member's file is written
        for member, data in measure_group(group_of(combo, active_profile())).items():
            with contextlib.suppress(OSError):
                write_json_atomic(metrics_path(cache_dir, member, kind), data)
    if path.is_file():
        data = json.loads(path.read_text())
    else:
        if measure is None:

            def measure() -> dict[str, Any]:
                return measure_case(prepare_case(*combo))

        try:
            data = {"ok": measure()}
        except NotImplementedError as exc:
            data = {"skip": str(exc)}
        except Exception as exc:  # noqa: BLE001 - stored, then raised again below
            data = {"error": f"{type(exc).__name__}: {exc}"}
        with contextlib.suppress(OSError):
            write_json_atomic(path, data)
    if "skip" in data:
        raise NotImplementedError(data["skip"])
    if "error" in data:
        raise RuntimeError(f"measuring {combo} failed: {data['error']}")
    return data["ok"]


# ---------------------------------------------------------------------------------------------
# The environment file
# ---------------------------------------------------------------------------------------------

ENV_SCHEMA = "convlstm-bench/asv-environment"
ENV_SCHEMA_VERSION = 1


def repo_root() -> Path:
    """The directory of asv.conf.json: ``$ASV_CONF_DIR`` under asv, else the parent of this package."""
    conf_dir = os.environ.get("ASV_CONF_DIR")
    if conf_dir and (Path(conf_dir) / "asv.conf.json").is_file():
        return Path(conf_dir)
    return Path(__file__).resolve().parent.parent


def environment_file() -> Path:
    override = os.environ.get("BENCH_ENV_FILE")
    return Path(override) if override else repo_root() / "reports" / "asv" / "environment.json"


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def host_info() -> dict[str, Any]:
    memory = None
    with contextlib.suppress(OSError, ValueError, AttributeError):
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "memory_bytes": memory,
    }


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(path.name + ".lock")
    with open(lock, "a") as fh:
        try:
            import fcntl

            fcntl.flock(fh, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - not POSIX
            pass
        yield


def update_environment_file(update: Callable[[dict[str, Any]], None], path: Path | None = None) -> Path:
    """Read-modify-write the environment file under a lock, atomically replaced."""
    path = environment_file() if path is None else path
    with _locked(path):
        data: dict[str, Any] = {}
        if path.is_file():
            with contextlib.suppress(ValueError, OSError):
                data = json.loads(path.read_text())
        if data.get("schema") != ENV_SCHEMA or data.get("schema_version") != ENV_SCHEMA_VERSION:
            data = {}
        data.setdefault("schema", ENV_SCHEMA)
        data.setdefault("schema_version", ENV_SCHEMA_VERSION)
        data.setdefault("variants", {})
        data.setdefault("cases", {})
        data["host"] = host_info()
        update(data)
        data["updated_at"] = utc_now()
        return write_json_atomic(path, data)


def comparison_key(variants: Sequence[str], combo: Combo) -> str:
    """``<variant>+<variant>.../<workload>/<mode>/<dtype>``: the key of a group's paired comparison in the
    environment file."""
    return "/".join(("+".join(variants), *combo[1:]))


def record_comparison(
    combo: Combo,
    summaries: Mapping[str, dict[str, Any]],
    comparisons: Mapping[str, dict[str, Any]],
    best_peer: str | None,
    profile: Profile,
    path: Path | None = None,
) -> Path:
    """Store a family's paired rounds (per variant) and verdicts (per one of ours) in the environment file."""
    now = utc_now()

    def update(data: dict[str, Any]) -> None:
        data.setdefault("comparisons", {})[comparison_key(list(summaries), combo)] = {
            "workload": combo[1], "mode": combo[2], "dtype": combo[3],
            "rounds": profile.rounds, "block_seconds": profile.block_seconds,
            "thresholds": {"max_steal": contention.MAX_STEAL, "max_others_cores": contention.MAX_OTHERS_CORES},
            "variants": dict(summaries), "best_peer": best_peer, "ours": dict(comparisons),
            "threads": threads.settings(), "updated_at": now,
        }

    return update_environment_file(update, path)


def record_timestep_usage(combo: Combo, usage: dict[str, Any], samples: int, path: Path | None = None) -> Path:
    """Store how busy the machine was during asv's TimeStep sampling of ``combo`` (one reading for the whole
    sampling: single steps are shorter than the 10 ms clock tick of /proc)."""

    def update(data: dict[str, Any]) -> None:
        case = data["cases"].setdefault("/".join(combo), {})
        case["timestep_usage"] = {**usage, "samples": samples, "updated_at": utc_now()}

    return update_environment_file(update, path)


def record_case(case: Case, path: Path | None = None) -> Path:
    """Store the variant's versions/device/options and the case's verification in the environment file."""
    model = case.model
    variant = VARIANT_TABLE[case.variant]
    now = utc_now()

    def update(data: dict[str, Any]) -> None:
        data["variants"][case.variant] = {
            "framework": model.framework,
            "role": variant.role,
            "description": variant.description,
            "versions": model.versions(),
            "device": model.device,
            "device_kind": model.device_kind,
            "device_name": model.device_name,
            "options": model.options(),
            "threads": threads.settings(),
            "updated_at": now,
        }
        kept = {k: v for k, v in data["cases"].get("/".join(case.combo), {}).items() if k == "timestep_usage"}
        data["cases"]["/".join(case.combo)] = kept | {
            "variant": case.combo[0],
            "workload": case.combo[1],
            "mode": case.combo[2],
            "dtype": case.combo[3],
            "device": model.device,
            "device_name": model.device_name,
            "input_shape": list(case.workload.input_shape),
            "verify": case.verify,
            "first_call_seconds": case.first_call_seconds,
            "updated_at": now,
        }

    return update_environment_file(update, path)
