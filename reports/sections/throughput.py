"""The throughput section: sequences per second per variant from the paired rounds (else asv's timing), the
paired verdicts of ours against the fastest peer of the same framework, and the table of every variant."""

from __future__ import annotations

import dataclasses
from typing import Any

from .. import render as R
from ..bench_charts import WHISKERS, legend_row, spread
from ..columns import Column, bar_html, column, csv_only, folded, num, render_table, short, variant_columns
from ..context import DISAGREE, TOO_FEW, Ctx, bar_from, facet_title, facets, reason, series_in
from ..render import esc, na


@dataclasses.dataclass(frozen=True)
class _Benchmarks:
    """The benchmarks behind the throughput table (None where the run has none)."""

    throughput: str | None  # track_*sequences_per_second*: measured in its own process
    time: str | None  # time_*: asv's timing repeats of one step
    frames: str | None  # track_*frames_per_s*
    faults: str | None  # track_*faults_per_step*


@dataclasses.dataclass
class ThroughputRow:
    """One variant in one facet: the bar, the result rows it was derived from, and the paired verdict."""

    label: str
    facet: tuple[str, ...]
    combo: dict[str, str]
    bar: dict[str, Any]
    tp: dict[str, Any] | None
    tm: dict[str, Any] | None
    fr: dict[str, Any] | None
    pf: dict[str, Any] | None
    batch: int | None
    verify: dict[str, Any]
    note: str
    verdict: dict[str, Any] | None


def section_throughput(ctx: Ctx) -> str:
    """Sequences per second per variant, one chart per facet, and the table of every variant."""
    parts = ['<section id="throughput"><h2>Throughput</h2>']
    tm = ctx.bench_names(lambda n, s, m: m.get("type") == "time" and m.get("param_names") == ctx.grid)
    tp, fr, pf = ctx.grid_benchmarks("throughput"), ctx.grid_benchmarks("frames"), ctx.grid_benchmarks("faults")
    if not (tp or tm):
        parts.append(f"<p>{na('no throughput or timing benchmark results: run make bench')}</p></section>")
        return "".join(parts)
    names = _Benchmarks(tp[0] if tp else None, tm[0] if tm else None, fr[0] if fr else None, pf[0] if pf else None)
    unit = ctx.meta(names.throughput).get("unit") if names.throughput else "sequences/s"
    parts.append(_lead(ctx, unit, names.time))
    fs = [(f, series_in(ctx, f)) for f in facets(ctx)]
    parts.append(legend_row(ctx, fs, WHISKERS))
    charts, rows = [], []
    for facet, series in fs:
        facet_rows = [_row(ctx, names, facet, label, combo, unit) for label, combo in series]
        rows += facet_rows
        vals = {r.label: r.bar["value"] for r in facet_rows if r.bar.get("value") is not None}
        cats = [{"label": r.label, "role": ctx.role(r.label), "bars": [r.bar]} for r in facet_rows]
        # the verdicts go below the chart as wrapping text: one line of SVG cannot hold three frameworks
        verdicts = _ours_vs_peers(ctx, series, vals, unit)
        axis = f"{unit} (higher is better)"
        svg = R.bar_chart(facet_title(ctx, facet), cats, [{"name": unit}], unit, axis_label=axis)
        charts.append(f'<figure>{svg}<figcaption class="verdicts">{esc(verdicts)}</figcaption></figure>')
    parts.append(f'<div class="grid2">{"".join(charts)}</div>')
    parts.append(folded(f"Table: throughput of every variant ({len(rows)} rows)", render_table(
        ctx.page, "throughput", _columns(ctx, names, unit), rows,
        caption="verified: outputs of batch element 0 vs the float64 reference before timing (from environment.json)")))
    parts.append("</section>")
    return "".join(parts)


