"""Synthetic but realistic report inputs, for the report's tests and for a demo page.

The asv files are written by asv's own :class:`asv.results.Results` (``add_result`` + ``save``, so timing
statistics are computed by asv from the samples) when asv is importable; otherwise by an equivalent writer of the
same compact format. Nothing here is a measurement.
"""

from __future__ import annotations

import ast
import itertools
import json
import math
import random
from pathlib import Path
from typing import Any

MACHINE = "sample-box-2cpu"
VARIANTS = ["torch", "torch-fused", "keras-tf-xla", "keras-builtin", "jax", "jax-scan", "flax-linen"]
ROLES = {"torch": "ours", "keras-tf-xla": "ours", "jax": "ours", "torch-fused": "peer", "keras-builtin": "peer",
         "flax-linen": "peer", "jax-scan": "trap"}
FRAMEWORK = {"torch": "torch", "torch-fused": "torch", "keras-tf-xla": "keras", "keras-builtin": "keras",
             "jax": "jax", "jax-scan": "jax", "flax-linen": "jax"}
WORKLOADS = {"tiny": (2, 3), "radar": (8, 5)}  # (B, T)
MODES = ["forward", "train"]
DTYPES = ["float32", "bfloat16"]
GRID = ["variant", "workload", "mode", "dtype"]
SPEED = {"torch": 1.0, "torch-fused": 1.15, "keras-tf-xla": 0.8, "keras-builtin": 0.55, "jax": 1.3, "jax-scan": 0.35,
         "flax-linen": 1.1}
FLOP = {"tiny": 0.0016, "radar": 24.0}  # forward GFLOP per batch


#: The sample's (fictitious) day of measurement, as (year, month, day).
SAMPLE_DAY = (2026, 9, 21)


def _stamp(day: tuple[int, int, int], hour: int, minute: int = 0) -> str:
    """An ISO 8601 UTC timestamp on ``day``."""
    import datetime

    return datetime.datetime(*day, hour, minute, tzinfo=datetime.UTC).isoformat()


def _q(v: str) -> str:
    return repr(v)


BENCHMARKS: dict[str, dict[str, Any]] = {}


def _bench(name: str, kind: str, unit: str, names: list[str], values: list[list[str]], version: str) -> None:
    BENCHMARKS[name] = {"name": name, "type": kind, "unit": unit, "param_names": names,
                        "params": [[_q(v) for v in vs] for vs in values], "version": version, "timeout": 600.0}


_GRID_VALUES = [VARIANTS, list(WORKLOADS), MODES, DTYPES]
_bench("bench_convlstm.TimeStep.time_step", "time", "seconds", GRID, _GRID_VALUES, "time-1")
for _n, _u in (("track_sequences_per_second", "sequences/s"), ("track_frames_per_second", "frames/s"),
               ("track_achieved_gflops", "GFLOP/s"), ("track_peak_matmul_gflops", "GFLOP/s"),
               ("track_fraction_of_matmul_peak", "fraction"), ("track_fraction_of_conv_peak", "fraction"),
               ("track_first_call_seconds", "seconds")):
    _bench(f"bench_convlstm.Metrics.{_n}", "track", _u, GRID, _GRID_VALUES, "metrics-1")
_bench("bench_convlstm.DeviceMemory.track_device_peak_bytes", "track", "bytes", GRID, _GRID_VALUES, "device-1")
_bench("bench_convlstm.PageFaults.track_minor_faults_per_step", "track", "faults/step", GRID, _GRID_VALUES,
       "page-faults-1")
_bench("bench_convlstm.PeakMemory.peakmem_step", "peakmemory", "bytes", GRID, _GRID_VALUES, "peakmem-1")
for _n in ("track_train_rss_increase_bytes", "track_train_rss_warm_step_bytes", "track_train_rss_held_bytes"):
    _bench(f"bench_convlstm.TrainMemory.{_n}", "track", "bytes", GRID, _GRID_VALUES, "train-rss-1")
_bench("bench_convlstm.ImportBaseline.peakmem_import", "peakmemory", "bytes", ["variant"], [VARIANTS], "import-1")
_bench("bench_convlstm.SpecActivation.track_predicted_activation_bytes", "track", "bytes", ["workload", "dtype"],
       [list(WORKLOADS), DTYPES], "spec-1")
_bench("bench_convlstm.Broken.time_broken", "time", "seconds", [], [], "broken-1")


