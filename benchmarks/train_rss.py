"""Resident memory of training, per variant, how it is defined here: peak RSS and its increase over the build.

    .venv/bin/python -m benchmarks.train_rss --workload moving_mnist \
        --variants torch,torch-fused,keras-tf,keras-builtin,jax,flax-linen

Each variant runs in a fresh Python process (RSS is a property of the whole process), which records, in MiB:

* ``import``: RSS after importing the framework and selecting the device;
* ``build``: RSS after building the model on the workload's weights, input and target (the optimizer included);
* ``peak``: the highest RSS from then on, over the first training step (compilation included) and two more;
* ``increase``: ``peak - build``, the "increase over RSS after the build";
* ``warm_step``: the RSS high-water mark of one more, warmed-up step, minus RSS at its start (Linux only: the
  mark is reset through ``/proc/self/clear_refs``). Memory the allocator kept from earlier steps is reused
  without raising RSS, so this is what a steady-state step adds on top of what the process already holds;
* ``warm_step_over_build``: that step's high-water mark minus ``build``: the steady-state footprint of training,
  without what only the first call costs (compilation, lazily loaded kernels);
* ``held_after_trim``: RSS after that step and glibc's ``malloc_trim(0)``, minus ``build``: what the process still
  holds between steps once the allocator returns its free pages (weights' gradients, compiled programs, caches).
  The difference to RSS before the trim is freed memory that glibc kept, e.g. from the compiler.

RSS is host memory, read from ``/proc/self/status`` (Linux; elsewhere the marks are n/a); on a GPU the device
allocator's peak is the asv ``DeviceMemory`` figure. The outputs of the first step are checked against the float64
reference *after* the measurements (the reference's own arrays would otherwise be part of the peak or leave freed
heap for the step to reuse). RSS holds more than tensors: allocator slack, thread-pool stacks, oneDNN/Eigen
workspaces and, for XLA, the compiler. For live tensor bytes see :mod:`benchmarks.live_memory`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from implementations import fileio
from implementations.fileio import write_json_atomic
from implementations.workloads import get_workload

from .cases import case_data, case_weights, first_call, verify_case
from .environment import repo_root
from .grid import (
    DTYPES,
    WORKLOADS,
    Combo,
    Profile,
    active_profile,
    predicted_activation_bytes,
    skip_reason,
    variant_list,
)
from .model import get_adapter

MIB = 1024 * 1024
#: Steps measured by ``peak`` after the build: the first (compiling) one and this many more.
EXTRA_STEPS = 2
_RESULT_TAG = "TRAIN_RSS_RESULT "
#: Every workload and variant may be measured (not only the quick profile's).
_PROFILE = active_profile({"BENCH_PROFILE": "full", "BENCH_TIMING": "quick"})


def read_status_bytes(field: str) -> int | None:
    """``VmRSS`` / ``VmHWM`` of this process from ``/proc/self/status``, in bytes; None where unavailable."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def reset_high_water_mark() -> bool:
    """Reset this process's ``VmHWM`` to its current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def _peak_rss() -> int | None:
    """The process's peak RSS in bytes since the last reset: ``VmHWM``, else ``ru_maxrss`` (never reset)."""
    hwm = read_status_bytes("VmHWM")
    if hwm is not None:
        return hwm
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _malloc_trim() -> bool:
    """Ask glibc to return free heap pages to the system; False where the C library has no ``malloc_trim``."""
    import ctypes

    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return False
    trim(0)
    return True


def measure_in_this_process(variant: str, workload: str, dtype: str = "float32") -> dict[str, Any]:
    """The figures of the module docstring for ``variant`` in *this* process (call it in a fresh one), in bytes.

    NotImplementedError when the combination is skipped; :class:`benchmarks.cases.VerificationError` when the model's
    outputs are wrong (nothing is reported for a wrong model).
    """
    combo: Combo = (variant, workload, "train", dtype)
    reason = skip_reason(combo, _PROFILE)
    if reason:
        raise NotImplementedError(reason)
    adapter = get_adapter(variant)
    try:
        adapter.import_framework(variant)
    except ImportError as exc:
        raise NotImplementedError(f"{variant}: framework import failed: {exc}") from exc
    out: dict[str, Any] = {"import": read_status_bytes("VmRSS")}
    wl = get_workload(workload)
    weights = case_weights(wl)
    x, target = case_data(wl)
    try:
        model = adapter.build(wl, variant, dtype, weights, x, target)
    except ImportError as exc:  # installed but broken: a skip, as in cases.prepare_case
        raise NotImplementedError(f"{variant}: framework import failed: {exc}") from exc
    model.prepare("train")
    out["build"] = read_status_bytes("VmRSS")
    out["hwm_reset"] = reset_high_water_mark()
    _, outputs, first_loss = first_call(model, "train")
    for _ in range(EXTRA_STEPS):
        model.train_step()
        model.sync()
    out["peak"] = _peak_rss()
    out["warm_step"] = out["warm_step_over_build"] = None
    if out["hwm_reset"] and reset_high_water_mark():
        start = read_status_bytes("VmRSS")
        model.train_step()
        model.sync()
        high = read_status_bytes("VmHWM")
        if start is not None and high is not None:
            out["warm_step"] = high - start
            out["warm_step_over_build"] = None if out["build"] is None else high - out["build"]
    out["held_after_trim"] = None
    if _malloc_trim() and out["build"] is not None:
        after = read_status_bytes("VmRSS")
        out["held_after_trim"] = None if after is None else after - out["build"]
    out["verify"] = verify_case(weights, x, target, outputs, first_loss, dtype)
    if out["build"] is not None and out["peak"] is not None:
        out["increase"] = out["peak"] - out["build"]
    out["device"] = model.device
    out["versions"] = model.versions()
    return out