def _lead(ctx: Ctx, unit: str, tm_name: str | None) -> str:
    """What the bar is, where its whiskers come from, and how ours are compared with peers."""
    tm_s = f"<code>{esc('.'.join(tm_name.rsplit('.', 2)[-2:]))}</code>" if tm_name else None
    how = ("batch ÷ the median step time of the <b>paired rounds</b>: the variants of one framework built in one "
           "process and timed in interleaved rounds, rounds the machine was busy in dropped; whiskers: the "
           "interquartile range of the per-round medians")
    if tm_s:
        how += (f". Without paired rounds the bar is batch ÷ the median of {tm_s} (asv's repeats in a process of its "
                "own; whiskers: their interquartile range and 99 % confidence interval). The table lists both and "
                f"explains every row where the two differ by more than {DISAGREE:.0%}: the ratio uses the paired "
                "rounds, because a shift of the machine's speed hits both variants of a round alike, while two "
                "processes can run at different speeds")
    return (f'<p class="lead">Bar: {esc(unit)} (higher is better) = {how}. One chart per '
            f"{esc(' · '.join(ctx.facet_params) or 'run')}. The caption under each chart and the table's “× best peer, "
            "same framework” give each of ours over the fastest peer of its own framework: the geometric mean of the "
            "per-round ratios (above 1 = faster) with its 95 % confidence interval, and a verdict only when the "
            "interval excludes 1 (else “no clear difference”). Bars of different frameworks come from different "
            "processes and are not ranked.</p>")


def _bar(r_tp, r_tm, paired_sum, batch) -> dict[str, Any]:
    """The bar and its whiskers from one measurement: the paired rounds, else asv's timing repeats (batch ÷
    time), else the throughput track (measured in another process) when there is no timing or no batch size."""
    if paired_sum and batch:
        return _paired_bar(paired_sum, batch)
    if r_tm and r_tm["status"] == "ok" and batch:
        return {"value": batch / r_tm["value"], **spread(r_tm, batch / r_tm["value"])}
    if r_tp and r_tp["status"] == "ok":
        return {"value": r_tp["value"]}
    return {"value": None, "na": reason(r_tp if r_tp and r_tp["status"] == "failed" else (r_tp or r_tm))}


def _row(ctx: Ctx, names: _Benchmarks, facet: tuple[str, ...], label: str, combo: dict[str, str],
         unit: str) -> ThroughputRow:
    """Look up one variant's results and derive its bar, tooltip and note."""
    def find(name: str | None) -> dict[str, Any] | None:
        return ctx.lookup(name, combo) if name else None

    r_tp, r_tm = find(names.throughput), find(names.time)
    batch = ctx.batch(combo)
    paired_sum = ctx.paired_summary(combo)
    bar = _bar(r_tp, r_tm, paired_sum, batch)
    timing = ""
    implied = None
    if r_tm and r_tm["status"] == "ok":
        timing = (f"step {R.fmt_seconds(r_tm['value'])} (median of {int(r_tm['repeat'] or 0)} repeats, "
                  f"IQR {R.fmt_seconds(r_tm['q_25'])}–{R.fmt_seconds(r_tm['q_75'])})")
        if batch:
            implied = batch / r_tm["value"]
    if bar.get("value") is not None:
        bar["tip"] = f"{label} · {facet_title(ctx, facet)}: {R.sig(bar['value'])} {unit}; {timing}"
    case = ctx.case(combo)
    note = _disagreement(r_tm, paired_sum, case)
    if not note and implied and not paired_sum and r_tp and r_tp["status"] == "ok" and abs(
            r_tp["value"] / implied - 1) > DISAGREE:
        note = (f"{short(names.throughput)} = {R.sig(r_tp['value'])} is {R.sig(r_tp['value'] / implied)}× the "
                f"timing benchmark's {R.sig(implied)}: the two processes disagree")
    return ThroughputRow(label, facet, combo, bar, r_tp, r_tm, find(names.frames), find(names.faults), batch,
                         case.get("verify") or {}, note, ctx.verdict(combo))


def _sig_or_na(r: dict[str, Any] | None) -> str:
    return R.sig(r["value"]) if r and r["status"] == "ok" else R.na_short(reason(r))