def selected(combo: tuple[str, ...]) -> bool:
    """The sample 'profile': every variant in float32, ours also in bfloat16."""
    variant, _, _, dtype = combo
    return dtype == "float32" or ROLES[variant] == "ours"


def _spec_bytes(workload: str, dtype: str) -> float:
    """The sample's spec-predicted activation bytes of a training step (``SpecActivation``)."""
    b, t = WORKLOADS[workload]
    return float(b * t * (89088 if workload == "tiny" else 2.28e6) * (2 if dtype == "float32" else 1))


def _step_seconds(combo: tuple[str, ...], commit_i: int) -> float:
    """The sample's step time of a combination at a commit (asv's TimeStep median)."""
    variant, workload, mode, dtype = combo
    speedup = SPEED[variant] * (1 + 0.04 * commit_i) * (1.6 if dtype == "bfloat16" else 1.0)
    speedup *= 0.3 if (variant == "jax-scan" and mode == "train") else 1.0
    gflop = FLOP[workload] * (3 if mode == "train" else 1)
    return (gflop / (40.0 * speedup)) + (0.0004 if workload == "tiny" else 0.01) / speedup


#: Sample paired rounds: (workload, mode) -> {variant: per-round noise amplitude} where the sample's peer is as
#: fast as ours with noisy rounds (an interval that contains 1); rounds flagged as contaminated per group.
LEVEL_PEER = {("tiny", "forward"): "torch-fused"}
CONTAMINATED = {("torch", "radar", "train"): {2: "other processes used 1.02 cores > 0.25", 5: "steal 14% > 10%"}}
PAIRED_ROUNDS = 8


def _comparisons(commit_i: int, missing: set[str], failed: set[tuple]) -> dict[str, Any]:
    """environment.json's ``comparisons``: paired rounds of each framework's variants, shaped as
    :func:`benchmarks.common.record_comparison` writes them (the statistics by :mod:`benchmarks.paired` itself)."""
    from benchmarks import paired  # the producer's own statistics, so the sample's verdicts are consistent

    out: dict[str, Any] = {}
    for fw, w, m, d in itertools.product(("torch", "keras", "jax"), WORKLOADS, MODES, DTYPES):
        members = [v for v in VARIANTS if FRAMEWORK[v] == fw and v not in missing and selected((v, w, m, d))
                   and (v, w, m) not in failed]
        if not members:
            continue
        bad = CONTAMINATED.get((fw, w, m), {}) if d == "float32" else {}
        blocks = {}
        for v in members:
            step = _step_seconds((v, w, m, d), commit_i)
            if LEVEL_PEER.get((w, m)) == v:
                step = _step_seconds((members[0], w, m, d), commit_i) * 1.01
            noise = 0.06 if LEVEL_PEER.get((w, m)) in members else 0.01
            # the machine runs 1.3x slower from round 4 on: every variant of a round sees it alike
            medians = [step * (1.3 if r >= 4 else 1.0) * (1 + noise * math.sin(3 * r + 2.1 * VARIANTS.index(v)))
                       for r in range(PAIRED_ROUNDS)]
            blocks[v] = [{"round": r, "seconds": [medians[r]], "median": medians[r],
                          "usage": {"contaminated": r in bad, "reason": bad.get(r, ""), "steal": 0.01,
                                    "others_cores": 1.02 if r in bad else 0.02}}
                         for r in range(PAIRED_ROUNDS)]
        summaries = {v: paired.summarize(blocks[v]) for v in members}
        peers = [v for v in members if ROLES[v] == "peer"]
        best = paired.best_peer(summaries, peers)
        ours = {v: {"vs_best_peer": paired.compare(blocks, v, best)} for v in members if ROLES[v] == "ours" and best}
        out["+".join(members) + f"/{w}/{m}/{d}"] = {
            "workload": w, "mode": m, "dtype": d, "rounds": PAIRED_ROUNDS, "block_seconds": 0.25,
            "variants": summaries, "best_peer": best, "ours": ours}
    return out