def measure(
    variant: str,
    workload: str,
    dtype: str = "float32",
    timeout: float = 1800.0,
    profile: Profile | None = None,
) -> dict[str, Any]:
    """:func:`measure_in_this_process` in a fresh interpreter: its dict, or one with ``"skip"`` or ``"error"``.

    ``profile``: the combination is skipped unless it is in this profile (default: every workload and variant).
    """
    base: dict[str, Any] = {"variant": variant, "workload": workload, "dtype": dtype}
    reason = skip_reason((variant, workload, "train", dtype), _PROFILE if profile is None else profile)
    if reason:
        return base | {"skip": reason}
    code = f"from benchmarks import train_rss; train_rss._child({variant!r}, {workload!r}, {dtype!r})"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    try:
        proc = subprocess.run([sys.executable, "-c", code], cwd=repo_root(), env=env, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return base | {"error": f"no result within {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(_RESULT_TAG):
            return base | json.loads(line[len(_RESULT_TAG):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    return base | {"error": f"exit status {proc.returncode}: " + " | ".join(tail)}


def measure_or_raise(
    variant: str, workload: str, dtype: str, timeout: float, profile: Profile
) -> dict[str, Any]:
    """:func:`measure` for the asv ``TrainMemory`` benchmark: NotImplementedError for a skip (asv: n/a, also where
    ``/proc`` gives no RSS marks), RuntimeError naming the child's failure, else the figures in bytes."""
    r = measure(variant, workload, dtype, timeout=timeout, profile=profile)
    if "skip" in r:
        raise NotImplementedError(r["skip"])
    if "error" in r:
        raise RuntimeError(f"train_rss of {variant}/{workload}/{dtype}: {r['error']}")
    if r.get("increase") is None or r.get("warm_step_over_build") is None or r.get("held_after_trim") is None:
        raise NotImplementedError("the RSS marks need Linux /proc (VmRSS, VmHWM, clear_refs) and glibc's malloc_trim")
    return r


def _child(variant: str, workload: str, dtype: str) -> None:
    try:
        result = measure_in_this_process(variant, workload, dtype)
    except NotImplementedError as exc:
        result = {"skip": str(exc)}
    print(_RESULT_TAG + json.dumps(result, default=fileio.json_default), flush=True)


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / MIB:.0f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_rss", description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="torch,torch-fused,keras-tf,keras-builtin,jax,flax-linen",
                        help="comma-separated")
    parser.add_argument("--workload", default="radar", choices=WORKLOADS)
    parser.add_argument("--dtype", default="float32", choices=DTYPES)
    parser.add_argument("--json", type=Path, help="write the results here (atomically)")
    args = parser.parse_args(argv)
    variants = variant_list(args.variants, parser)
    spec = predicted_activation_bytes(args.workload, args.dtype)
    print(f"{args.workload} train {args.dtype}: RSS in MiB, one fresh process per variant; "
          f"spec activations {spec / MIB:.0f} MiB")
    print(f"{'variant':<20} {'import':>7} {'build':>7} {'peak':>7} {'increase':>9} {'x spec':>7} {'warm step':>10} "
          f"{'warm over build':>16} {'held after trim':>16}")
    results = []
    for v in variants:
        r = measure(v, args.workload, args.dtype)
        results.append(r)
        if "skip" in r or "error" in r:
            print(f"{v:<20} n/a ({r.get('skip') or r.get('error')})", flush=True)
            continue
        ratio = r["increase"] / spec if r.get("increase") is not None else None
        r["increase_over_spec"] = ratio
        print(f"{v:<20} {_mib(r['import']):>7} {_mib(r['build']):>7} {_mib(r['peak']):>7} "
              f"{_mib(r.get('increase')):>9} {'n/a' if ratio is None else f'{ratio:.2f}':>7} "
              f"{_mib(r['warm_step']):>10} {_mib(r['warm_step_over_build']):>16} {_mib(r['held_after_trim']):>16}",
              flush=True)
    if args.json:
        write_json_atomic(args.json, {"workload": args.workload, "dtype": args.dtype, "spec_bytes": spec,
                                             "results": results})
    return 0 if not any("error" in r for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
