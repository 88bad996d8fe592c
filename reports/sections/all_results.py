"""The table of every result of the reported run (failed and skipped ones with their reason)."""

from __future__ import annotations

from typing import Any

from .. import render as R
from ..columns import Column, column, csv_only, page_only, render_table
from ..context import Ctx
from ..render import esc, na


def section_all(ctx: Ctx) -> str:
    """Every result of the reported commit in scope of the profile: value, spread, repeats, status."""
    parts = ['<section id="results"><h2>All results of this run</h2>']
    if not ctx.rows:
        parts.append(f"<p>{na('no asv results (reports/asv/results is missing or empty): run make bench')}</p>"
                     "</section>")
        return "".join(parts)
    si = ctx.grid.index(ctx.series_param) if ctx.series_param in ctx.grid else None
    active_series = {k[si] for k in ctx.active} if si is not None else set()
    keep = []
    for r in ctx.rows:
        in_scope = (r["status"] in ("ok", "failed") or r["selected"]
                    or (r["param_names"] == ctx.grid and tuple(r["params"][n] for n in ctx.grid)
                        + ((r["params"]["env"],) if ctx.multi_env else ()) in ctx.active)
                    or (r["param_names"] == [ctx.series_param] and r["params"].get(ctx.series_param) in active_series))
        if in_scope:
            keep.append(r)
    hidden = len(ctx.rows) - len(keep)
    parts.append(render_table(
        ctx.page, "all-results", _columns(), keep, row_class=lambda r: "fail" if r["status"] == "failed" else "",
        max_height=True, caption=f"{len(keep)} rows of commit {(ctx.commit or '')[:8]}"
        + (f"; {hidden} combinations not selected by the profile are left out" if hidden else "")))
    parts.append("</section>")
    return "".join(parts)


def _value_html(r: dict[str, Any]) -> str:
    if r["status"] == "ok":
        return f'<span class="num">{esc(R.formatter(r["unit"])(r["value"]))}</span>'
    return na(r["reason"], "failed" if r["status"] == "failed" else "n/a")


def _iqr_html(r: dict[str, Any]) -> str:
    fmt = R.formatter(r["unit"])
    spread = (f"{fmt(r['q_25'])} – {fmt(r['q_75'])}" if r["q_25"] is not None and r["q_75"] is not None else "")
    return f'<span class="num">{esc(spread)}</span>'


def _params(r: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in r["params"].items())


def _columns() -> list[Column]:
    """The page shows the formatted value, its spread and status; the CSV every raw field, in its own order."""
    return [
        column("benchmark", "benchmark", lambda r: f"<code>{esc('.'.join(r['benchmark'].rsplit('.', 2)[-2:]))}</code>",
               lambda r: r["benchmark"]),
        column("parameters", "params", lambda r: esc(_params(r)), _params),
        csv_only(["unit", "status"], lambda r: [r["unit"], r["status"]]),
        column("value", "value", _value_html, lambda r: r["value"], "num"),
        csv_only(["ci_99_low", "ci_99_high"], lambda r: [r["ci_99_a"], r["ci_99_b"]]),
        Column("IQR", ("q25", "q75"), lambda r: (_iqr_html(r), (r["q_25"], r["q_75"])), "num"),
        column("repeats", "repeats", lambda r: f'<span class="num">{int(r["repeat"]) if r["repeat"] else ""}</span>',
               lambda r: r["repeat"], "num"),
        page_only("unit", lambda r: esc(r["unit"])),
        page_only("status", lambda r: esc(r["status"]) + (" (stale version)" if r["stale"] else "")),
        csv_only(["number", "reason", "commit", "machine", "env"],
                 lambda r: [r["number"], r["reason"], r["commit"], r["machine"], r["env_name"]]),
    ]
