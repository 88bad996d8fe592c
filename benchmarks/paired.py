"""Paired, interleaved measurement of the variants of one framework, and the verdicts drawn from it.

The speed of a shared VM drifts (second to second and process to process), so a comparison of two variants
measured at different times compares the machine as much as the variants. Here the variants of one framework
(ours and its peers: same process family, see :func:`family`) are built in one process and timed in
**rounds**: each round times a block of steps of every variant back to back (the order rotates from round to
round), so a shift of the machine's speed hits every variant of a round alike. Each block records how busy the
machine was (:mod:`benchmarks.contention`); rounds where any block was contaminated are dropped from the
comparison.

For a pair (ours, peer) each clean round gives a ratio of per-round medians, peer time / our time (above 1: ours
is faster). The estimate is their geometric mean, with a Student-t 95 % confidence interval on the log ratios
(:func:`ratio_interval`). The verdict (:func:`verdict`) calls a difference only when the interval excludes 1.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import contention

#: Verdict labels (the report shows them verbatim).
FASTER = "faster"
SLOWER = "slower"
NO_CLEAR_DIFFERENCE = "no clear difference"
TOO_FEW_ROUNDS = "too few clean rounds"
#: A comparison needs at least this many clean rounds for an interval.
MIN_CLEAN_ROUNDS = 3
#: Confidence level of the intervals.
CONFIDENCE = 0.95
#: Two-sided 95 % Student-t quantiles by degrees of freedom (larger df: the nearest smaller entry, conservative).
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
        20: 2.086, 25: 2.060, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t_quantile_95(df: int) -> float:
    """Two-sided 95 % quantile of Student's t with ``df`` degrees of freedom (table, rounded down in df)."""
    if df < 1:
        raise ValueError(f"degrees of freedom: expected >= 1, found {df}")
    return _T95[max(k for k in _T95 if k <= df)] if df <= 120 else 1.960


def ratio_interval(ratios: Sequence[float]) -> dict[str, Any]:
    """Geometric mean of paired ratios and its 95 % interval: ``{"ratio", "low", "high", "n"}`` (None when n < 2)."""
    logs = [math.log(r) for r in ratios if r > 0 and math.isfinite(r)]
    n = len(logs)
    if n < 2:
        return {"ratio": math.exp(logs[0]) if logs else None, "low": None, "high": None, "n": n}
    mean = statistics.fmean(logs)
    half = t_quantile_95(n - 1) * statistics.stdev(logs) / math.sqrt(n)
    return {"ratio": math.exp(mean), "low": math.exp(mean - half), "high": math.exp(mean + half), "n": n}


def verdict(interval: Mapping[str, Any]) -> str:
    """``faster`` when the whole interval is above 1, ``slower`` when below, ``no clear difference`` when it
    contains 1, ``too few clean rounds`` without one (fewer than :data:`MIN_CLEAN_ROUNDS` clean rounds)."""
    if interval.get("low") is None or interval.get("n", 0) < MIN_CLEAN_ROUNDS:
        return TOO_FEW_ROUNDS
    if interval["low"] > 1.0:
        return FASTER
    if interval["high"] < 1.0:
        return SLOWER
    return NO_CLEAR_DIFFERENCE


# ---------------------------------------------------------------------------------------------
# Rounds
# ---------------------------------------------------------------------------------------------


def interleaved_rounds(
    runners: Mapping[str, Callable[[], None]],
    rounds: int,
    block_seconds: float,
    *,
    min_steps: int = 1,
    max_steps: int = 10_000,
    clock: Callable[[], float] = time.perf_counter,
    sample: Callable[[], contention.Snapshot] = contention.snapshot,
    counter: Callable[[], int | None] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Time every runner in ``rounds`` rounds; per round one block each, the order rotated by one every round.

    A block runs synced steps until ``block_seconds`` have passed (at least ``min_steps``, at most ``max_steps``) and
    records ``{"round", "seconds": [step times], "median", "usage": contention.usage(...)}``, plus ``faults``:
    the increase of ``counter()`` over the block (e.g. minor page faults; None without a counter or a count).
    ``clock`` and ``sample`` are injectable for tests."""
    if rounds < 1 or block_seconds < 0 or min_steps < 1:
        raise ValueError(f"rounds >= 1, block_seconds >= 0 and min_steps >= 1 expected, found {rounds}, "
                         f"{block_seconds} and {min_steps}")
    names = list(runners)
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            run = runners[name]
            before, count0 = sample(), counter() if counter else None
            steps: list[float] = []
            start = clock()
            while len(steps) < min_steps or (clock() - start < block_seconds and len(steps) < max_steps):
                t0 = clock()
                run()
                steps.append(clock() - t0)
            usage = contention.usage(before, sample())
            count1 = counter() if counter else None
            out[name].append({"round": r, "seconds": steps, "median": statistics.median(steps), "usage": usage,
                              "faults": None if count0 is None or count1 is None else count1 - count0})
    return out


def clean_rounds(blocks: Mapping[str, Sequence[Mapping[str, Any]]], names: Sequence[str]) -> list[int]:
    """Rounds in which no block of ``names`` was contaminated."""
    rounds = {b["round"] for b in blocks[names[0]]}
    for name in names:
        rounds &= {b["round"] for b in blocks[name] if not b["usage"]["contaminated"]}
    return sorted(rounds)


def compare(blocks: Mapping[str, Sequence[Mapping[str, Any]]], ours: str, peer: str) -> dict[str, Any]:
    """Throughput of ``ours`` over ``peer`` (peer time / our time) from their clean rounds, with the interval and
    the verdict; also how many rounds were dropped for contamination."""
    medians = {name: {b["round"]: b["median"] for b in blocks[name]} for name in (ours, peer)}
    used = clean_rounds(blocks, [ours, peer])
    ratios = [medians[peer][r] / medians[ours][r] for r in used]
    interval = ratio_interval(ratios)
    total = len(blocks[ours])
    return {"ours": ours, "peer": peer, **interval, "verdict": verdict(interval), "round_ratios": ratios,
            "rounds": total, "rounds_used": len(used), "rounds_dropped": total - len(used)}


def summarize(blocks: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One variant's rounds: per-round medians, the median over clean rounds (over all when none is clean), the
    contaminated rounds and why, and the busiest reading."""
    clean = [b["median"] for b in blocks if not b["usage"]["contaminated"]]
    flagged = [{"round": b["round"], "reason": b["usage"]["reason"]} for b in blocks if b["usage"]["contaminated"]]
    steal = [b["usage"]["steal"] for b in blocks if b["usage"]["steal"] is not None]
    others = [b["usage"]["others_cores"] for b in blocks if b["usage"]["others_cores"] is not None]
    return {
        "round_seconds": [b["median"] for b in blocks],
        "step_seconds": statistics.median(clean or [b["median"] for b in blocks]),
        "steps": sum(len(b["seconds"]) for b in blocks),
        "rounds": len(blocks),
        "contaminated_rounds": flagged,
        "max_steal": max(steal, default=None),
        "max_others_cores": max(others, default=None),
        "busy": len(clean) < MIN_CLEAN_ROUNDS,
    }


def best_peer(summaries: Mapping[str, Mapping[str, Any]], peers: Sequence[str]) -> str | None:
    """The peer with the shortest step time (median over its clean rounds)."""
    return min(peers, key=lambda p: summaries[p]["step_seconds"], default=None)
