"""Charts shared by the benchmark sections: one bar chart per facet, measures pruned where they have no value,
legends, and ours-over-peer ratios within one framework."""

from __future__ import annotations

from typing import Any

from . import render as R
from .columns import VariantRow
from .context import ROLE_RANK, Ctx, bar_from, facet_title, facets, series_in
from .render import esc

WHISKERS = ('<span class="lg"><i class="whisker"></i>interquartile range (per-round medians, or asv&#x27;s '
            'repeats)</span>'
            '<span class="lg"><i class="ciline"></i>99 % confidence interval</span>')


def spread(time_row: dict[str, Any] | None, value: float) -> dict[str, Any]:
    """IQR and 99 % CI of the timing repeats, as relative spread around a rate ``value`` (rate ∝ 1/time)."""
    if not time_row or time_row["status"] != "ok" or not time_row["value"]:
        return {}
    t = time_row["value"]
    out = {}
    if time_row["q_25"] and time_row["q_75"] and time_row["q_25"] > 0:
        out["lo"], out["hi"] = value * t / time_row["q_75"], value * t / time_row["q_25"]
    a, b = time_row["ci_99_a"], time_row["ci_99_b"]
    if b and b > 0:
        out["ci_lo"] = value * t / b
        out["ci_hi"] = value * t / a if a and a > 0 else None
    return out


def legend_row(ctx: Ctx, facets_series, extra: str = "") -> str:
    """The role legend (ours, peer, trap) of the series shown, plus ``extra`` HTML."""
    roles = sorted({ctx.role(lab) for _, ss in facets_series for lab, _ in ss}, key=lambda r: ROLE_RANK.get(r, 3))
    return f'<div class="legendrow">{R.role_legend(roles)}{extra}</div>'


def same_framework_ratios(ctx: Ctx, vals: dict[str, float], higher_is_better: bool) -> dict[str, tuple[float, str]]:
    """For each of our series with a peer of the same framework (``environment.json``'s ``framework``) in ``vals``:
    (its value / the best such peer's value, that peer). Best = highest, or lowest when lower is better."""
    best_peer: dict[str, str] = {}
    pick = max if higher_is_better else min
    for label, v in vals.items():
        fw = ctx.framework(label)
        if ctx.role(label) == "peer" and fw and v:
            cur = best_peer.get(fw)
            best_peer[fw] = label if cur is None else pick((cur, label), key=vals.get)
    out = {}
    for label, v in vals.items():
        peer = best_peer.get(ctx.framework(label))
        if ctx.role(label) == "ours" and peer is not None:
            out[label] = (v / vals[peer], peer)
    return out


def ratio_cell(ratios: dict[str, tuple[float, str]], label: str, what: str) -> str:
    """A table cell with ``label``'s same-framework ratio (the peer on hover), or empty for peers and traps."""
    if label not in ratios:
        return '<span class="num"></span>'
    ratio, peer = ratios[label]
    return f'<span class="num" title="{esc(what)}: {esc(peer)}">{R.sig(ratio)}×</span>'


def facet_charts(ctx: Ctx, measures: list[dict[str, Any]], unit: str, axis: str, value_of, ref_of=None,
                 sub_of=None) -> tuple[str, list[VariantRow]]:
    """Charts with one bar per measure per series, and the table rows behind them; measures without any value in
    a facet are dropped from its chart and named (with their reason) in the caption."""
    charts, table = [], []
    for facet in facets(ctx):
        series = series_in(ctx, facet)
        cats, dropped = [], {}
        per_measure = [[value_of(m, combo) for _, combo in series] for m in measures]
        keep = [i for i, bars in enumerate(per_measure) if any(b.get("value") is not None for b in bars)]
        for i, bars in enumerate(per_measure):
            if i not in keep:
                reasons = {b.get("na") for b in bars if b.get("na")}
                dropped[measures[i]["name"]] = "; ".join(sorted(reasons)) or "no result"
        if not keep:
            keep = [0]
            dropped.pop(measures[0]["name"], None)
        for k, (label, combo) in enumerate(series):
            cats.append({"label": label, "role": ctx.role(label), "bars": [per_measure[i][k] for i in keep]})
            table.append(VariantRow(label, facet, combo, [per_measure[i][k] for i in range(len(measures))]))
        refs = ref_of(facet) if ref_of else []
        sub = sub_of(facet, series, per_measure) if sub_of else ""
        svg = R.bar_chart(facet_title(ctx, facet), cats, [measures[i] for i in keep], unit, axis_label=axis,
                          subtitle=sub, ref_lines=refs)
        cap = "".join(f"<br>{esc(name)}: n/a — {esc(reason)}" for name, reason in dropped.items())
        charts.append(f"<figure>{svg}{'<figcaption>' + cap[4:] + '</figcaption>' if cap else ''}</figure>")
    return f'<div class="grid2">{"".join(charts)}</div>', table


def prune(ctx: Ctx, measures: list[dict[str, Any]], value_of) -> tuple[list[dict[str, Any]], str]:
    """Drop measures without a single value in this run (e.g. device peak on a CPU); say why, once."""
    keep, notes = [], []
    combos = [c for f in facets(ctx) for _, c in series_in(ctx, f)]
    for m in measures:
        bars = [value_of(m, c) for c in combos]
        if any(b.get("value") is not None for b in bars):
            keep.append(m)
        else:
            reasons = list(dict.fromkeys(b.get("na") or "no result" for b in bars))
            notes.append(f"{m['name']}: n/a — {'; '.join(reasons[:3])}")
    if not keep and measures:
        keep = measures[:1]
    for i, m in enumerate(keep):
        m["color"] = R.MEASURE_COLORS[i % len(R.MEASURE_COLORS)]
    html = "".join(f'<p class="muted">{esc(n)}</p>' for n in notes)
    return keep, html


def value_fn(ctx: Ctx):
    """``value_of(measure, combo)``: the bar of one measure's benchmark for one combination, with its tooltip."""
    def value_of(m, combo):
        row = ctx.lookup(m["bench"], combo)
        bar = bar_from(row)
        if bar.get("value") is not None:
            bar["tip"] = f"{combo.get(ctx.series_param)} · {m['name']}: {R.formatter(m.get('unit'))(bar['value'])}"
        return bar

    return value_of
