"""Measuring prepared cases: sampling, paired group measurement, page faults, and the per-run metrics cache.

The ``Metrics``, ``PageFaults`` and ``DeviceMemory`` benchmarks of one asv run share a directory
(``setup_cache``): the first of them to run for a combination measures the whole family of that combination
(:func:`measure_group`, paired interleaved rounds of :mod:`benchmarks.paired`) and stores every member's
numbers there (:func:`cached_metrics`); the others read them, so every number of a combination comes from one
process. Imports no framework.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from implementations.fileio import write_json_atomic

from . import paired
from .cases import Case, prepare_case
from .environment import record_comparison
from .grid import VARIANT_TABLE, Combo, Profile, active_profile, group_of

# ---------------------------------------------------------------------------------------------
# Sampling and measuring
# ---------------------------------------------------------------------------------------------


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
    faults = None if faults0 is None or faults1 is None else (faults1 - faults0) / len(samples)
    return _derived_metrics(case, median, samples, faults)


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
    per_step = None if None in faults else sum(faults) / max(1, len(samples))
    return _derived_metrics(case, median, samples, per_step)


def _derived_metrics(
    case: Case, median: float, samples: list[float], faults_per_step: float | None
) -> dict[str, Any]:
    """The metrics dictionary of a case timed at ``median`` seconds per step: throughput, achieved rate, and the
    framework's peaks measured now, in this process, after the timing."""
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
        "minor_faults_per_step": faults_per_step,
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