def _value(name: str, combo: tuple[str, ...], commit_i: int, rnd: random.Random, missing: set[str],
           failed: set[tuple]) -> Any:
    """A plausible number, NaN (skipped) or None (failed)."""
    if name.endswith("peakmem_import"):
        (variant,) = combo
        if variant in missing:
            return math.nan
        return {"torch": 230e6, "keras": 668e6, "jax": 180e6}[FRAMEWORK[variant]] * (1 + 0.01 * rnd.random())
    if name.endswith("track_predicted_activation_bytes"):
        return _spec_bytes(*combo)
    if name.endswith("time_broken"):
        return None
    variant, workload, mode, dtype = combo
    if not selected(combo) or variant in missing:
        return math.nan
    if (variant, workload, mode) in failed and "Metrics" in name:
        return None
    b, t = WORKLOADS[workload]
    gflop = FLOP[workload] * (3 if mode == "train" else 1)
    step = _step_seconds(combo, commit_i)
    short = name.rsplit(".", 1)[-1]
    if short == "time_step":
        return step
    if short == "track_sequences_per_second":
        return b / step
    if short == "track_frames_per_second":
        return b * t / step
    if short == "track_achieved_gflops":
        return gflop / step
    if short == "track_peak_matmul_gflops":
        return 110.0
    if short == "track_fraction_of_matmul_peak":
        return gflop / step / 110.0
    if short == "track_fraction_of_conv_peak":
        return min(0.95, gflop / step / 75.0)
    if short == "track_first_call_seconds":
        base = {"torch": 0.05, "keras": 1.5, "jax": 0.6}[FRAMEWORK[variant]]
        return base * (3 if mode == "train" else 1) * (1 + 0.1 * rnd.random())
    if short == "track_device_peak_bytes":
        return math.nan  # a CPU: no device allocator
    if short == "track_minor_faults_per_step":
        return 0.0 if workload == "tiny" else float(round(b * t * 40 * (2 if mode == "train" else 1) * rnd.random()))
    if short.startswith("track_train_rss_"):
        if mode != "train":
            return math.nan  # measured in mode train only
        spec = _spec_bytes(workload, dtype)
        factor = {"torch": 1.4, "keras": 1.6, "jax": 1.9}[FRAMEWORK[variant]]
        share = {"increase": 1.0, "warm_step": 0.8, "held": 0.25}[short[len("track_train_rss_"):-len("_bytes")]]
        return (spec * factor + 20e6) * share
    if short == "peakmem_step":
        return (250e6 if FRAMEWORK[variant] != "keras" else 700e6) + b * t * 3e6 * (2 if mode == "train" else 1)
    raise KeyError(name)


def write_sample(
    root: str | Path,
    *,
    commits: int = 3,
    missing: tuple[str, ...] = ("flax-linen",),
    failed: tuple[tuple[str, str, str], ...] = (("keras-builtin", "radar", "train"),),
    seed: int = 0,
    use_asv: bool = True,
    with_environment: bool = True,
    with_parity: bool = True,
) -> dict[str, Path]:
    """Write ``root/asv/results/...``, ``root/asv/environment.json`` and ``root/parity/parity-*.json``.

    ``missing`` variants are NaN everywhere (their framework "is not installed"); ``failed`` (variant, workload,
    mode) combinations have ``null`` Metrics results; ``Broken.time_broken`` fails as a whole (``result: null``).
    """
    root = Path(root)
    results = root / "asv" / "results"
    mdir = results / MACHINE
    mdir.mkdir(parents=True, exist_ok=True)
    (results / "benchmarks.json").write_text(json.dumps({**BENCHMARKS, "version": 2}, indent=1))
    (mdir / "machine.json").write_text(json.dumps({
        "arch": "x86_64", "cpu": "Sample CPU @ 2.0GHz", "machine": MACHINE, "num_cpu": "2",
        "os": "Linux 6.1", "ram": "25276502016", "version": 1}, indent=4))
    rnd = random.Random(seed)
    shas = [f"{i + 1:x}" * 40 for i in range(commits)]
    shas = [s[:40] for s in shas]
    missing_set, failed_set = set(missing), set(failed)
    t0 = 1_790_000_000_000
    for ci, sha in enumerate(shas):
        files = _write_commit(results, sha, t0 + ci * 86_400_000, ci, rnd, missing_set, failed_set, use_asv)
    out = {"results": results, "files": files}
    if with_environment:
        out["environment"] = _write_environment(root / "asv" / "environment.json", shas[-1], missing_set,
                                                _comparisons(commits - 1, missing_set, failed_set))
    if with_parity:
        out["parity"] = write_parity(root / "parity")
    return out


