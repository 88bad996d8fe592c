"""The README's results table, generated from the latest ``make bench`` run (never edited by hand).

    .venv/bin/python -m reports.results_table [--env reports/asv/environment.json] [--readme README.md]

Reads the paired comparisons of ``environment.json`` (written by the benchmarks' Metrics processes) and writes,
between the README's ``<!-- results:begin -->`` and ``<!-- results:end -->`` markers, one row per one of ours and
workload/mode: its step time and the fastest peer's of the same framework, their ratio with its 95 % interval and
the verdict, with a caption naming the machine, the date, the commit and the profile. Without ``--readme`` the
table is printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def _fmt_ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


def table(env: dict[str, Any]) -> str:
    """Markdown: caption, then the ours-vs-best-peer rows of every paired comparison in ``env``."""
    comparisons = env.get("comparisons") or {}
    run, host = env.get("run") or {}, env.get("host") or {}
    rows = []
    for entry in sorted(comparisons.values(), key=lambda e: (e["workload"], e["mode"], e["dtype"])):
        for ours, found in sorted((entry.get("ours") or {}).items()):
            v = found["vs_best_peer"]
            peer = v["peer"]
            est = "—" if v.get("low") is None else f"{v['ratio']:.2f}× [{v['low']:.2f}, {v['high']:.2f}]"
            rows.append(f"| {entry['workload']} | {entry['mode']} | {entry['dtype']} | {ours} | {peer} | "
                        f"{_fmt_ms(entry['variants'][ours]['step_seconds'])} | "
                        f"{_fmt_ms(entry['variants'][peer]['step_seconds'])} | {est} | **{v['verdict']}** | "
                        f"{v['rounds_used']} / {v['rounds_dropped']} |")
    if not rows:
        return "_No paired comparison yet: run `make bench`, then `make readme-results`._"
    date = str(run.get("finished_at") or env.get("updated_at") or "unknown date")[:10]
    cpu = f"{host.get('cpu', 'unknown CPU')}, {host.get('cpu_count', '?')} CPUs"
    wall = f", {run['wall_seconds'] / 60:.1f} min" if run.get("wall_seconds") else ""
    caption = (f"`make bench` (profile {run.get('profile', '?')}{wall}) at commit "
               f"`{str(run.get('commit') or '?')[:8]}` on {cpu}, {date}. Step times: median over the clean paired "
               "rounds (ms). Ratio: peer time ÷ our time (above 1: ours is faster), 95 % interval; a verdict only "
               "when the interval excludes 1. Regenerate: `make readme-results`.")
    head = ("| workload | mode | dtype | ours | best peer | ours ms | peer ms | ours ÷ peer [95 % CI] | verdict "
            "| rounds used / dropped |\n|---|---|---|---|---|---:|---:|---|---|---:|")
    return "\n".join([caption, "", head, *rows])


def replace_between_markers(text: str, body: str) -> str:
    """``text`` with what stands between the results markers replaced by ``body``; ValueError without them."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the README has no {BEGIN} ... {END} markers")
    return text[: start + len(BEGIN)] + "\n" + body + "\n" + text[end:]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports.results_table", description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", type=Path, default=Path("reports/asv/environment.json"))
    parser.add_argument("--readme", type=Path, default=None, help="rewrite this file's results section in place")
    args = parser.parse_args(argv)
    try:
        env = json.loads(args.env.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"error: cannot read {args.env}: {exc}; run make bench first", file=sys.stderr)
        return 2
    body = table(env)
    if args.readme is None:
        print(body)
        return 0
    from implementations.fileio import atomic_open

    try:
        text = replace_between_markers(args.readme.read_text(encoding="utf-8"), body)
    except (OSError, ValueError) as exc:
        print(f"error: {args.readme}: {exc}", file=sys.stderr)
        return 2
    with atomic_open(args.readme, "w", encoding="utf-8") as fh:
        fh.write(text)
    print(f"results table written to {args.readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
