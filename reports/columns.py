"""Report tables from one column specification.

A :class:`Column` says everything about one column: its header HTML and CSS class in the page, its CSV column
names, and one function from a row to (HTML cell, CSV values). :func:`render_table` derives the HTML header, the
HTML cells, the CSV header and the CSV values from the same list, so the page and its CSV cannot drift apart.
A column with ``header=None`` exists only in the CSV, one with no CSV names only in the page.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from typing import Any

from . import render as R
from .render import esc


@dataclasses.dataclass(frozen=True)
class Column:
    """One table column: ``cell(row)`` returns the HTML cell and one CSV value per name in ``csv``."""

    header: str | None  # header HTML (escaped); None: a CSV-only column
    csv: tuple[str, ...]  # CSV column names; (): a page-only column
    cell: Callable[[Any], tuple[str, tuple[Any, ...]]]
    css: str = ""


def column(header: str, csv_name: str, html: Callable[[Any], str], value: Callable[[Any], Any],
           css: str = "") -> Column:
    """A column shown in the page and in the CSV under one name."""
    return Column(header, (csv_name,), lambda row: (html(row), (value(row),)), css)


def page_only(header: str, html: Callable[[Any], str], css: str = "") -> Column:
    """A column shown in the page only (notes, formatted summaries)."""
    return Column(header, (), lambda row: (html(row), ()), css)


def csv_only(names: Sequence[str], values: Callable[[Any], Sequence[Any]]) -> Column:
    """Columns written to the CSV only (raw values the page summarises elsewhere)."""
    return Column(None, tuple(names), lambda row: ("", tuple(values(row))))


def render_table(page: R.Page, table_id: str, columns: Sequence[Column], rows: Sequence[Any], *,
                 caption: str = "", row_id: Callable[[Any], str | None] | None = None,
                 row_class: Callable[[Any], str] | None = None, max_height: bool = False) -> str:
    """The HTML table and its CSV (registered with ``page``), both derived from ``columns`` applied to ``rows``."""
    shown = [c for c in columns if c.header is not None]
    html_rows, csv_rows = [], []
    for row in rows:
        cells, values = [], []
        for col in columns:
            html, vals = col.cell(row)
            if len(vals) != len(col.csv):
                raise ValueError(f"column {col.header or col.csv}: {len(vals)} CSV values for {len(col.csv)} names")
            if col.header is not None:
                cells.append(html)
            values.extend(vals)
        html_rows.append(cells)
        csv_rows.append(values)
    return page.table(
        table_id, [(c.header, c.css) for c in shown], html_rows,
        csv_columns=[name for c in columns for name in c.csv], csv_rows=csv_rows, caption=caption,
        row_ids=[row_id(r) for r in rows] if row_id else None,
        row_classes=[row_class(r) for r in rows] if row_class else None, max_height=max_height)


# --- cells shared by the benchmark tables ----------------------------------------------------------------------


@dataclasses.dataclass
class VariantRow:
    """One series (variant) in one facet of a benchmark table: its bars, one per measure, and derived values."""

    label: str
    facet: tuple[str, ...]
    combo: dict[str, str]
    bars: list[dict[str, Any]]
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


def variant_columns(ctx) -> list[Column]:
    """The leading columns of every benchmark table: variant, role and one column per facet parameter."""
    cols = [column("variant", "variant", lambda r: f"<b>{esc(r.label)}</b>", lambda r: r.label),
            column("role", "role", lambda r: esc(ctx.role(r.label)), lambda r: ctx.role(r.label))]
    for i, p in enumerate(ctx.facet_params):
        cols.append(column(esc(p), p, lambda r, i=i: esc(r.facet[i]), lambda r, i=i: r.facet[i]))
    return cols


def measure_columns(measures: Sequence[dict[str, Any]], csv_names: Sequence[str], fmt) -> list[Column]:
    """One column per measure: the formatted bar (or n/a) in the page, the raw value in the CSV."""
    return [column(esc(m["name"]), name, lambda r, i=i: num(bar_html(r.bars[i], fmt)),
                   lambda r, i=i: r.bars[i].get("value"), "num")
            for i, (m, name) in enumerate(zip(measures, csv_names, strict=True))]


def note_column() -> Column:
    """The reasons of a row's missing bars (page only)."""
    return page_only("note", lambda r: note(r.bars))


def note(bars: list[dict[str, Any]]) -> str:
    reasons = list(dict.fromkeys(b["na"] for b in bars if b.get("value") is None and b.get("na")))
    return f"<small>{esc('; '.join(reasons))}</small>"


def folded(summary: str, table_html: str) -> str:
    """A table folded under a summary line."""
    return f'<details class="tbl"><summary>{esc(summary)}</summary>{table_html}</details>'


def num(html: str) -> str:
    return f'<span class="num">{html}</span>'


def bar_html(bar: dict[str, Any], fmt) -> str:
    return esc(fmt(bar["value"])) if bar.get("value") is not None else R.na_short(bar.get("na"))


def short(name: str) -> str:
    """The method name of a benchmark (``module.Class.track_x`` -> ``track_x``)."""
    return name.rsplit(".", 1)[-1]


def pretty(short_name: str) -> str:
    """A benchmark method name as words, without its asv prefix."""
    return re.sub(r"^(track|peakmem|time|mem)_", "", short_name).replace("_", " ")
