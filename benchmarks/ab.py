"""Interleaved A/B comparison of variants across fresh processes: for comparisons that must survive a noisy host.

    .venv/bin/python -m benchmarks.ab --workload radar --mode train --variants torch,torch-fused --rounds 3

On a shared VM the speed of a whole process can shift (on the 2-vCPU development VM the same keras-tf-xla radar
forward step took 127.6, 170.6 and 208.6 ms in three back-to-back processes, each within 4 % of itself), so one
process per variant (what asv's Metrics does) can mislead. This runs every variant once per round, in a fresh
process each time, rounds interleaved (A B C, A B C, ...), each process building, verifying and warming up the
case exactly as the benchmarks do (:func:`common.prepare_case`) and then timing it (:func:`common.measure_case`).
It prints, per variant, the per-process medians and their minimum and median, and writes the raw numbers as JSON
(``--json``). Nothing here is an asv benchmark: it is a tool for questions such as "is ours slower than the peer".
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

from . import common

ROOT = Path(__file__).resolve().parent.parent


def measure_once(variant: str, workload: str, mode: str, dtype: str) -> dict[str, Any]:
    """One fresh-process measurement (run in the child): step-time median and samples, conv-peak fraction."""
    # Every combination of the full profile, sampled with the budget of BENCH_TIMING (default: quick).
    profile = common.active_profile({"BENCH_PROFILE": "full", "BENCH_TIMING": os.environ.get("BENCH_TIMING", "quick")})
    case = common.prepare_case(variant, workload, mode, dtype, profile=profile, record=False)
    m = common.measure_case(case, profile)
    return {key: m[key] for key in ("step_seconds", "step_samples", "fraction_of_conv_peak", "peak_conv_gflops",
                                    "achieved_gflops", "first_call_seconds")}


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ab", description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", required=True, help="comma-separated, e.g. torch,torch-fused")
    parser.add_argument("--workload", default="radar", choices=common.WORKLOADS)
    parser.add_argument("--mode", default="forward", choices=("forward", "train"))
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per variant (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="write the raw per-process numbers here")
    args = parser.parse_args(argv)
    variants = common.variant_list(args.variants, parser)
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for r in range(args.rounds):
        for v in variants:
            result = run_child(v, args.workload, args.mode, args.dtype)
            runs[v].append(result)
            shown = f"{result['step_seconds'] * 1e3:.1f} ms" if "error" not in result else result["error"]
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
        common.write_json_atomic(args.json, {"workload": args.workload, "mode": args.mode, "dtype": args.dtype,
                                             "runs": runs})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