def _write_commit(results: Path, sha: str, date: int, ci: int, rnd: random.Random, missing: set[str],
                  failed: set[tuple], use_asv: bool) -> Path:
    env_name = "existing-py_sample_bin_python"
    params = {"machine": MACHINE, "python": "/sample/bin/python"}
    per_bench = {}
    for name, meta in BENCHMARKS.items():
        vals = [[ast.literal_eval(v) for v in vs] for vs in meta["params"]]
        combos = list(itertools.product(*vals)) if vals else [()]
        result, samples, number = [], [], []
        for combo in combos:
            v = _value(name, combo, ci, rnd, missing, failed)
            if meta["type"] == "time" and v is not None and not (isinstance(v, float) and math.isnan(v)):
                reps = [v * (1 + 0.06 * rnd.random()) for _ in range(7)]
                result.append(min(reps))
                samples.append(reps)
                number.append(1)
            else:
                result.append(v)
                samples.append(None)
                number.append(None)
        per_bench[name] = (meta, result, samples, number)
    started = date + 3_600_000
    if use_asv:
        from asv.results import Results
        from asv.runner import BenchmarkResult

        res = Results(params, {}, sha, date, "/sample/bin/python", env_name, {})
        for name, (meta, result, samples, number) in per_bench.items():
            import datetime as dt

            res.add_result(
                {"name": name, "version": meta["version"], "params": meta["params"]},
                BenchmarkResult(result=result, samples=samples, number=number, errcode=0, stderr="", profile=None),
                started_at=dt.datetime.fromtimestamp(started / 1000, tz=dt.UTC),
                duration=1.5,
                record_samples=True,
            )
        res.save(str(results))
        return results / MACHINE / f"{sha[:8]}-{env_name}.json"
    return _write_compact(results, sha, date, started, params, env_name, per_bench)


