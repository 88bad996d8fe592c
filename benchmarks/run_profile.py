"""Run one benchmark profile end to end (``make bench`` / ``make bench-full``).

    BENCH_PROFILE=quick .venv/bin/python -m benchmarks.run_profile [--machine NAME] [--dry-run] [-- ASV_ARGS]

1. ``asv machine --yes --machine NAME``: NAME is stable for the hardware (``$BENCH_MACHINE``, else built from
   the CPU model, core count and GPU names), not the container's hostname.
2. ``asv run --environment existing:<this python> --set-commit-hash <git HEAD>`` with ``--bench`` regular
   expressions selecting exactly the profile's parameter combinations (unselected ones are not started), so
   the results are saved (asv saves nothing with ``--quick``, and with an existing environment only with
   ``--set-commit-hash``).
3. ``asv publish`` (HTML in reports/asv/html), the run section of reports/asv/environment.json, a short text
   summary, and the report builder (``convlstm-bench report``) when the installed CLI has one.

The working tree is what runs (the editable install of ``implementations`` and this ``benchmarks`` directory);
the results are filed under the HEAD commit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from implementations.api import cpu_name
from implementations.workloads import get_workload

from .environment import update_environment_file, utc_now
from .grid import VARIANTS, WORKLOADS, Profile, active_profile, asv_regexes

ROOT = Path(__file__).resolve().parent.parent


def machine_name() -> str:
    """``$BENCH_MACHINE``, else ``<cpu model>-<n>cpu[-<gpu names>]`` made filename-safe."""
    if os.environ.get("BENCH_MACHINE"):
        return os.environ["BENCH_MACHINE"]
    parts = [cpu_name(), f"{os.cpu_count()}cpu"]
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20).stdout
            gpus = [line.split(":", 1)[1].split("(")[0].strip() for line in out.splitlines() if ":" in line]
            if gpus:
                parts.append(f"{len(gpus)}x{gpus[0]}")
        except (OSError, subprocess.SubprocessError):
            pass
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", "-".join(parts)).strip("-").lower()
    return slug[:80] or "convlstm-bench-machine"


def git_head(root: Path) -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(
            f"run_profile: cannot read the git HEAD of {root} ({exc}); asv files results by commit"
        ) from None


def asv_run_command(
    python: str, commit: str, machine: str, profile: Profile, extra: Sequence[str], only: str | None = None
) -> list[str]:
    cmd = [
        python, "-m", "asv", "run",
        "--config", str(ROOT / "asv.conf.json"),
        "--environment", f"existing:{python}",
        "--set-commit-hash", commit,
        "--machine", machine,
        "--launch-method", "spawn",
        "--show-stderr",
    ]  # fmt: skip
    for regex in asv_regexes(profile, only):
        cmd += ["--bench", regex]
    return cmd + list(extra)


def results_file(machine: str, commit: str) -> Path | None:
    """The asv results file of this machine and commit (existing environment), newest first."""
    folder = ROOT / "reports" / "asv" / "results" / machine
    found = sorted(folder.glob(f"{commit[:8]}-existing*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    return found[0] if found else None


def load_results(path: Path) -> dict[str, dict[tuple[str, ...], Any]]:
    """asv results JSON -> {benchmark name: {param tuple: value}} (NaN/None for skipped or failed), read by the
    report's reader (:func:`reports.asv_data.read_result_file`)."""
    import itertools

    from reports import asv_data

    out: dict[str, dict[tuple[str, ...], Any]] = {}
    for name, bench in asv_data.read_result_file(path)["benchmarks"].items():
        params = bench["params"]
        keys = list(itertools.product(*params)) if params else [()]
        out[name] = {tuple(asv_data.parse_param(p) for p in key): v for key, v in zip(keys, bench["result"])}
    return out


