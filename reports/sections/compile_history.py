"""The compile section (first-call wall time per variant) and the history section (key benchmarks over commits)."""

from __future__ import annotations

from typing import Any

from .. import render as R
from ..bench_charts import facet_charts, legend_row, value_fn
from ..columns import folded, measure_columns, note_column, pretty, render_table, short, variant_columns
from ..context import ROLE_RANK, Ctx, facet_title, facets, series_in
from ..render import esc, na


def section_compile(ctx: Ctx) -> str:
    """First call (tracing, compilation, one execution) per variant and facet."""
    parts = ['<section id="compile"><h2>Compile / first call</h2>']
    comp = ctx.grid_benchmarks("compile")
    if not comp:
        parts.append(f"<p>{na('no compile / first-call benchmark (track_*first_call* / track_*compile*) results')}"
                     "</p></section>")
        return "".join(parts)
    measures = [{"name": pretty(short(b)), "bench": b, "unit": "seconds", "color": R.MEASURE_COLORS[i % 6]}
                for i, b in enumerate(comp)]
    parts.append('<p class="lead">Wall time of the first call on the benchmark input: tracing, compilation (XLA, '
                 "tf.function, inductor) and one execution. Paid once per process and input shape.</p>")
    fs = [(f, series_in(ctx, f)) for f in facets(ctx)]
    parts.append(legend_row(ctx, fs) if len(measures) == 1 else
                 f'<div class="legendrow">{R.measure_legend(measures)}</div>')
    charts, rows = facet_charts(ctx, measures, "seconds", "seconds (lower is better)", value_fn(ctx))
    parts.append(charts)
    cols = (variant_columns(ctx) + measure_columns(measures, [short(b) + "_seconds" for b in comp], R.fmt_seconds)
            + [note_column()])
    parts.append(folded(f"Table: first-call times ({len(rows)} rows)", render_table(ctx.page, "compile", cols, rows)))
    parts.append("</section>")
    return "".join(parts)


def section_history(ctx: Ctx) -> str:
    """Throughput, step time and first call of every variant over the commits with results on this machine."""
    parts = ['<section id="history"><h2>History</h2>']
    commits = ctx.asv.commits(ctx.machine)
    if len(commits) < 2:
        have = ", ".join(c["commit"][:8] for c in commits) or "none"
        why = f"a trend needs results for at least 2 commits on {ctx.machine}; found {len(commits)} ({have})"
        parts.append(f"<p>{na(why)}</p></section>")
        return "".join(parts)
    order = {c["commit"]: i for i, c in enumerate(commits)}
    labels = [c["commit"][:8] for c in commits]
    rows = [r for r in ctx.asv.rows if r["machine"] == ctx.machine and r["status"] == "ok"]
    key_names = [ctx.grid_benchmarks("throughput"),
                 ctx.bench_names(lambda n, s, m: m.get("type") == "time" and m.get("param_names") == ctx.grid),
                 ctx.grid_benchmarks("compile")]
    shown = [names[0] for names in key_names if names]
    parts.append(f'<p class="lead">{len(commits)} commits on {esc(ctx.machine)}, oldest to newest; one line per '
                 f"variant. Hover a point for its value.</p>")
    for bench in shown:
        parts.append(_history_charts(ctx, bench, rows, order, labels))
    parts.append(_history_table(ctx, rows, order))
    parts.append("</section>")
    return "".join(parts)


def _history_charts(ctx: Ctx, bench: str, rows: list[dict[str, Any]], order: dict[str, int],
                    labels: list[str]) -> str:
    """One line chart per facet of ``bench``: a line per variant over the commits."""
    unit = ctx.meta(bench).get("unit") or ""
    out = f"<h3>{esc(pretty(short(bench)))} <span class=\"muted\">({esc(unit)})</span></h3>"
    charts = []
    by_facet: dict[tuple, dict[str, list]] = {}
    for r in rows:
        if r["benchmark"] != bench:
            continue
        facet = tuple(r["params"].get(p) for p in ctx.facet_params)
        label = r["params"].get(ctx.series_param, "")
        if ctx.multi_env:
            label = f"{label} · {r['params'].get('env')}"
        by_facet.setdefault(facet, {}).setdefault(label, []).append((order[r["commit"]], r["value"], r["env_name"]))
    for facet in [f for f in facets(ctx) if f in by_facet] + [f for f in by_facet if f not in facets(ctx)]:
        series = []
        for k, (label, pts) in enumerate(sorted(by_facet[facet].items(),
                                                key=lambda kv: (ROLE_RANK.get(ctx.role(kv[0]), 3), kv[0]))):
            series.append({"label": label, "points": sorted((i, v, "") for i, v, _ in pts),
                           "color": R.LINE_COLORS[k % len(R.LINE_COLORS)]})
        charts.append(f"<figure>{R.line_chart(facet_title(ctx, facet), labels, series, unit, axis_label=unit)}"
                      f"</figure>")
    return out + f'<div class="grid2">{"".join(charts)}</div>'


def _history_table(ctx: Ctx, rows: list[dict[str, Any]], order: dict[str, int]) -> str:
    """Counts per benchmark in the page; the CSV holds every value of every commit, so its rows differ from the
    page's and the table is written directly (not from one column list)."""
    csv, counts = [], {}
    for r in sorted(rows, key=lambda r: (r["benchmark"], tuple(r["params"].values()), order[r["commit"]])):
        csv.append([r["benchmark"], ", ".join(f"{k}={v}" for k, v in r["params"].items()), r["commit"], r["date"],
                    r["env_name"], r["value"], r["unit"]])
        c = counts.setdefault(r["benchmark"], [set(), set(), 0])
        c[0].add(tuple(r["params"].values()))
        c[1].add(r["commit"])
        c[2] += 1
    table_rows = [[f"<code>{esc('.'.join(b.rsplit('.', 2)[-2:]))}</code>", f'<span class="num">{len(c[0])}</span>',
                   f'<span class="num">{len(c[1])}</span>', f'<span class="num">{c[2]}</span>']
                  for b, c in counts.items()]
    return ctx.page.table("history", [("benchmark", ""), ("parameter combinations", "num"),
                                      ("commits", "num"), ("values", "num")], table_rows,
                          csv_columns=["benchmark", "params", "commit", "date", "env", "value", "unit"],
                          csv_rows=csv, caption="the CSV holds every value of every commit on this machine")