def _write_compact(results, sha, date, started, params, env_name, per_bench) -> Path:
    """The same file without asv: median and quartiles of the samples, no CI (keeps the format)."""
    rows = {}
    for name, (meta, result, samples, number) in per_bench.items():
        stats = {k: [] for k in ("ci_99_a", "ci_99_b", "q_25", "q_75", "number", "repeat")}
        res = []
        for r, s, n in zip(result, samples, number):
            if s:
                s = sorted(s)
                med = s[len(s) // 2]
                res.append(med)
                for k, v in (("ci_99_a", s[0]), ("ci_99_b", s[-1]), ("q_25", s[len(s) // 4]),
                             ("q_75", s[(3 * len(s)) // 4]), ("number", n), ("repeat", len(s))):
                    stats[k].append(v)
            else:
                res.append(r)
                for k in stats:
                    stats[k].append(None)
        if all(x is None for x in res):
            res = None
        cols = [res, meta["params"], meta["version"], started, 1.5]
        cols += [None if all(x is None for x in stats[k]) else stats[k]
                 for k in ("ci_99_a", "ci_99_b", "q_25", "q_75", "number", "repeat")]
        cols += [None if all(not x for x in samples) else samples, None]
        while cols and cols[-1] is None:
            cols.pop()
        rows[name] = cols
    data = {"commit_hash": sha, "env_name": env_name, "date": date, "params": params, "python": "/sample/bin/python",
            "requirements": {}, "env_vars": {},
            "result_columns": ["result", "params", "version", "started_at", "duration", "stats_ci_99_a",
                               "stats_ci_99_b", "stats_q_25", "stats_q_75", "stats_number", "stats_repeat",
                               "samples", "profile"],
            "results": rows, "durations": {}, "version": 2}
    path = results / MACHINE / f"{sha[:8]}-{env_name}.json"
    path.write_text(json.dumps(data))
    return path


def _write_environment(path: Path, sha: str, missing: set[str], comparisons: dict[str, Any]) -> Path:
    variants = {}
    for v in VARIANTS:
        if v in missing:
            continue
        fw = FRAMEWORK[v]
        versions = {"torch": {"torch": "2.13.0+cpu"}, "keras": {"keras": "3.15.1", "tensorflow": "2.21.0"},
                    "jax": {"jax": "0.10.2", "jaxlib": "0.10.2", "flax": "0.12.8"}}[fw]
        variants[v] = {"framework": fw, "role": ROLES[v], "description": f"sample {v}", "versions": versions,
                       "device": "cpu:0", "device_kind": "cpu", "device_name": "Sample CPU",
                       "options": {"jit": fw != "torch"}}
    cases = {}
    for v, w, m, d in itertools.product(VARIANTS, WORKLOADS, MODES, DTYPES):
        if v in missing or not selected((v, w, m, d)):
            continue
        b, t = WORKLOADS[w]
        cases[f"{v}/{w}/{m}/{d}"] = {"variant": v, "workload": w, "mode": m, "dtype": d,
                                     "input_shape": [b, t, 8, 8, 2], "first_call_seconds": 0.5,
                                     "verify": {"max_abs_err": 3e-8, "atol": 1e-4}}
    alts = "|".join(VARIANTS).replace("-", "\\-")
    ours = "|".join(v for v in VARIANTS if ROLES[v] == "ours").replace("-", "\\-")
    bench = []
    for w, m in itertools.product(WORKLOADS, MODES):
        bench += ["--bench", f"\\('({alts})', '{w}', '{m}', 'float32'\\)$",
                  "--bench", f"\\('({ours})', '{w}', '{m}', 'bfloat16'\\)$"]
    bench += ["--bench", f"\\.peakmem_import\\('({alts})'\\)$", "--bench", "track_predicted_activation_bytes",
              "--bench", "time_broken"]
    env = {
        "schema": "convlstm-bench/asv-environment", "schema_version": 1, "updated_at": _stamp(SAMPLE_DAY, 10),
        "host": {"hostname": "sample", "platform": "Linux-6.1-x86_64-with-glibc2.36", "python": "3.11.7",
                 "cpu": "Sample CPU @ 2.0GHz", "cpu_count": 2, "memory_bytes": 25276502016},
        "run": {"profile": "sample", "commit": sha, "machine": MACHINE, "started_at": _stamp(SAMPLE_DAY, 9, 50),
                "finished_at": _stamp(SAMPLE_DAY, 10), "wall_seconds": 600.0, "returncode": 0,
                "asv_command": ["python", "-m", "asv", "run", "--set-commit-hash", sha, *bench]},
        "variants": variants,
        "cases": cases,
        "comparisons": comparisons,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(env, indent=1))
    return path


PARITY_LABELS = ["torch", "keras[tensorflow]", "jax"]
PARITY_CASES = ["1layer_k3_same", "2layers_even_k2x4", "3layers_mixed"]


def parity_records(fail: bool = True) -> list[dict[str, Any]]:
    """Records in the schema of ``parity_tests/conftest.py``; one of them beyond tolerance when ``fail``."""
    rnd = random.Random(1)
    recs = []

    def rec(kind, a, b, case, dtype, atol, tensor="outputs", scale=0.05):
        max_abs = atol * scale * (0.2 + rnd.random())
        recs.append({"kind": kind, "a": a, "b": b, "case": case, "dtype": dtype, "tensor": tensor,
                     "max_abs": max_abs, "max_rel": max_abs * 3, "bound": atol, "atol": atol, "rtol": 0.0,
                     "reason": f"{dtype} rounding (sample)", "passed": max_abs <= atol})

    for case in PARITY_CASES:
        for a in PARITY_LABELS:
            rec("forward", a, "reference", case, "float32", 1e-5, tensor="h/0")
            rec("forward", a, "reference", case, "float64", 1e-10, scale=0.001)
            rec("grad_fd", a, "reference-fd", case, "float64", 1e-6, tensor="grad/kernel/0")
        for a, b in itertools.combinations(PARITY_LABELS, 2):
            rec("cross", a, b, case, "float32", 1e-5, tensor="c/0")
            rec("grad_cross", a, b, case, "float32", 1e-4, tensor="grad/input")
    rec("interop", "torch", "flax", "conv1d-k3", "float32", 1e-5)
    if fail:
        bad = recs[0]
        bad.update(max_abs=bad["bound"] * 3.2, passed=False)
    return recs


def write_parity(parity_dir: str | Path, records: list[dict[str, Any]] | None = None,
                 backend: str = "tensorflow") -> Path:
    parity_dir = Path(parity_dir)
    parity_dir.mkdir(parents=True, exist_ok=True)
    path = parity_dir / f"parity-{backend}.json"
    path.write_text(json.dumps({"created": _stamp(SAMPLE_DAY, 9), "machine": "Linux-sample", "python": "3.11.7",
                                "keras_backend": backend,
                                "records": parity_records() if records is None else records}, indent=1))
    return path