def verdicts_table(comparisons: dict[str, Any]) -> str:
    """Ours against the fastest peer of its framework, from the paired rounds (environment.json ``comparisons``):
    ratio (peer time / our time), 95 % interval, verdict, rounds used and dropped for contention."""
    head = ["workload", "mode", "dtype", "ours", "best peer", "ours ms", "peer ms", "x best peer [95% CI]",
            "verdict", "rounds used/dropped"]
    rows = []
    for _, entry in sorted(comparisons.items(), key=lambda kv: (kv[1]["workload"], kv[1]["mode"], kv[0])):
        for ours, found in sorted(entry.get("ours", {}).items()):
            v = found["vs_best_peer"]
            est = "n/a" if v.get("low") is None else f"{v['ratio']:.3f} [{v['low']:.3f}, {v['high']:.3f}]"
            ms = {name: entry["variants"][name]["step_seconds"] * 1e3 for name in (ours, v["peer"])}
            rows.append([entry["workload"], entry["mode"], entry["dtype"], ours, v["peer"], f"{ms[ours]:.2f}",
                         f"{ms[v['peer']]:.2f}", est, v["verdict"], f"{v['rounds_used']}/{v['rounds_dropped']}"])
    if not rows:
        return "no paired comparisons in this run"
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    lines = [" | ".join(str(x).ljust(w) for x, w in zip(r, widths)) for r in [head, *rows]]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    lines.append("x best peer: geometric mean over the clean paired rounds of peer time / our time (above 1: ours is "
                 "faster), Student-t 95 % interval;\na verdict only when the interval excludes 1.")
    return "\n".join(lines)


def summary_table(results: dict[str, dict[tuple[str, ...], Any]]) -> str:
    """A compact text table of the profile's rows: ms/step, sequences/s, fraction of conv peak, first call, RSS."""

    def pick(suffix: str) -> dict[tuple[str, ...], Any]:
        for name, values in results.items():
            if name.endswith(suffix):
                return values
        return {}

    time_ = pick(".TimeStep.time_step")
    seqs = pick(".Metrics.track_sequences_per_second")
    frac = pick(".Metrics.track_fraction_of_conv_peak")
    first = pick(".Metrics.track_first_call_seconds")
    rss = pick(".PeakMemory.peakmem_step")
    base = pick(".ImportBaseline.peakmem_import")
    train_inc = pick(".TrainMemory.track_train_rss_increase_bytes")
    faults = pick(".PageFaults.track_minor_faults_per_step")

    def num(v: Any) -> float | None:
        return v if isinstance(v, (int, float)) and v == v else None

    rows = []
    def order(k: tuple[str, ...]) -> tuple[Any, ...]:
        return (k[1], k[2], k[3], VARIANTS.index(k[0]) if k[0] in VARIANTS else 99)

    for key in sorted(time_, key=order):
        t = num(time_[key])
        if t is None:
            continue
        b = num(base.get((key[0],)))
        r = num(rss.get(key))
        sq = num(seqs.get(key))
        batch = get_workload(key[1]).batch if key[1] in WORKLOADS else None
        rows.append(
            [
                key[1], key[2], key[3], key[0],
                f"{t * 1e3:.2f}",
                _fmt(batch / sq * 1e3 if sq and batch else None, "{:.2f}"),
                _fmt(sq, "{:.1f}"),
                _fmt(num(frac.get(key)), "{:.3f}"),
                _fmt(num(first.get(key)), "{:.2f}"),
                _fmt(r / 2**20 if r else None, "{:.0f}"),
                _fmt((r - b) / 2**20 if r and b else None, "{:.0f}"),
                _fmt(num(train_inc.get(key)) / 2**20 if num(train_inc.get(key)) else None, "{:.0f}"),
                _fmt(num(faults.get(key)), "{:.0f}"),
            ]
        )  # fmt: skip
    head = ["workload", "mode", "dtype", "variant", "ms/step", "ms/step (paired)", "seq/s (paired)",
            "frac conv peak", "first call s", "RSS MiB", "RSS-import MiB", "train RSS increase MiB",
            "page faults/step"]  # fmt: skip
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)] if rows else [len(h) for h in head]
    lines = [" | ".join(str(x).ljust(w) for x, w in zip(r, widths)) for r in [head, *rows]]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    lines.append("ms/step: asv's TimeStep median (a process of its own). The (paired) columns, frac conv peak and "
                 "first call come from the Metrics process,\nwhich times the variants of one framework in interleaved "
                 "rounds; where the two ms/step differ, the machine's speed differed between the processes.\n"
                 "train RSS increase: TrainMemory, peak RSS over the build in a fresh process of its own (train "
                 "only).\npage faults/step: PageFaults, minor faults per timed step in the Metrics process.")
    return "\n".join(lines)


