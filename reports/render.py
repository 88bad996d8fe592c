"""HTML building blocks for the report: number formatting, tables with CSV download, inline SVG charts.

Everything is inline (CSS, SVG, a few lines of JS): the page works from ``file://`` offline and requests nothing.
CSV downloads are built in the browser from JSON embedded in the page (``Blob`` + ``URL.createObjectURL``).
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

ROLE_COLORS = {"ours": "#2563eb", "peer": "#ea8c0c", "trap": "#9ca3af", "": "#64748b"}
MEASURE_COLORS = ["#2563eb", "#0d9488", "#a855f7", "#ea8c0c", "#dc2626", "#64748b"]
LINE_COLORS = ["#2563eb", "#ea8c0c", "#0d9488", "#dc2626", "#a855f7", "#65a30d", "#db2777", "#0891b2", "#92400e",
               "#4b5563", "#7c3aed", "#ca8a04"]


def esc(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


# --------------------------------------------------------------------------------------------------------------
# Numbers


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def sig(x: float, digits: int = 3) -> str:
    if not _finite(x):
        return "n/a"
    if x == 0:
        return "0"
    ax = abs(x)
    if ax >= 10 ** digits:
        return f"{x:,.0f}"
    if ax < 1e-3:
        return f"{x:.{digits - 1}e}"
    decimals = max(0, digits - 1 - int(math.floor(math.log10(ax))))
    return f"{x:.{decimals}f}"


def fmt_bytes(x: Any) -> str:
    if not _finite(x):
        return "n/a"
    for unit, div in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(x) >= div:
            return f"{sig(x / div)} {unit}"
    return f"{x:.0f} B"


def fmt_seconds(x: Any) -> str:
    if not _finite(x):
        return "n/a"
    ax = abs(x)
    if ax == 0:
        return "0 s"
    if ax < 1e-3:
        return f"{sig(x * 1e6)} µs"
    if ax < 1:
        return f"{sig(x * 1e3)} ms"
    return f"{sig(x)} s"


def fmt_percent(x: Any) -> str:
    return "n/a" if not _finite(x) else f"{sig(100 * x)} %"


def fmt_sci(x: Any) -> str:
    return "n/a" if not _finite(x) else f"{x:.2e}"


def formatter(unit: str | None) -> Callable[[Any], str]:
    """A value formatter for an asv unit."""
    u = (unit or "").lower()
    if u in ("bytes", "byte", "b"):
        return fmt_bytes
    if u in ("seconds", "second", "s"):
        return fmt_seconds
    if u == "fraction":
        return fmt_percent
    if u:
        return lambda x: "n/a" if not _finite(x) else f"{sig(x)} {unit}"
    return lambda x: "n/a" if not _finite(x) else sig(x)


def _scale(vmax: float, unit: str | None) -> tuple[float, str]:
    """(divisor, suffix) for axis ticks: bytes in KiB/MiB/GiB, seconds in µs/ms/s, fractions in %."""
    u = (unit or "").lower()
    if u == "bytes":
        for suffix, div in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
            if vmax >= div:
                return div, f" {suffix}"
        return 1.0, " B"
    if u == "seconds":
        if vmax < 1e-3:
            return 1e-6, " µs"
        if vmax < 1:
            return 1e-3, " ms"
        return 1.0, " s"
    if u == "fraction":
        return 0.01, "%"
    if vmax >= 1e4:
        return 1e3, "k"
    return 1.0, ""


def nice_ticks(vmax: float, n: int = 5, unit: str | None = None) -> list[float]:
    """0 .. >= vmax in n-ish round steps (round in the display unit of ``unit``)."""
    if not _finite(vmax) or vmax <= 0:
        return [0.0, 1.0]
    div, _ = _scale(vmax, unit)
    v = vmax / div
    raw = v / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * (1 - 1e-9))
    count = int(math.ceil(v / step - 1e-9))
    return [i * step * div for i in range(count + 1)]


def tick_labels(ticks: Sequence[float], unit: str | None) -> list[str]:
    div, suffix = _scale(max(ticks) if ticks else 1.0, unit)
    return ["0" if t == 0 else f"{t / div:.6g}{suffix}" for t in ticks]


# --------------------------------------------------------------------------------------------------------------
# Page-level registry of CSV tables


class Page:
    """Collects sections and the data behind every downloadable table."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, Any]] = {}
        self._ids: set[str] = set()

    def uid(self, base: str) -> str:
        base = "".join(c if c.isalnum() or c in "-_" else "-" for c in base).strip("-") or "x"
        out, i = base, 2
        while out in self._ids:
            out, i = f"{base}-{i}", i + 1
        self._ids.add(out)
        return out

    def table(
        self,
        table_id: str,
        columns: Sequence[tuple[str, str]],
        rows: Sequence[Sequence[Any]],
        *,
        csv_columns: Sequence[str] | None = None,
        csv_rows: Sequence[Sequence[Any]] | None = None,
        caption: str = "",
        row_ids: Sequence[str | None] | None = None,
        row_classes: Sequence[str] | None = None,
        filename: str | None = None,
        max_height: bool = False,
    ) -> str:
        """An HTML table (``columns`` = [(header, css class)], ``rows`` = pre-rendered HTML cells) and its CSV
        (raw values, ``csv_columns``/``csv_rows``; default: the cells' text)."""
        tid = self.uid(table_id)
        self.tables[tid] = {
            "filename": filename or f"{tid}.csv",
            "columns": list(csv_columns or [h for h, _ in columns]),
            "rows": [[_csv_value(v) for v in r] for r in (csv_rows if csv_rows is not None else rows)],
        }
        head = "".join(f'<th class="{esc(c)}">{h}</th>' for h, c in columns)
        body = []
        for i, r in enumerate(rows):
            rid = row_ids[i] if row_ids else None
            rcls = row_classes[i] if row_classes else ""
            attrs = (f' id="{esc(rid)}"' if rid else "") + (f' class="{esc(rcls)}"' if rcls else "")
            cells = "".join(f'<td class="{esc(c)}">{v}</td>' for v, (_, c) in zip(r, columns))
            body.append(f"<tr{attrs}>{cells}</tr>")
        if not rows:
            body.append(f'<tr><td colspan="{len(columns)}" class="na">no rows</td></tr>')
        cap = f'<span class="caption">{caption}</span>' if caption else ""
        wrap = "tablewrap scroll" if max_height else "tablewrap"
        return (
            f'<div class="tablehead">{cap}<button type="button" class="csv" data-table="{tid}" '
            f'title="download this table as CSV">⤓ CSV</button></div>'
            f'<div class="{wrap}"><table id="table-{tid}" class="data"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>'
        )

    def data_script(self) -> str:
        payload = json.dumps({"tables": self.tables}, separators=(",", ":"), allow_nan=False)
        payload = payload.replace("</", "<\\/").replace("<!--", "<\\!--")
        return f'<script type="application/json" id="report-data">{payload}</script>'


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if not math.isfinite(v) else repr(v)
    if isinstance(v, bool | int):
        return v
    return str(v)


