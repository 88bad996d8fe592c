"""The efficiency section: achieved GFLOP/s as a fraction of the peak the same framework reaches in-process."""

from __future__ import annotations

from .. import render as R
from ..bench_charts import facet_charts, prune, value_fn
from ..columns import (
    bar_html,
    column,
    folded,
    measure_columns,
    note_column,
    num,
    pretty,
    render_table,
    short,
    variant_columns,
)
from ..context import Ctx, bar_from
from ..render import esc, na


def section_efficiency(ctx: Ctx) -> str:
    """One bar per efficiency measure per variant and facet; the table adds the achieved GFLOP/s."""
    parts = ['<section id="efficiency"><h2>Efficiency</h2>']
    effs = ctx.grid_benchmarks("efficiency")
    gfl = ctx.grid_benchmarks("gflops")
    if not effs:
        parts.append(f"<p>{na('no efficiency benchmark (track_*fraction* / track_*efficiency*) results')}</p>"
                     "</section>")
        return "".join(parts)
    measures = [{"name": pretty(short(b)), "bench": b, "unit": "fraction", "color": R.MEASURE_COLORS[i % 6]}
                for i, b in enumerate(effs)]
    parts.append('<p class="lead">Achieved GFLOP/s (the spec\'s FLOP count ÷ median step time) as a fraction of the '
                 "peak the same framework measured in the same process: a large square matmul and the bare gate "
                 "convolution of the costliest layer. 100 % = as fast as the framework's own best kernel.</p>")
    measures, dropped = prune(ctx, measures, value_fn(ctx))
    parts.append(f'<div class="legendrow">{R.measure_legend(measures)}</div>{dropped}')
    charts, rows = facet_charts(ctx, measures, "fraction", "fraction of measured peak (higher is better)",
                                value_fn(ctx))
    parts.append(charts)
    for row in rows:
        row.extra["gflops"] = [ctx.lookup(g, row.combo) for g in gfl]
    gflops_cols = [column(esc(pretty(short(g))) + " (GFLOP/s)", short(g),
                          lambda r, i=i: num(bar_html(bar_from(r.extra["gflops"][i]), R.sig)),
                          lambda r, i=i: r.extra["gflops"][i]["value"] if r.extra["gflops"][i] else None, "num")
                   for i, g in enumerate(gfl)]
    cols = (variant_columns(ctx) + measure_columns(measures, [short(m["bench"]) for m in measures], R.fmt_percent)
            + gflops_cols + [note_column()])
    parts.append(folded(f"Table: efficiency and GFLOP/s ({len(rows)} rows)",
                        render_table(ctx.page, "efficiency", cols, rows)))
    parts.append("</section>")
    return "".join(parts)
