"""Cases: one combination built, first-called, verified and warmed up, ready to be timed. Imports no framework.

A benchmark never times a wrong model: :func:`prepare_case` builds the variant through its adapter
(:mod:`benchmarks.adapters`), makes the first call on the benchmark input (timed: that is the first-call /
compile time), checks the outputs against the float64 reference (:func:`implementations.reference.forward`)
on a reduced input (batch 1, the first ``VERIFY_STEPS`` steps: outputs at step t depend on steps <= t only,
and batch elements are independent, so the slice of the full run must equal the reference on the slice),
checks that the training loss is the MSE of those outputs, and warms up. Only then is anything timed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from implementations import reference
from implementations.fileio import atomic_open
from implementations.weights import Weights, init_weights
from implementations.workloads import WORKLOADS as _WORKLOADS
from implementations.workloads import Workload

from . import threads
from .environment import environment_file, record_case
from .grid import Combo, Profile, active_profile, skip_reason
from .model import Model, get_adapter

#: Verification input: batch elements and leading time steps of the workload input.
VERIFY_BATCH = 1
VERIFY_STEPS = 3
#: Max abs error of the outputs (bounded activations, |h| <= 1) against the float64 reference, per dtype.
#: float32: rounding through convolutions of up to k*k*(C+F) terms (thousands on the largest workload); a wrong
#: gate order or padding gives errors of order 0.1-1. Half types: their own rounding (eps 2^-8 / 2^-11) dominates.
VERIFY_ATOL = {"float32": 1e-4, "bfloat16": 1e-1, "float16": 2e-2}
#: Relative error allowed between the training loss a framework reports and the MSE of its outputs
#: (float32 sums of up to ~1e6 squares, reduced in an order of each framework's choosing; a wrong loss is off by
#: far more).
LOSS_RTOL = {"float32": 2e-3, "bfloat16": 5e-2, "float16": 1e-2}
SEED = 0


class VerificationError(AssertionError):
    """A model's outputs or loss differ from the reference: the benchmark refuses to time it."""


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
    array is only ever reused for the very same computation; it spares every benchmark process of a run the
    float64 reference, which is slow on the larger workloads. The cache lives beside the environment file
    (reports/asv/reference-cache/).
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
    # Warm up by count and by time: thread pools (OpenMP/oneDNN, Eigen) take a while to settle.
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