def na(reason: str | None, short: str = "n/a") -> str:
    """An n/a cell with its reason visible on hover and in small text."""
    if not reason:
        return f'<span class="na">{short}</span>'
    return f'<span class="na" title="{esc(reason)}">{short}<small> — {esc(_shorten(reason, 90))}</small></span>'


def na_short(reason: str | None, short: str = "n/a") -> str:
    """An n/a table cell: the reason on hover (tables name it once, in their note column)."""
    return f'<span class="na" title="{esc(reason or "no result")}">{short}</span>'


def _shorten(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


# --------------------------------------------------------------------------------------------------------------
# SVG: horizontal bar chart


def bar_chart(
    title: str,
    categories: Sequence[dict[str, Any]],
    measures: Sequence[dict[str, Any]],
    unit: str,
    *,
    axis_label: str,
    subtitle: str = "",
    ref_lines: Sequence[tuple[float, str]] = (),
    width: int = 640,
) -> str:
    """Horizontal bars, one block per category (``{"label", "role", "bars": [bar per measure]}``, a bar being
    ``{"value", "lo", "hi", "ci_lo", "ci_hi", "na", "tip"}``), one bar per measure (``{"name", "color"}``).
    ``lo``/``hi`` draw the interquartile whisker, ``ci_lo``/``ci_hi`` a thin 99 % CI line."""
    fmt = formatter(unit if (unit or "").lower() in ("bytes", "seconds", "fraction") else "")
    nm = max(1, len(measures))
    bar_h = 16 if nm == 1 else 12
    block_h = nm * (bar_h + 3) + 12
    label_w, value_w, pad = 168, 96, 12
    top = (46 if subtitle else 30) + (14 if ref_lines else 0)
    plot_w = width - label_w - value_w - pad
    height = top + block_h * max(1, len(categories)) + 44
    vals = []
    for c in categories:
        for b in c["bars"]:
            for k in ("value", "hi"):
                if _finite(b.get(k)):
                    vals.append(b[k])
    vals += [v for v, _ in ref_lines if _finite(v)]
    ticks = nice_ticks(max(vals) if vals else 1.0, unit=unit)
    vmax = ticks[-1] or 1.0
    nchars = int(plot_w / 6.4)

    geom = _BarGeometry(label_w, plot_w, bar_h, vmax, nchars, fmt)
    x = geom.x
    out = [f'<svg class="chart bar" viewBox="0 0 {width} {height}" width="100%" role="img" '
           f'aria-label="{esc(title)}" xmlns="http://www.w3.org/2000/svg">',
           f'<text class="ctitle" x="{pad}" y="20">{esc(title)}</text>']
    if subtitle:
        out.append(f'<text class="csub" x="{pad}" y="37">{esc(subtitle)}</text>')
    y_axis = top + block_h * max(1, len(categories))
    for t, lab in zip(ticks, tick_labels(ticks, unit)):
        out.append(f'<line class="grid" x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top - 4}" y2="{y_axis}"/>'
                   f'<text class="tick" x="{x(t):.1f}" y="{y_axis + 14}" text-anchor="middle">{esc(lab)}</text>')
    out.append(f'<line class="axis" x1="{label_w}" x2="{label_w + plot_w}" y1="{y_axis}" y2="{y_axis}"/>')
    out.append(f'<text class="alabel" x="{label_w + plot_w / 2:.1f}" y="{y_axis + 34}" text-anchor="middle">'
               f'{esc(axis_label)}</text>')
    for i, c in enumerate(categories):
        y0 = top + i * block_h + 6
        role = c.get("role") or ""
        ylab = y0 + nm * (bar_h + 3) / 2
        out.append(f'<text class="clabel" x="{label_w - 8}" y="{ylab - (2 if role else -4):.1f}" text-anchor="end">'
                   f'{esc(_shorten(c["label"], 24))}</text>')
        if role:
            out.append(f'<text class="crole {esc(role)}" x="{label_w - 8}" y="{ylab + 10:.1f}" '
                       f'text-anchor="end">{esc(role)}</text>')
        reasons = {b.get("na") or "no result" for b in c["bars"] if not _finite(b.get("value"))}
        if nm > 1 and len(reasons) == 1 and not any(_finite(b.get("value")) for b in c["bars"]):
            reason = reasons.pop()
            hh = nm * (bar_h + 3) - 3
            out.append(f'<g class="nabar"><title>{esc(c["label"])}: n/a — {esc(reason)}</title><rect class="naslot" '
                       f'x="{label_w}" y="{y0}" width="{plot_w}" height="{hh}"/><text class="natext" '
                       f'x="{label_w + 6}" y="{y0 + hh / 2 + 4:.1f}">n/a — {esc(_shorten(reason, nchars))}</text></g>')
            continue
        for j, b in enumerate(c["bars"]):
            color = measures[j].get("color") if nm > 1 else ROLE_COLORS.get(role, ROLE_COLORS[""])
            out.append(_bar_svg(geom, b, f"{c['label']} · {measures[j]['name']}", color, y0 + j * (bar_h + 3)))
    for v, label in ref_lines:
        if _finite(v):
            out.append(f'<g class="ref"><title>{esc(label)}: {esc(fmt(v))}</title><line x1="{x(v):.1f}" '
                       f'x2="{x(v):.1f}" y1="{top - 6}" y2="{y_axis}"/><text x="{x(v) + 3:.1f}" y="{top - 7}">'
                       f'{esc(_shorten(label, 40))}</text></g>')
    out.append("</svg>")
    return "".join(out)


@dataclasses.dataclass(frozen=True)
class _BarGeometry:
    """Where the bars of one chart go: the plot's left edge and width, a bar's height, the axis maximum."""

    label_w: float
    plot_w: float
    bar_h: int
    vmax: float
    nchars: int  # characters of an n/a reason that fit in the plot
    fmt: Callable[[Any], str]

    def x(self, v: float) -> float:
        return self.label_w + self.plot_w * max(0.0, min(v, self.vmax)) / self.vmax


def _bar_svg(g: _BarGeometry, b: dict[str, Any], name: str, color: str, by: float) -> str:
    """One bar at height ``by``: value, 99 % CI line, interquartile whisker and value label, or an n/a slot with
    its reason. ``name`` (category · measure) heads the tooltip."""
    label_w, bar_h, x = g.label_w, g.bar_h, g.x
    if not _finite(b.get("value")):
        reason = b.get("na") or "no result"
        return (f'<g class="nabar"><title>{esc(name)}: n/a — '
                f'{esc(reason)}</title><rect class="naslot" x="{label_w}" y="{by}" width="{g.plot_w}" '
                f'height="{bar_h}"/><text class="natext" x="{label_w + 6}" y="{by + bar_h - 4}">'
                f'n/a — {esc(_shorten(reason, g.nchars))}</text></g>')
    w = max(1.0, x(b["value"]) - label_w)
    tip = b.get("tip") or f"{name}: {g.fmt(b['value'])}"
    out = [f'<g class="bar"><title>{esc(tip)}</title><rect x="{label_w}" y="{by}" width="{w:.1f}" '
           f'height="{bar_h}" rx="2" fill="{color}"/>']
    cy = by + bar_h / 2
    if _finite(b.get("ci_lo")) or _finite(b.get("ci_hi")):
        lo = b.get("ci_lo") if _finite(b.get("ci_lo")) else b["value"]
        hi = b.get("ci_hi") if _finite(b.get("ci_hi")) else g.vmax
        out.append(f'<line class="ci" x1="{x(lo):.1f}" x2="{x(hi):.1f}" y1="{cy:.1f}" y2="{cy:.1f}"/>')
    if _finite(b.get("lo")) and _finite(b.get("hi")):
        x1, x2 = x(b["lo"]), x(b["hi"])
        out.append(f'<path class="iqr" d="M{x1:.1f},{cy - 4:.1f}v8M{x1:.1f},{cy:.1f}H{x2:.1f}'
                   f'M{x2:.1f},{cy - 4:.1f}v8"/>')
    vx = max(x(b["value"]), x(b["hi"]) if _finite(b.get("hi")) else 0)
    out.append(f'<text class="vlabel" x="{vx + 5:.1f}" y="{by + bar_h - 3}">{esc(g.fmt(b["value"]))}'
               f'{esc(b.get("suffix", ""))}</text></g>')
    return "".join(out)


# --------------------------------------------------------------------------------------------------------------
# SVG: line chart (history)


def line_chart(
    title: str,
    x_labels: Sequence[str],
    series: Sequence[dict[str, Any]],
    unit: str,
    *,
    axis_label: str,
    width: int = 640,
    height: int = 280,
) -> str:
    """One line per series (``{"label", "color", "points": [(x index, value, tip)]}``) over ordinal x."""
    fmt = formatter(unit)
    left, right, top, bottom = 70, 150, 30, 54
    pw, ph = width - left - right, height - top - bottom
    vals = [v for s in series for _, v, _ in s["points"] if _finite(v)]
    ticks = nice_ticks(max(vals) if vals else 1.0, unit=unit)
    vmax = ticks[-1] or 1.0
    n = max(1, len(x_labels))

    def px(i: int) -> float:
        return left + (pw * (i + 0.5) / n)

    def py(v: float) -> float:
        return top + ph - ph * max(0.0, v) / vmax

    out = [f'<svg class="chart line" viewBox="0 0 {width} {height}" width="100%" role="img" '
           f'aria-label="{esc(title)}" xmlns="http://www.w3.org/2000/svg">',
           f'<text class="ctitle" x="12" y="20">{esc(title)}</text>']
    for t, lab in zip(ticks, tick_labels(ticks, unit)):
        out.append(f'<line class="grid" x1="{left}" x2="{left + pw}" y1="{py(t):.1f}" y2="{py(t):.1f}"/>'
                   f'<text class="tick" x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{esc(lab)}</text>')
    out.append(f'<line class="axis" x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}"/>')
    step = max(1, math.ceil(n / 10))
    for i, lab in enumerate(x_labels):
        if i % step == 0 or i == n - 1:
            out.append(f'<text class="tick" x="{px(i):.1f}" y="{top + ph + 14}" text-anchor="middle">'
                       f'{esc(lab)}</text>')
    out.append(f'<text class="alabel" x="{left + pw / 2:.1f}" y="{height - 8}" text-anchor="middle">commit '
               f'(oldest → newest)</text>')
    out.append(f'<text class="alabel" transform="translate(14,{top + ph / 2:.1f}) rotate(-90)" '
               f'text-anchor="middle">{esc(axis_label)}</text>')
    for k, s in enumerate(series):
        pts = [(i, v, tip) for i, v, tip in s["points"] if _finite(v)]
        color = s.get("color") or LINE_COLORS[k % len(LINE_COLORS)]
        if len(pts) > 1:
            d = "M" + "L".join(f"{px(i):.1f},{py(v):.1f}" for i, v, _ in pts)
            out.append(f'<path class="trend" d="{d}" stroke="{color}"/>')
        for i, v, tip in pts:
            out.append(f'<circle cx="{px(i):.1f}" cy="{py(v):.1f}" r="3.5" fill="{color}"><title>{esc(s["label"])}'
                       f' @ {esc(x_labels[i])}: {esc(fmt(v))}{" — " + esc(tip) if tip else ""}</title></circle>')
        ly = top + 4 + k * 16
        out.append(f'<g class="legend"><line x1="{left + pw + 12}" x2="{left + pw + 30}" y1="{ly}" y2="{ly}" '
                   f'stroke="{color}" stroke-width="2.5"/><text x="{left + pw + 35}" y="{ly + 4}">'
                   f'{esc(_shorten(s["label"], 18))}</text></g>')
    out.append("</svg>")
    return "".join(out)


# --------------------------------------------------------------------------------------------------------------
# Parity colours


def ratio_color(r: float | None) -> tuple[str, str]:
    """(background, text colour) of a parity cell: green (far inside tolerance) → amber (at it) → red (beyond)."""
    if r is None:
        return "#eef0f3", "#6b7280"
    if not math.isfinite(r) or r > 1:
        return "#dc2626", "#ffffff"
    t = 0.0 if r <= 0 else min(1.0, max(0.0, (math.log10(r) + 6) / 6))  # 0 = exact: the greenest
    hue = 135 - 95 * t
    light = 84 - 14 * t
    return f"hsl({hue:.0f},62%,{light:.0f}%)", "#111827"


def ratio_legend() -> str:
    stops = "".join(f'<stop offset="{i / 6:.3f}" stop-color="{ratio_color(10 ** (i - 6) if i else 1e-6)[0]}"/>'
                    for i in range(7))
    ticks = "".join(f'<text class="tick" x="{10 + 300 * i / 6:.1f}" y="36" text-anchor="middle">1e{i - 6}</text>'
                    for i in range(6))
    ticks += '<text class="tick" x="310" y="36" text-anchor="middle">1</text>'
    ticks += '<text class="tick" x="318" y="36">= tolerance</text>'
    return (f'<svg class="legendbar" viewBox="0 0 470 44" width="470" height="44" role="img" '
            f'aria-label="colour scale: error / tolerance" xmlns="http://www.w3.org/2000/svg">'
            f'<defs><linearGradient id="ratio-grad">{stops}</linearGradient></defs>'
            f'<rect x="10" y="8" width="300" height="14" fill="url(#ratio-grad)" rx="2"/>'
            f'<rect x="330" y="8" width="34" height="14" fill="#dc2626" rx="2"/>'
            f'<text class="tick" x="370" y="19">&gt; 1: fails</text>'
            f'<rect x="420" y="8" width="14" height="14" fill="#eef0f3" stroke="#cbd5e1"/>'
            f'<text class="tick" x="438" y="19">n/a</text>{ticks}</svg>')


def role_legend(roles: Iterable[str]) -> str:
    items = []
    text = {"ours": "ours (this project)", "peer": "peer implementation", "trap": "trap (known-slow setting)"}
    for r in roles:
        items.append(f'<span class="lg"><i style="background:{ROLE_COLORS.get(r, ROLE_COLORS[""])}"></i>'
                     f'{esc(text.get(r, r or "unknown role"))}</span>')
    return "".join(items)


def measure_legend(measures: Sequence[dict[str, Any]]) -> str:
    return "".join(f'<span class="lg"><i style="background:{m["color"]}"></i>{esc(m["name"])}</span>'
                   for m in measures)


# --------------------------------------------------------------------------------------------------------------
# The page


CSS = """
:root{--fg:#1f2937;--muted:#6b7280;--line:#e5e7eb;--bg:#ffffff;--panel:#f8fafc;--accent:#2563eb}
*{box-sizing:border-box}
body{margin:0;font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Helvetica,Arial,sans-serif;
color:var(--fg);background:var(--bg)}
header.top{background:#0f172a;color:#e2e8f0;padding:18px 32px 14px}
header.top h1{margin:0;font-size:22px;font-weight:650;letter-spacing:.2px}
header.top .meta{color:#94a3b8;font-size:13px;margin-top:4px}
header.top .meta code{color:#cbd5e1}
nav{position:sticky;top:0;z-index:5;background:#fff;border-bottom:1px solid var(--line);padding:6px 32px}
nav a{color:var(--fg);text-decoration:none;margin-right:18px;font-size:13px;font-weight:550}
nav a:hover{color:var(--accent)}
main{max-width:1400px;margin:0 auto;padding:8px 32px 48px}
section{margin-top:30px}
h2{font-size:19px;margin:0 0 8px;padding-bottom:4px;border-bottom:2px solid var(--line)}
h3{font-size:15px;margin:18px 0 6px}
p.lead{color:#374151;max-width:980px;margin:6px 0 10px}
.muted{color:var(--muted)}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:14px 0 4px}
.card{background:var(--panel);border:1px solid var(--line);border-radius:8px;padding:10px 14px;min-width:170px}
.card .k{font-size:12px;color:var(--muted);text-transform:uppercase;letter-spacing:.4px}
.card .v{font-size:20px;font-weight:650}
.card .v.bad{color:#b91c1c}.card .v.good{color:#15803d}
.card .s{font-size:12px;color:var(--muted)}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:14px}
figure{margin:0;background:#fff;border:1px solid var(--line);border-radius:8px;padding:6px 8px 4px}
figcaption{font-size:12px;color:var(--muted);padding:2px 6px 6px}
.legendrow{margin:6px 0 10px;font-size:13px}
.lg{display:inline-flex;align-items:center;margin-right:16px}
.lg i{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:6px}
.lg i.whisker{background:none;border-top:2px solid #111827;height:0;width:16px;border-radius:0}
.lg i.ciline{background:none;border-top:1px solid #64748b;height:0;width:16px;border-radius:0}
.lg i.refl{background:none;border-top:2px dashed #be185d;height:0;width:16px;border-radius:0}
svg.chart{display:block;font-family:inherit}
svg .ctitle{font-size:14px;font-weight:650;fill:#111827}
svg .csub{font-size:11.5px;fill:#6b7280}
svg .grid{stroke:#eef0f3;stroke-width:1}
svg .axis{stroke:#9ca3af;stroke-width:1}
svg .tick{font-size:10.5px;fill:#6b7280}
svg .alabel{font-size:11.5px;fill:#374151}
svg .clabel{font-size:12px;fill:#111827}
svg .crole{font-size:10px;fill:#6b7280}
svg .crole.ours{fill:#2563eb}svg .crole.peer{fill:#b45309}
svg .vlabel{font-size:11px;fill:#111827}
svg .iqr{stroke:#111827;stroke-width:1.4;fill:none}
svg .ci{stroke:#64748b;stroke-width:1}
svg .naslot{fill:#f3f4f6}
svg .natext{font-size:11px;fill:#6b7280;font-style:italic}
svg .ref line{stroke:#be185d;stroke-width:1.5;stroke-dasharray:5 3}
svg .ref text{font-size:10.5px;fill:#be185d}
svg .trend{fill:none;stroke-width:2}
svg .legend text{font-size:11px;fill:#374151}
svg.legendbar{display:block;margin:4px 0 8px}
.tablehead{display:flex;align-items:center;justify-content:space-between;margin:10px 0 4px;gap:10px}
.caption{font-size:12.5px;color:var(--muted)}
button.csv{font:inherit;font-size:12px;border:1px solid #cbd5e1;background:#fff;border-radius:6px;padding:2px 10px;
cursor:pointer;color:#1e3a8a;white-space:nowrap}
button.csv:hover{background:#eff6ff}
.tablewrap{overflow-x:auto;border:1px solid var(--line);border-radius:8px}
.tablewrap.scroll{max-height:520px;overflow-y:auto}
table.data{border-collapse:collapse;width:100%;font-size:12.5px}
table.data th{background:#f1f5f9;text-align:left;font-weight:600;padding:6px 8px;border-bottom:1px solid var(--line);
position:sticky;top:0;z-index:1}
table.data td{padding:4px 8px;border-bottom:1px solid #f1f5f9;vertical-align:top}
table.data td:first-child{white-space:nowrap}
table.data td.wide{min-width:280px}
details.tbl{margin:10px 0}
details.tbl > summary{font-size:13px}
table.data td.num,table.data th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.data tr:target td{background:#fef9c3}
table.data tr.fail td{background:#fef2f2}
.na{color:var(--muted);font-style:italic}
.na small{font-size:11px}
.ok{color:#15803d;font-weight:600}.bad{color:#b91c1c;font-weight:600}
table.matrix{border-collapse:separate;border-spacing:3px;font-size:12.5px;margin:4px 0}
table.matrix th{font-weight:600;padding:4px 8px;text-align:center}
table.matrix th.rowh{text-align:right}
table.matrix td.cell{min-width:108px;height:46px;text-align:center;border-radius:6px;padding:0}
table.matrix td.cell a{display:block;padding:5px 6px;color:inherit;text-decoration:none;line-height:1.25}
table.matrix td.cell a:hover{outline:2px solid #111827;border-radius:6px}
table.matrix td.cell .r{font-weight:650;font-size:13px}
table.matrix td.cell .e{font-size:11px;opacity:.85}
table.matrix td.diag{background:repeating-linear-gradient(45deg,#f8fafc,#f8fafc 6px,#eef0f3 6px,#eef0f3 12px)}
.matrices{display:flex;flex-wrap:wrap;gap:26px;align-items:flex-start}
.matrices > div{min-width:0}
table.heat td.h{text-align:center;font-size:11.5px;padding:0}
table.heat td.h a{display:block;padding:3px 6px;color:inherit;text-decoration:none}
pre.cmd{background:#0f172a;color:#e2e8f0;padding:10px 14px;border-radius:8px;overflow-x:auto;font-size:12.5px}
code{font-family:ui-monospace,"SFMono-Regular",Menlo,Consolas,"DejaVu Sans Mono",monospace;font-size:12.5px}
details{margin:6px 0}
summary{cursor:pointer;color:#1e3a8a}
.warn{background:#fffbeb;border:1px solid #fde68a;border-radius:8px;padding:8px 12px;font-size:13px}
.kv{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;font-size:13px}
.kv dt{color:var(--muted)}.kv dd{margin:0}
footer{color:var(--muted);font-size:12px;border-top:1px solid var(--line);margin-top:40px;padding-top:10px}
@media print{nav{display:none}}
"""

JS = """
(function(){
  var el=document.getElementById('report-data');
  var data=el?JSON.parse(el.textContent):{tables:{}};
  function cell(v){v=(v===null||v===undefined)?'':String(v);
    return /[",\\r\\n]/.test(v)?'"'+v.replace(/"/g,'""')+'"':v;}
  document.querySelectorAll('button.csv').forEach(function(b){
    b.addEventListener('click',function(){
      var t=data.tables[b.getAttribute('data-table')];if(!t)return;
      var lines=[t.columns.map(cell).join(',')];
      t.rows.forEach(function(r){lines.push(r.map(cell).join(','));});
      var url=URL.createObjectURL(new Blob([lines.join('\\r\\n')+'\\r\\n'],{type:'text/csv;charset=utf-8'}));
      var a=document.createElement('a');a.href=url;a.download=t.filename;document.body.appendChild(a);a.click();
      a.remove();setTimeout(function(){URL.revokeObjectURL(url);},2000);
    });
  });
})();
"""


def page(title: str, header_meta: str, nav: Sequence[tuple[str, str]], body: str, data_script: str,
         footer: str) -> str:
    links = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t in nav)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f'<header class="top"><h1>{esc(title)}</h1><div class="meta">{header_meta}</div></header>'
        f"<nav>{links}</nav><main>{body}<footer>{footer}</footer></main>"
        f"{data_script}<script>{JS}</script></body></html>\n"
    )