def _get(r: dict[str, Any] | None, key: str) -> Any:
    return r[key] if r else None


def _columns(ctx: Ctx, names: _Benchmarks, unit: str) -> list[Column]:
    """The throughput table: the page shows formatted cells, the CSV the raw values they come from."""
    tp = names.throughput
    tm_ok = lambda r: r.tm and r.tm["status"] == "ok"  # noqa: E731
    iqr = lambda r: esc(R.fmt_seconds(r.tm["q_25"]) + " – " + R.fmt_seconds(r.tm["q_75"]))  # noqa: E731
    verify = "max_abs_err"
    return variant_columns(ctx) + [
        column(esc(unit) + " (bar)", unit, lambda r: num(bar_html(r.bar, R.sig)), lambda r: r.bar.get("value"),
               "num"),
        column(esc(short(tp)) if tp else "track", short(tp) if tp else "track",
               lambda r: num(_sig_or_na(r.tp) if tp else R.na_short("no throughput benchmark")),
               lambda r: _get(r.tp, "value"), "num"),
        column("step time (median)", "step_seconds_median",
               lambda r: num(bar_html(bar_from(r.tm), R.fmt_seconds)), lambda r: _get(r.tm, "value"), "num"),
        Column("step IQR", ("step_seconds_q25", "step_seconds_q75"),
               lambda r: (num(iqr(r) if tm_ok(r) else ""), (_get(r.tm, "q_25"), _get(r.tm, "q_75"))), "num"),
        csv_only(["step_seconds_ci99_low", "step_seconds_ci99_high"],
                 lambda r: [_get(r.tm, "ci_99_a"), _get(r.tm, "ci_99_b")]),
        column("repeats", "repeats", lambda r: num(f"{int(r.tm['repeat']) if r.tm and r.tm['repeat'] else ''}"),
               lambda r: _get(r.tm, "repeat"), "num"),
        column("frames/s", "frames_per_s", lambda r: num(_sig_or_na(r.fr) if names.frames else ""),
               lambda r: _get(r.fr, "value"), "num"),
        column("page faults / step", "minor_page_faults_per_step",
               lambda r: num(_faults_cell(r.pf) if names.faults else ""),
               lambda r: r.pf["value"] if r.pf and r.pf["status"] == "ok" else None, "num"),
        column("batch", "batch", lambda r: num(esc(r.batch or "")), lambda r: r.batch, "num"),
        column("verified max-abs err", "verify_max_abs_err",
               lambda r: num(esc(R.fmt_sci(r.verify.get(verify)) if verify in r.verify else "")),
               lambda r: r.verify.get(verify), "num"),
        Column("× best peer, same framework (paired, 95 % CI)", VERDICT_CSV,
               lambda r: (_verdict_cell(r.verdict), _verdict_values(r.verdict)), "num"),
        csv_only(["status"], lambda r: [(r.tp or r.tm or {}).get("status", "absent")]),
        column("note", "reason_or_note", lambda r: f"<small>{esc(r.note or r.bar.get('na') or '')}</small>",
               lambda r: r.bar.get("na") or r.note),
    ]


#: The CSV columns of the paired verdict of one of ours against the best peer of its framework.
VERDICT_CSV = ("ours_over_best_same_framework_peer", "ci95_low", "ci95_high", "verdict", "best_peer",
               "paired_rounds_used", "paired_rounds_dropped")
_VERDICT_KEYS = ("ratio", "low", "high", "verdict", "peer", "rounds_used", "rounds_dropped")


def _verdict_values(v: dict[str, Any] | None) -> tuple[Any, ...]:
    return tuple(v.get(k) for k in _VERDICT_KEYS) if v else (None,) * len(_VERDICT_KEYS)


def _faults_cell(record: dict[str, Any] | None) -> str:
    """Minor page faults per step (``PageFaults``), whole numbers; n/a with the reason where it was skipped."""
    if record and record["status"] == "ok":
        return esc(f"{record['value']:.0f}")
    return R.na_short(reason(record))


