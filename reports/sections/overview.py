"""The overview: headline counts, the paired verdicts of ours against the best peer, notes about the inputs, and
how to read and reproduce the page."""

from __future__ import annotations

from .. import parity_data
from .. import render as R
from ..context import TOO_FEW, Ctx
from ..render import esc

#: The reader's guide under the overview cards.
HOW_TO_READ = """
<h3 id="how-to-read">How to read this page</h3>
<p class="lead">Every implementation runs the same ConvLSTM spec with the same canonical weights. <b>Parity</b>
colours each comparison by <i>max-abs error ÷ tolerance</i> (green: far inside the tolerance, amber: close to it,
red: beyond it, i.e. a failing test); click a cell for the worst tensor, its error and its tolerance.
<b>Throughput</b> shows sequences per second of one forward pass or training step on the workload's batch (higher
is better), from paired rounds: the variants of one framework timed in one process, interleaved, rounds on a busy
machine dropped; the whisker is the interquartile range of the per-round medians. Under each chart, each of ours
against the fastest peer of its framework: the ratio, its 95 % confidence interval, and a verdict only when the
interval excludes 1. Frameworks are never ranked against each other (their bars come from different processes).
<b>Efficiency</b> is the achieved GFLOP/s as a fraction of the peak the same framework reaches on a bare matmul /
gate convolution in the same process. <b>Memory</b> is the peak RSS of the benchmark
process (and of a process that only imports the framework), the device allocator's peak where a GPU was used, and
the spec's prediction of the activations a training step keeps. Bars are blue for our implementations, orange
for peer implementations, grey for known-slow settings kept as a warning. <i>n/a</i> always carries its reason:
a failed benchmark, a combination outside the profile, a missing framework. Every table has a CSV button.</p>
<p class="lead">Reproduce: <code>make test</code> (parity records in <code>reports/parity/</code>),
<code>make bench</code> (asv results in <code>reports/asv/</code>, then this page), <code>make report</code> (this
page alone).</p>
<pre class="cmd">make test                  # parity tests, all frameworks and Keras backends -> reports/parity/*.json
make bench                 # asv, quick profile -> reports/asv/results/, environment.json, then the report
make bench PROFILE=full    # every workload, mode, dtype and variant (hours on a CPU)
make report                # convlstm-bench report -o reports/html/index.html</pre>"""


def section_overview(ctx: Ctx) -> str:
    """Cards with the counts of this run (results, failures, parity, commits, paired verdicts) and the notes."""
    ok = [r for r in ctx.rows if r["status"] == "ok"]
    failed = [r for r in ctx.rows if r["status"] == "failed"]
    skipped_sel = [r for r in ctx.rows if r["status"] == "skipped" and r["selected"]]
    ps = parity_data.summary(ctx.parity)
    commits = ctx.asv.commits(ctx.machine)
    verdicts = _verdict_cards(ctx)
    worst = ps["worst"]
    tol_cls = "bad" if ps["failed"] else ("good" if ps["records"] else "")
    cards = [
        f'<div class="card"><div class="k">benchmark results</div><div class="v">{len(ok)}</div>'
        f'<div class="s">commit {esc((ctx.commit or "none")[:8])} on {esc(ctx.machine or "no machine")}</div></div>',
        f'<div class="card"><div class="k">failed</div><div class="v {"bad" if failed else "good"}">{len(failed)}'
        f'</div><div class="s">+ {len(skipped_sel)} selected but skipped (n/a)</div></div>',
        f'<div class="card"><div class="k">parity comparisons</div><div class="v">{ps["records"]}</div>'
        f'<div class="s">from {len(ctx.parity.files)} pytest session file(s)</div></div>',
        f'<div class="card"><div class="k">beyond tolerance</div><div class="v {tol_cls}">'
        f'{ps["failed"]}</div><div class="s">worst error/tolerance '
        f'{esc(R.sig(worst["ratio"]) if worst and worst["ratio"] is not None else "n/a")}</div></div>',
        f'<div class="card"><div class="k">commits with results</div><div class="v">{len(commits)}</div>'
        f'<div class="s">history needs ≥ 2</div></div>',
        verdicts,
    ]
    warn = ""
    if ctx.warnings:
        items = "".join(f"<li>{esc(w)}</li>" for w in ctx.warnings)
        warn = (f'<details class="warn"><summary>{len(ctx.warnings)} note(s) about the inputs</summary>'
                f"<ul>{items}</ul></details>")
    return (f'<section id="overview"><h2>Overview</h2><div class="cards">{"".join(cards)}</div>{warn}{HOW_TO_READ}'
            "</section>")


def _verdict_cards(ctx: Ctx) -> str:
    """Cards counting the paired verdicts of ours against the best peer of the same framework, and the rounds
    dropped for contention; nothing is ranked on a difference whose interval contains 1."""
    counts: dict[str, int] = {}
    dropped = total = 0
    busy = []
    for _key, entry in sorted((ctx.env.get("comparisons") or {}).items()):
        for summary in (entry.get("variants") or {}).values():
            total += summary.get("rounds") or 0
            dropped += len(summary.get("contaminated_rounds") or [])
        for variant, found in (entry.get("ours") or {}).items():
            v = (found.get("vs_best_peer") or {}).get("verdict")
            if v:
                counts[v] = counts.get(v, 0) + 1
                if v == TOO_FEW:
                    busy.append(f"{variant} ({entry.get('workload')} {entry.get('mode')})")
    if not counts:
        return ""
    order = ("faster", "no clear difference", "slower", TOO_FEW)
    detail = " · ".join(f"{counts[k]} {k}" for k in order if counts.get(k))
    cards = (f'<div class="card"><div class="k">ours vs best peer, same framework (paired, 95 % CI)</div>'
             f'<div class="v">{counts.get("faster", 0)} of {sum(counts.values())} faster</div>'
             f'<div class="s">{esc(detail)}</div></div>')
    cls = "bad" if busy else ("good" if total else "")
    why = "busy: " + ", ".join(busy) if busy else "steal or other processes' CPU above the thresholds"
    cards += (f'<div class="card"><div class="k">rounds dropped for contention</div><div class="v {cls}">{dropped}'
              f' of {total}</div><div class="s">{esc(why)}</div></div>')
    if busy:
        ctx.warnings.append("the machine was busy: too few clean rounds for " + ", ".join(busy)
                            + " — no verdict for these; rerun on an idle machine")
    return cards


