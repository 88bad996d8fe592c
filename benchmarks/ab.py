"""Interleaved A/B comparison of variants across fresh processes: for comparisons that must survive a noisy host.

    .venv/bin/python -m benchmarks.ab --workload radar --mode train --variants torch,torch-fused --rounds 3
    .venv/bin/python -m benchmarks.ab --workload radar --mode train --variants jax,flax-linen --in-process --rounds 8

On a shared machine the speed of a whole process can shift (the same step, timed in back-to-back processes, can
differ between the processes by far more than it varies within each of them), so one process per variant (what
asv's Metrics does) can mislead. This runs every variant once per round, in a fresh process each time, rounds
interleaved (A B C, A B C, ...), each process building, verifying and warming up the case exactly as the
benchmarks do (:func:`benchmarks.cases.prepare_case`) and then timing it (:func:`benchmarks.measure.measure_case`).
It prints, per variant, the per-process medians and their minimum and median, and writes the raw numbers as JSON
(``--json``). Nothing here is an asv benchmark: it is a tool for questions such as "is ours slower than the peer".

``--in-process`` answers the same question for variants of one framework (one Keras backend) with less noise: all
variants are built, verified and warmed up in this one process, then timed in interleaved rounds (``--steps``
synced steps of each per round, the order reversed every other round), so a shift of the whole process's speed
hits every variant alike. It reports each variant's per-round medians and the median over rounds of the paired
ratio to the first variant (same round). Variants of different frameworks would share thread pools and cores
here, so they are refused; compare those across fresh processes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from implementations.fileio import write_json_atomic
from implementations.workloads import get_workload

from . import paired
from .cases import prepare_case
from .grid import WORKLOADS, Profile, active_profile, family, variant_list
from .measure import measure_case

ROOT = Path(__file__).resolve().parent.parent


def ab_profile() -> Profile:
    """Every combination of the full profile, sampled with the budget of BENCH_TIMING (default: quick)."""
    return active_profile({"BENCH_PROFILE": "full", "BENCH_TIMING": os.environ.get("BENCH_TIMING", "quick")})


def measure_once(variant: str, workload: str, mode: str, dtype: str) -> dict[str, Any]:
    """One fresh-process measurement (run in the child): step-time median and samples, conv-peak fraction, minor
    page faults per step."""
    profile = ab_profile()
    case = prepare_case(variant, workload, mode, dtype, profile=profile, record=False)
    m = measure_case(case, profile)
    return {key: m[key] for key in ("step_seconds", "step_samples", "fraction_of_conv_peak", "peak_conv_gflops",
                                    "achieved_gflops", "first_call_seconds", "minor_faults_per_step")}


def run_child(variant: str, workload: str, mode: str, dtype: str) -> dict[str, Any]:
    """:func:`measure_once` in a new interpreter; a skip or failure is returned as ``{"error": ...}``."""
    code = ("import json, sys; from benchmarks.ab import measure_once; "
            f"print('AB-RESULT ' + json.dumps(measure_once({variant!r}, {workload!r}, {mode!r}, {dtype!r})))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    for line in done.stdout.splitlines():
        if line.startswith("AB-RESULT "):
            return json.loads(line[len("AB-RESULT "):])
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"exit {done.returncode}: {tail}"}


def check_in_process(variants: Sequence[str], rounds: int, steps: int) -> None:
    """ValueError unless ``variants`` are distinct, of one process family, and rounds and steps are >= 1."""
    if len(set(variants)) != len(variants):
        raise ValueError(f"--in-process needs distinct variants: found {list(variants)}")
    families = {v: family(v) for v in variants}
    if len(set(families.values())) != 1:
        raise ValueError(
            "--in-process needs variants of one framework (one Keras backend): found "
            + ", ".join(f"{v} ({'+'.join(f[1])})" for v, f in families.items())
        )
    if rounds < 1 or steps < 1:
        raise ValueError(f"rounds and steps: expected >= 1, found {rounds} and {steps}")


def compare_in_process(
    variants: Sequence[str], workload: str, mode: str, dtype: str, rounds: int, steps: int
) -> dict[str, Any]:
    """Build every variant here, then time ``steps`` synced steps of each per round in ``rounds`` interleaved rounds
    (:func:`benchmarks.paired.interleaved_rounds`: the order rotates, busy rounds are flagged). Returns per variant
    the paired-round summary, all samples, the ratio to the first variant (its time / this one's, with the 95 %
    interval and the verdict) and the conv-peak fraction (peak probed after the rounds).

    ValueError from :func:`check_in_process` (before anything is built); NotImplementedError
    when one of them is skipped (its framework missing)."""
    check_in_process(variants, rounds, steps)
    profile = ab_profile()
    cases = {v: prepare_case(v, workload, mode, dtype, profile=profile, record=False) for v in variants}
    blocks = paired.interleaved_rounds({v: cases[v].run for v in variants}, rounds, 0.0, min_steps=steps)
    wl = get_workload(workload)
    flops = wl.spec.flops(wl.input_shape, mode)
    out: dict[str, Any] = {}
    for v in variants:
        summary = paired.summarize(blocks[v])
        peak = cases[v].model.peak_gflops()["conv"]
        out[v] = {
            **summary,
            "step_samples": [b["seconds"] for b in blocks[v]],
            "vs_first": paired.compare(blocks, v, variants[0]),
            "peak_conv_gflops": peak,
            "fraction_of_conv_peak": flops / summary["step_seconds"] / 1e9 / peak,
            "verify": cases[v].verify,
        }
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ab", description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", required=True, help="comma-separated, e.g. torch,torch-fused")
    parser.add_argument("--workload", default="radar", choices=WORKLOADS)
    parser.add_argument("--mode", default="forward", choices=("forward", "train"))
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--rounds", type=int, default=3,
                        help="fresh processes per variant; --in-process: interleaved rounds (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="write the raw per-process numbers here")
    parser.add_argument("--in-process", action="store_true",
                        help="time variants of one framework in this process, interleaved (see the module docstring)")
    parser.add_argument("--steps", type=int, default=3, help="with --in-process: steps per variant per round")
    args = parser.parse_args(argv)
    variants = variant_list(args.variants, parser)
    if args.in_process:
        try:
            check_in_process(variants, args.rounds, args.steps)
        except ValueError as exc:
            parser.error(str(exc))
        try:
            res = compare_in_process(variants, args.workload, args.mode, args.dtype, args.rounds, args.steps)
        except NotImplementedError as exc:
            print(f"skipped: {exc}")
            return 0
        print(f"\n{args.workload} {args.mode} {args.dtype}: in one process, {args.rounds} interleaved rounds of "
              f"{args.steps} step(s); per-round median step time (ms)")
        print(f"{'variant':<20} {'min':>8} {'median':>8} {'max':>8}  {variants[0] + ' time / this [95% CI]':>34}  "
              f"{'verdict':>20}  {'frac conv peak':>14}  busy rounds")
        for v, x in res.items():
            ms = [t * 1e3 for t in x["round_seconds"]]
            c = x["vs_first"]
            est = "n/a" if c["low"] is None else f"{c['ratio']:.3f} [{c['low']:.3f}, {c['high']:.3f}]"
            print(f"{v:<20} {min(ms):8.1f} {statistics.median(ms):8.1f} {max(ms):8.1f}  {est:>34}  "
                  f"{c['verdict'] if v != variants[0] else '':>20}  {x['fraction_of_conv_peak']:14.3f}  "
                  f"{len(x['contaminated_rounds'])}")
        if args.json:
            write_json_atomic(args.json, {"workload": args.workload, "mode": args.mode, "dtype": args.dtype,
                                                 "in_process": True, "rounds": args.rounds, "steps": args.steps,
                                                 "results": res})
        return 0
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for r in range(args.rounds):
        for v in variants:
            result = run_child(v, args.workload, args.mode, args.dtype)
            runs[v].append(result)
            shown = result["error"] if "error" in result else (
                f"{result['step_seconds'] * 1e3:.1f} ms, {_faults(result)} page faults/step")
            print(f"round {r + 1}/{args.rounds} {v}: {shown}", flush=True)
    print(f"\n{args.workload} {args.mode} {args.dtype}: per-process median step time (ms), {args.rounds} processes")
    print(f"{'variant':<16} {'min':>8} {'median':>8} {'max':>8}  {'frac conv peak (median)':>24}  per process")
    for v in variants:
        ok = [x for x in runs[v] if "error" not in x]
        if not ok:
            print(f"{v:<16} n/a ({runs[v][0]['error']})")
            continue
        ms = [x["step_seconds"] * 1e3 for x in ok]
        frac = statistics.median(x["fraction_of_conv_peak"] for x in ok)
        print(f"{v:<16} {min(ms):8.1f} {statistics.median(ms):8.1f} {max(ms):8.1f}  {frac:24.3f}  "
              + ", ".join(f"{m:.1f}" for m in ms))
    if args.json:
        write_json_atomic(args.json, {"workload": args.workload, "mode": args.mode, "dtype": args.dtype,
                                             "runs": runs})
    return 0


def _faults(result: dict[str, Any]) -> str:
    value = result.get("minor_faults_per_step")
    return "n/a" if value is None else f"{value:.0f}"


if __name__ == "__main__":
    raise SystemExit(main())