def _paired_bar(summary: dict[str, Any], batch: int) -> dict[str, Any]:
    """Throughput bar from a variant's paired rounds: batch ÷ median step time, whiskers from the interquartile
    range of the per-round medians."""
    rounds = sorted(summary.get("round_seconds") or [summary["step_seconds"]])
    q25, q75 = _quantile(rounds, 0.25), _quantile(rounds, 0.75)
    return {"value": batch / summary["step_seconds"], "lo": batch / q75, "hi": batch / q25}


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated quantile of already sorted values."""
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


#: Steps shorter than this are dominated by per-call overhead, which asv's single-call samples include.
SHORT_STEP_SECONDS = 0.005


def _disagreement(time_row: dict[str, Any] | None, summary: dict[str, Any] | None, case: dict[str, Any]) -> str:
    """Why asv's TimeStep and the paired rounds differ by more than :data:`DISAGREE` ('' when they agree)."""
    if not summary or not time_row or time_row["status"] != "ok" or not time_row["value"]:
        return ""
    ratio = time_row["value"] / summary["step_seconds"]
    if abs(ratio - 1) <= DISAGREE:
        return ""
    usage = case.get("timestep_usage") or {}
    if usage.get("contaminated"):
        why = f"the machine was busy while TimeStep sampled ({usage['reason']})"
    elif ratio > 1 and summary["step_seconds"] < SHORT_STEP_SECONDS:
        why = ("on a step this short the method shows: asv times one call at a time between its own per-sample "
               "bookkeeping, the paired rounds time steps back to back")
    else:
        why = "TimeStep ran in a process of its own, at another time: the machine's speed differed between the two"
    return (f"TimeStep {R.fmt_seconds(time_row['value'])} is {R.sig(ratio)}× the paired rounds' "
            f"{R.fmt_seconds(summary['step_seconds'])}: {why}; the bar and the ratio use the paired rounds")


def verdict_text(v: dict[str, Any] | None) -> str:
    """``1.21× [1.18–1.24] faster`` / ``no clear difference (0.98× [0.93–1.04])`` / the reason there is none."""
    if not v:
        return ""
    if v.get("low") is None or v.get("verdict") == TOO_FEW:
        return f"{TOO_FEW} ({v.get('rounds_used', 0)} of {v.get('rounds', 0)}: the machine was busy)"
    est = f"{R.sig(v['ratio'])}× [{R.sig(v['low'])}–{R.sig(v['high'])}]"
    return f"no clear difference ({est})" if v["verdict"] == "no clear difference" else f"{est} {v['verdict']}"


def _verdict_cell(v: dict[str, Any] | None) -> str:
    """The table cell of one of ours: ratio, interval and verdict, the peer and rounds on hover."""
    if not v:
        return '<span class="num"></span>'
    title = (f"throughput ÷ {v.get('peer')}'s, geometric mean of {v.get('rounds_used')} paired rounds "
             f"({v.get('rounds_dropped')} dropped for contention), 95 % confidence interval")
    return f'<span class="num" title="{esc(title)}">{esc(verdict_text(v))}</span>'


def _ours_vs_peers(ctx: Ctx, series: list[tuple[str, dict[str, str]]], vals: dict[str, float], unit: str) -> str:
    """The chart caption: each of ours against the best peer of its framework from the paired rounds, with the
    interval and the verdict. Nothing is ranked without paired rounds (different processes)."""
    if not vals:
        return "no results"
    found = [(label, ctx.verdict(combo)) for label, combo in series if ctx.role(label) == "ours"]
    found = [(label, v) for label, v in found if v]
    if found:
        return "ours ÷ best peer, same framework (paired, 95 % CI): " + " · ".join(
            f"{label} {verdict_text(v)}" for label, v in found)
    return "no paired comparison in this run: bars from separate processes, not ranked"


