"""The parity section: error ÷ tolerance matrices per group and dtype, per-case tables, every comparison."""

from __future__ import annotations

from typing import Any

from .. import parity_data
from .. import render as R
from ..columns import Column, column, csv_only, render_table
from ..context import Ctx
from ..render import esc, na


def _cell(rec: dict[str, Any] | None, missing: str | None = None, n: int = 0, diag: bool = False) -> str:
    if diag:
        return '<td class="cell diag" title="same implementation"></td>'
    if rec is None:
        reason = missing or "no comparison recorded (framework unavailable or test not run)"
        bg, fg = R.ratio_color(None)
        return (f'<td class="cell na-cell" style="background:{bg};color:{fg}" title="{esc(reason)}">'
                f'<span class="na">n/a</span></td>')
    bg, fg = R.ratio_color(rec["ratio"])
    tip = (f"{rec['a']} vs {rec['b']} · {rec['dtype']} · worst over {n} comparison(s): case {rec['case']}, "
           f"tensor {rec['tensor']}, max-abs {R.fmt_sci(rec['max_abs'])} vs tolerance {R.fmt_sci(rec['bound'])}")
    status = "" if rec.get("passed") is not False else " ✗"
    return (f'<td class="cell" style="background:{bg};color:{fg}" data-ratio="{esc(rec["ratio"])}">'
            f'<a href="#{rec["id"]}" title="{esc(tip)}"><div class="r">{esc(R.sig(rec["ratio"], 2))}{status}</div>'
            f'<div class="e">{esc(R.fmt_sci(rec["max_abs"]))}</div></a></td>')


def section_parity(ctx: Ctx) -> str:
    """Per group of comparisons: one matrix per dtype, the per-case tables, then every comparison in one table."""
    parts = ['<section id="parity"><h2>Parity</h2>']
    if ctx.parity.empty:
        parts.append(f"<p>{na('no parity records in reports/parity/: run make test')}</p></section>")
        return "".join(parts)
    parts.append('<p class="lead">Cell = worst <i>max-abs error ÷ tolerance</i> over all cases (small number = '
                 "large margin; &gt; 1 fails), with the max-abs error below it. Rows and columns are implementations "
                 "(Keras labelled with its backend); the last columns are the float64 NumPy reference (and, for "
                 "gradients, its finite differences). Click a cell for its worst record.</p>")
    parts.append(R.ratio_legend())
    by_group: dict[str, list[parity_data.Matrix]] = {}
    for m in parity_data.matrices(ctx.parity):
        by_group.setdefault(m.group, []).append(m)
    for gid, ms in by_group.items():
        parts.append(f"<h3>{esc(ms[0].title)}</h3><div class=\"matrices\">")
        parts.extend(_matrix(gid, m) for m in ms)
        parts.append("</div>")
        for m in ms:
            parts.append(_case_table(ctx, gid, ms[0].title, m.dtype))
    parts.append("<h3>Every comparison</h3>")
    parts.append(_records_table(ctx))
    parts.append("</section>")
    return "".join(parts)


def _matrix(gid: str, m: parity_data.Matrix) -> str:
    """One implementation × implementation matrix of the worst error ÷ tolerance."""
    head = "".join(f"<th>{esc(c)}</th>" for c in m.cols)
    body = []
    for r in m.rows:
        cells = "".join(_cell(m.cells[(r, c)], m.missing.get(r), m.n_cases.get((r, c), 0),
                              diag=(r == c and m.cells[(r, c)] is None)) for c in m.cols)
        body.append(f'<tr><th class="rowh">{esc(r)}</th>{cells}</tr>')
    return (f'<div><div class="caption">{esc(m.dtype)}</div><table class="matrix" '
            f'data-group="{esc(gid)}" data-dtype="{esc(m.dtype)}" data-rows="{len(m.rows)}" '
            f'data-cols="{len(m.cols)}"><thead><tr><th></th>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _case_cell(rec: dict[str, Any] | None) -> str:
    if rec is None:
        return '<span class="na">–</span>'
    bg, fg = R.ratio_color(rec["ratio"])
    return (f'<a href="#{rec["id"]}" style="background:{bg};color:{fg}" '
            f'title="{esc(rec["tensor"])}: {esc(R.fmt_sci(rec["max_abs"]))} / '
            f'{esc(R.fmt_sci(rec["bound"]))}">{esc(R.sig(rec["ratio"], 2))}</a>')


def _case_table(ctx: Ctx, gid: str, title: str, dtype: str) -> str:
    """Error ÷ tolerance per case and pair of one group and dtype, folded; '' with fewer than 2 cases and pairs."""
    cases, pairs, cells = parity_data.case_table(ctx.parity, gid, dtype)
    if len(cases) < 2 and len(pairs) < 2:
        return ""
    cols = [column("case", "case", lambda case: f"<code>{esc(case)}</code>", lambda case: case)]
    for p in pairs:
        cols.append(column(esc(p), f"{p} (error/tolerance)", lambda case, p=p: _case_cell(cells.get((case, p))),
                           lambda case, p=p: (cells.get((case, p)) or {}).get("ratio"), "h"))
    table = render_table(ctx.page, f"parity-cases-{gid}-{dtype}", cols, cases,
                         caption=f"per case, {dtype}: error ÷ tolerance", max_height=True)
    table = table.replace('class="data"', 'class="data heat"')
    return (f"<details><summary>{esc(title)} per case — {esc(dtype)} ({len(cases)} cases × "
            f"{len(pairs)} pairs)</summary>{table}</details>")


def _result_html(rec: dict[str, Any]) -> str:
    passed = rec.get("passed")
    return ('<span class="ok">pass</span>' if passed else '<span class="bad">FAIL</span>'
            if passed is False else na(None))


def _records_table(ctx: Ctx) -> str:
    """Every comparison (worst tensor), one row each, anchored by the record id the matrices link to."""
    def text(header: str, key: str, code: bool = False) -> Column:
        wrap = "<code>{}</code>" if code else "{}"
        return column(header, key, lambda r: wrap.format(esc(r[key])), lambda r: r[key])

    def sci(header: str, key: str) -> Column:
        return column(header, key, lambda r: esc(R.fmt_sci(r[key])), lambda r: r[key], "num")

    cols = [text("kind", "kind"), text("a", "a"), text("b", "b"), text("case", "case", code=True),
            text("dtype", "dtype"), text("worst tensor", "tensor", code=True), sci("max-abs", "max_abs"),
            sci("max-rel", "max_rel"), sci("tolerance (bound)", "bound"), sci("atol", "atol"), sci("rtol", "rtol"),
            column("error / tol.", "error_over_tolerance",
                   lambda r: esc(R.sig(r["ratio"], 2) if r["ratio"] is not None else "n/a"), lambda r: r["ratio"],
                   "num"),
            column("result", "passed", _result_html, lambda r: r["passed"]),
            column("why this tolerance", "reason", lambda r: f"<small>{esc(r['reason'])}</small>",
                   lambda r: r["reason"], "wide"),
            csv_only(["source"], lambda r: [r["source"]])]
    return render_table(
        ctx.page, "parity-records", cols, ctx.parity.records, row_id=lambda r: r["id"],
        row_class=lambda r: "fail" if r.get("passed") is False else "", max_height=True,
        caption="one row per comparison (worst tensor); the same comparison from several Keras-backend sessions "
                "is kept once, at its worst")
