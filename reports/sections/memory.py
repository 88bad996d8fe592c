"""The memory section: host peak RSS (and over the import baseline), the training increase, warm step and held
memory, the device allocator's peak, against the spec's prediction of the activations a training step keeps."""

from __future__ import annotations

from typing import Any

from .. import render as R
from ..bench_charts import facet_charts, prune, ratio_cell, same_framework_ratios, value_fn
from ..columns import (
    Column,
    VariantRow,
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
from ..context import TRAIN_MEM_NAMES, Ctx, bar_from, match, reason
from ..render import na

LEAD = ('<p class="lead">Host peak = peak resident memory of the benchmark process (import, build, compile, '
        "verify, one more step); the import baseline is a process that only imports the framework, so the "
        "difference approximates what the model and its step add. The training figures come from a fresh "
        "process per combination (mode train): the increase is peak RSS over the first three steps, "
        "compilation included, minus RSS after the build; the warm step is one more, warmed-up step's peak "
        "over the build; held is what stays resident between steps after malloc_trim. Device peak is the "
        "framework allocator's peak on a GPU (n/a on a CPU). The dashed line is the spec's prediction of "
        "the activations a training step keeps; “increase / spec” in the table is the ratio to it.</p>")


def section_memory(ctx: Ctx) -> str:
    """One bar per memory measure per variant and facet, the spec's prediction as a reference line."""
    parts = ['<section id="memory"><h2>Memory</h2>']
    host = ctx.bench_names(lambda n, s, m: m.get("type") in ("peakmemory", "memory")
                           and m.get("param_names") == ctx.grid)
    base = ctx.bench_names(lambda n, s, m: m.get("type") in ("peakmemory", "memory")
                           and m.get("param_names") == [ctx.series_param])
    dev = ctx.grid_benchmarks("device_mem")
    spec = ctx.bench_names(lambda n, s, m: match("spec_mem", s) and set(m.get("param_names") or []) <= set(ctx.grid))
    train = ctx.grid_benchmarks("train_mem")
    if not (host or dev or train):
        parts.append(f"<p>{na('no memory benchmark (peakmem_* / track_*device* / track_train_rss_*) results')}"
                     "</p></section>")
        return "".join(parts)
    value_of = _value_fn(ctx)

    def ref_of(facet):
        combo = dict(zip(ctx.facet_params, facet))
        out = []
        for s in spec:
            r = ctx.lookup(s, combo)
            if r and r["status"] == "ok":
                out.append((r["value"], f"spec: {pretty(short(s))}"))
        return out

    measures, dropped = prune(ctx, _measures(host, base, train, dev), value_of)
    legend = R.measure_legend(measures)
    if spec:
        legend += '<span class="lg"><i class="refl"></i>spec prediction (activations kept by a training step)</span>'
    parts.append(LEAD)
    parts.append(f'<div class="legendrow">{legend}</div>{dropped}')
    charts, rows = facet_charts(ctx, measures, "bytes", "bytes (lower is better)", value_of, ref_of=ref_of)
    parts.append(charts)
    inc = next((i for i, m in enumerate(measures) if m.get("train_increase")), None)
    _derive(ctx, rows, inc, ref_of)
    parts.append(folded(f"Table: memory ({len(rows)} rows)",
                        render_table(ctx.page, "memory", _columns(ctx, measures, inc), rows)))
    parts.append("</section>")
    return "".join(parts)


def _measures(host: list[str], base: list[str], train: list[str], dev: list[str]) -> list[dict[str, Any]]:
    """The bars of each variant: host peaks, host peak over the import baseline, training memory, device peaks."""
    measures: list[dict[str, Any]] = []
    for b in host:
        name = "host peak RSS" + (f" ({pretty(short(b))})" if len(host) > 1 else "")
        measures.append({"name": name, "bench": b, "unit": "bytes"})
    if host and base:
        measures.append({"name": "host peak − import baseline", "bench": host[0], "minus": base[0], "unit": "bytes"})

    def train_key(bench: str) -> str | None:
        return next((k for k in TRAIN_MEM_NAMES if f"train_rss_{k}" in short(bench)), None)

    order = list(TRAIN_MEM_NAMES)
    for b in sorted(train, key=lambda b: (order.index(train_key(b)) if train_key(b) else len(order), b)):
        key = train_key(b)
        measures.append({"name": TRAIN_MEM_NAMES[key] if key else pretty(short(b)), "bench": b, "unit": "bytes",
                         "train_increase": key == "increase"})
    for b in dev:
        name = "device peak" + (f" ({pretty(short(b))})" if len(dev) > 1 else "")
        measures.append({"name": name, "bench": b, "unit": "bytes"})
    for i, m in enumerate(measures):
        m["color"] = R.MEASURE_COLORS[i % 6]
    return measures


def _value_fn(ctx: Ctx):
    """Bars of one measure: a benchmark's value, or for "minus" measures the difference of two benchmarks."""
    plain = value_fn(ctx)

    def value_of(m, combo):
        if "minus" not in m:
            return plain(m, combo)
        a, b = ctx.lookup(m["bench"], combo), ctx.lookup(m["minus"], combo)
        if not a or a["status"] != "ok":
            return bar_from(a)
        if not b or b["status"] != "ok":
            return {"value": None, "na": f"no import baseline ({reason(b)})"}
        return {"value": a["value"] - b["value"],
                "tip": f"{combo.get(ctx.series_param)}: {R.fmt_bytes(a['value'])} − {R.fmt_bytes(b['value'])}"}

    return value_of


def _derive(ctx: Ctx, rows: list[VariantRow], inc: int | None, ref_of) -> None:
    """Per row: the spec prediction, the training increase over it, and over the lowest peer of its framework."""
    vs_peer: dict[tuple[str, ...], dict[str, tuple[float, str]]] = {}
    if inc is not None:
        per_facet: dict[tuple[str, ...], dict[str, float]] = {}
        for row in rows:
            if row.bars[inc].get("value") is not None:
                per_facet.setdefault(tuple(row.facet), {})[row.label] = row.bars[inc]["value"]
        vs_peer = {f: same_framework_ratios(ctx, v, higher_is_better=False) for f, v in per_facet.items()}
    for row in rows:
        refs = ref_of(row.facet)
        spec_bytes = refs[0][0] if refs else None
        ratio = None
        if inc is not None and spec_bytes and row.bars[inc].get("value") is not None:
            ratio = row.bars[inc]["value"] / spec_bytes
        row.extra.update(has_spec=bool(refs), spec_bytes=spec_bytes, over_spec=ratio,
                         vs_peer=vs_peer.get(tuple(row.facet), {}))


def _columns(ctx: Ctx, measures: list[dict[str, Any]], inc: int | None) -> list[Column]:
    """The memory table; the two training-increase ratios only where a training increase was measured."""
    cols = variant_columns(ctx) + measure_columns(measures, [m["name"] for m in measures], R.fmt_bytes) + [
        column("spec prediction", "spec_prediction_bytes",
               lambda r: num(R.fmt_bytes(r.extra["spec_bytes"]) if r.extra["has_spec"]
                             else R.na_short("no spec prediction")),
               lambda r: r.extra["spec_bytes"], "num")]
    if inc is not None:
        cols += [
            column("increase / spec", "training_increase_over_spec",
                   lambda r: num(f"{r.extra['over_spec']:.2f}×" if r.extra["over_spec"] is not None
                                 else R.na_short("no training increase or spec")),
                   lambda r: r.extra["over_spec"], "num"),
            column("increase × lowest peer, same framework", "training_increase_over_lowest_same_framework_peer",
                   lambda r: ratio_cell(r.extra["vs_peer"], r.label,
                                        "training increase ÷ the lowest peer of its framework"),
                   lambda r: r.extra["vs_peer"][r.label][0] if r.label in r.extra["vs_peer"] else None, "num"),
        ]
    return cols + [note_column()]
