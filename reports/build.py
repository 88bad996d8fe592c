"""Build ``reports/html/index.html`` from asv results, ``reports/asv/environment.json`` and parity records.

    from reports.build import build_report
    build_report("reports/asv/results", "reports/parity", "reports/html/index.html")

Benchmarks are recognised by asv type and name patterns (``time_*``, ``track_*sequences_per_second*``/
``*throughput*``, ``track_*fraction*``/``*efficiency*``, ``peakmem_*``, ``track_*device*``, ``track_*first_call*``/
``*compile*``, ``track_*predicted*``, ``track_train_rss_*``, ``track_*faults_per_step*``), parameters by
``param_names`` in ``benchmarks.json``: the series of a chart is the ``variant`` parameter (else the first), the
other parameters of the grid make the facets. Nothing missing crashes the page: absent inputs, failed and skipped
benchmarks and missing frameworks show as ``n/a`` with the reason.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import render as R
from .bench_charts import same_framework_ratios
from .context import (
    DISAGREE,
    PATTERNS,
    ROLE_RANK,
    TOO_FEW,
    TRAIN_MEM_NAMES,
    VERDICTS,
    Ctx,
    facet_title,
    facets,
    make_context,
    never_run,
    series_in,
)
from .render import esc
from .sections import (
    section_all,
    section_compile,
    section_efficiency,
    section_environment,
    section_history,
    section_memory,
    section_overview,
    section_parity,
    section_throughput,
)
from .sections.throughput import verdict_text

__all__ = ["DISAGREE", "PATTERNS", "ROLE_RANK", "TOO_FEW", "TRAIN_MEM_NAMES", "VERDICTS", "Ctx", "add_arguments",
           "build_report", "facet_title", "facets", "main", "make_context", "never_run", "render_report", "run",
           "same_framework_ratios", "section_all", "section_compile", "section_efficiency", "section_environment",
           "section_history", "section_memory", "section_overview", "section_parity", "section_throughput",
           "series_in", "verdict_text"]

DEFAULT_RESULTS = Path("reports/asv/results")
DEFAULT_PARITY = Path("reports/parity")
DEFAULT_OUTPUT = Path("reports/html/index.html")


def render_report(
    results_dir: str | Path = DEFAULT_RESULTS,
    parity_dir: str | Path = DEFAULT_PARITY,
    *,
    env_file: str | Path | None = None,
    machine: str | None = None,
    loader: str = "json",
    title: str = "ConvLSTM benchmark report",
    generated: str | None = None,
) -> str:
    """The report as one HTML string."""
    results_dir, parity_dir = Path(results_dir), Path(parity_dir)
    env_path = Path(env_file) if env_file else results_dir.parent / "environment.json"
    ctx = make_context(results_dir, parity_dir, env_path, machine, loader)
    generated = generated or _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    throughput = section_throughput(ctx)  # first: the overview quotes its winners
    sections = [
        section_overview(ctx),
        section_environment(ctx, generated),
        section_parity(ctx),
        throughput,
        section_efficiency(ctx),
        section_memory(ctx),
        section_compile(ctx),
        section_history(ctx),
        section_all(ctx),
    ]
    nav = [("overview", "Overview"), ("environment", "Environment"), ("parity", "Parity"),
           ("throughput", "Throughput"), ("efficiency", "Efficiency"), ("memory", "Memory"),
           ("compile", "Compile"), ("history", "History"), ("results", "All results")]
    cpu = (ctx.env.get("host") or {}).get("cpu") or ctx.asv.machines.get(ctx.machine or "", {}).get("cpu")
    meta = " · ".join(x for x in (
        f"machine <code>{esc(ctx.machine)}</code>" if ctx.machine else "no benchmark results",
        esc(cpu) if cpu else "",
        f"commit <code>{esc(ctx.commit[:8])}</code>" if ctx.commit else "",
        f"generated {esc(generated)}",
    ) if x)
    footer = ("Built by <code>convlstm-bench report</code> from asv results (reports/asv/results), "
              "reports/asv/environment.json and the parity records of <code>make test</code> (reports/parity). "
              "Self-contained: no external resources.")
    return R.page(title, meta, nav, "".join(sections), ctx.page.data_script(), footer)


def build_report(
    results_dir: str | Path = DEFAULT_RESULTS,
    parity_dir: str | Path = DEFAULT_PARITY,
    output: str | Path = DEFAULT_OUTPUT,
    **kwargs: Any,
) -> Path:
    """Render the report and write it atomically to ``output``; returns the path."""
    from implementations.fileio import atomic_write

    text = render_report(results_dir, parity_dir, **kwargs).encode("utf-8")
    return atomic_write(output, lambda fh: fh.write(text))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m reports.build`` (the same options as ``convlstm-bench report``)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m reports.build", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)
    return run(args)


def add_arguments(p) -> None:
    """Declare the report's options on ``p``: the same names, defaults and help as ``convlstm-bench report``, so
    the command line can take them from here instead of declaring them a second time."""
    p.add_argument("--results", default=str(DEFAULT_RESULTS), help="asv results directory (default: %(default)s)")
    p.add_argument("--parity", default=str(DEFAULT_PARITY), help="parity records directory (default: %(default)s)")
    p.add_argument("--environment", help="benchmark environment JSON (default: <results>/../environment.json)")
    p.add_argument("--machine", help="asv machine to report (default: the one with the newest results)")
    p.add_argument("-o", "--output", default=str(DEFAULT_OUTPUT), help="HTML file, written atomically "
                   "(default: %(default)s)")


def run(args) -> int:
    """Build the report from parsed :func:`add_arguments` options; prints where it was written."""
    out = build_report(args.results, args.parity, args.output, env_file=args.environment, machine=args.machine)
    size = out.stat().st_size
    print(f"wrote {out} ({size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