def _fmt(value: float | None, pattern: str) -> str:
    return "n/a" if value is None else pattern.format(value)


_NA_ROW = re.compile(r"\s(n/a|skipped)\s*$")


def run_logged(cmd: Sequence[str], env: dict[str, str], log_path: Path) -> int:
    """Run ``cmd``, keep its whole output in ``log_path`` and echo it without the rows of unselected
    combinations (asv prints one ``n/a`` row for every parameter combination of every benchmark)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log, subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if not _NA_ROW.search(line):
                sys.stdout.write(line)
                sys.stdout.flush()
        rc = proc.wait()
    print(f"(full asv output: {log_path})")
    return rc


def report_available(python: str) -> bool:
    """Whether the installed CLI has a ``report`` command (it belongs to the reports work, maybe not there yet)."""
    try:
        proc = subprocess.run(
            [python, "-m", "convlstm_bench", "report", "--help"], capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--machine", default=None, help="asv machine name (default: $BENCH_MACHINE or derived)")
    parser.add_argument("--dry-run", action="store_true", help="print the asv commands and exit")
    parser.add_argument("--no-report", action="store_true", help="skip asv publish and the report builder")
    parser.add_argument("--only", default=None, help="regex the benchmark names must also match, e.g. TimeStep")
    parser.add_argument("asv_args", nargs="*", help="extra arguments for asv run (after --)")
    args = parser.parse_args(argv)

    profile = active_profile()
    python = sys.executable
    machine = args.machine or machine_name()
    commit = git_head(ROOT)
    env = dict(os.environ, BENCH_PROFILE=profile.name)
    asv = [python, "-m", "asv"]
    machine_cmd = [*asv, "machine", "--yes", "--machine", machine, "--config", str(ROOT / "asv.conf.json")]
    run_cmd = asv_run_command(python, commit, machine, profile, args.asv_args, args.only)
    print(f"profile {profile.name}: {len(profile.combos)} combination(s); machine {machine}; commit {commit[:8]}")
    if args.dry_run:
        print(" ".join(machine_cmd))
        print(" ".join(repr(c) if c.startswith("\\") or "(" in c else c for c in run_cmd))
        return 0

    subprocess.run(machine_cmd, cwd=ROOT, env=env, check=True)
    started, t0 = utc_now(), time.perf_counter()
    log_path = ROOT / "reports" / "asv" / f"asv-run-{profile.name}.log"
    rc = run_logged(run_cmd, env, log_path)
    wall = time.perf_counter() - t0

    def update(data: dict[str, Any]) -> None:
        data["run"] = {
            "profile": profile.name,
            "commit": commit,
            "machine": machine,
            "started_at": started,
            "finished_at": utc_now(),
            "wall_seconds": round(wall, 1),
            "asv_command": run_cmd,
            "returncode": rc,
        }

    env_file = update_environment_file(update)
    found = results_file(machine, commit)
    print(f"\nasv run finished in {wall / 60:.1f} min (exit status {rc})")
    if found:
        print(summary_table(load_results(found)))
    with contextlib.suppress(OSError, ValueError):
        print("\n" + verdicts_table(json.loads(env_file.read_text()).get("comparisons") or {}))
    if not args.no_report:
        pub = subprocess.run([*asv, "publish", "--config", str(ROOT / "asv.conf.json")], cwd=ROOT, env=env)
        if pub.returncode != 0:
            print("note: asv publish failed; the results JSON is still complete")
        if report_available(python):
            # The same arguments as the Makefile's `report` target.
            report_cmd = [python, "-m", "convlstm_bench", "report", "--results", "reports/asv/results",
                          "--parity", "reports/parity", "-o", "reports/html/index.html"]  # fmt: skip
            print("building the report: convlstm-bench report")
            if subprocess.run(report_cmd, cwd=ROOT, env=env).returncode != 0:
                print("note: convlstm-bench report failed; the asv results are complete")
        else:
            print("note: no report builder yet (`convlstm-bench report` is not available); asv results are complete")
    print(f"results:      {found or ROOT / 'reports' / 'asv' / 'results' / machine}")
    print(f"environment:  {env_file}")
    print(f"html:         {ROOT / 'reports' / 'asv' / 'html' / 'index.html'} (asv preview --config asv.conf.json)")
    return rc


if __name__ == "__main__":
    sys.exit(main())
