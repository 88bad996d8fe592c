"""Build ``reports/html/index.html`` from asv results, ``reports/asv/environment.json`` and parity records.

    from reports.build import build_report
    build_report("reports/asv/results", "reports/parity", "reports/html/index.html")

Benchmarks are recognised by asv type and name patterns (``time_*``, ``track_*sequences_per_second*``/
``*throughput*``, ``track_*fraction*``/``*efficiency*``, ``peakmem_*``, ``track_*device*``, ``track_*first_call*``/
``*compile*``, ``track_*predicted*``, ``track_train_rss_*``, ``track_*faults_per_step*``), parameters by
``param_names`` in ``benchmarks.json``: the series of a chart is the ``variant`` parameter (else the first), the
other parameters of the grid make the facets. Nothing missing crashes the page: absent inputs, failed and skipped
benchmarks and missing frameworks show as ``n/a`` with the reason.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import asv_data, parity_data
from . import render as R
from .render import esc, na

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS = Path("reports/asv/results")
DEFAULT_PARITY = Path("reports/parity")
DEFAULT_OUTPUT = Path("reports/html/index.html")
ROLE_RANK = {"ours": 0, "peer": 1, "trap": 2}
#: Verdict labels written by the benchmarks' paired rounds (benchmarks/paired.py), shown verbatim.
VERDICTS = ("faster", "slower", "no clear difference", "too few clean rounds")
TOO_FEW = "too few clean rounds"
#: TimeStep and the paired rounds disagreeing by more than this fraction get an explanation in the table.
DISAGREE = 0.10

PATTERNS = {
    "throughput": r"(throughput|sequences_per_s|seqs?_per_s|samples_per_s)",
    "frames": r"frames_per_s",
    "efficiency": r"(fraction|efficiency|utili[sz]ation)",
    "gflops": r"gflops",
    "compile": r"(compile|first_call)",
    "device_mem": r"device.*(bytes|mem)",
    "spec_mem": r"(predicted|spec).*(bytes|mem|activation)",
    "train_mem": r"train_rss",
    "faults": r"page_faults|faults_per_step",
}
#: Names of the training-memory measures (``TrainMemory``, benchmarks/train_rss.py) in the report.
TRAIN_MEM_NAMES = {
    "increase": "training increase over build",
    "warm_step": "warm step over build",
    "held": "held between steps",
}


def _match(kind: str, short: str) -> bool:
    return short.startswith("track_") and re.search(PATTERNS[kind], short) is not None


@dataclasses.dataclass
class Ctx:
    env: dict[str, Any]
    asv: asv_data.AsvData
    parity: parity_data.ParityData
    machine: str | None
    commit: str | None
    rows: list[dict[str, Any]]  # the rows of (machine, commit), all environments
    page: R.Page
    warnings: list[str]
    grid: list[str]  # param names of the main grid (variant, workload, mode, dtype)
    series_param: str | None
    facet_params: list[str]
    multi_env: bool
    index: dict[str, dict[tuple, dict[str, Any]]]
    active: set[tuple]  # grid combos (values in grid order + env) with a result, a failure or selected

    # --- metadata helpers -------------------------------------------------------------------------------
    def variants(self) -> dict[str, Any]:
        return self.env.get("variants") or {}

    def role(self, series: str) -> str:
        v = self.variants().get(series.split(" · ")[0]) or {}
        return str(v.get("role") or "")

    def framework(self, series: str) -> str:
        v = self.variants().get(series.split(" · ")[0]) or {}
        return str(v.get("framework") or "")

    def bench_names(self, pred) -> list[str]:
        names = sorted({r["benchmark"] for r in self.rows} | set(self.asv.benchmarks))
        return [n for n in names if pred(n, n.rsplit(".", 1)[-1], self.meta(n))]

    def meta(self, name: str) -> dict[str, Any]:
        m = dict(self.asv.benchmarks.get(name) or {})
        if "param_names" not in m:
            for r in self.rows:
                if r["benchmark"] == name:
                    m["param_names"] = r["param_names"]
                    m.setdefault("unit", r["unit"])
                    m.setdefault("type", r["kind"])
                    break
        return m

    def param_order(self, pname: str) -> dict[str, int]:
        for m in self.asv.benchmarks.values():
            names = m.get("param_names") or []
            if pname in names:
                vals = m["params"][names.index(pname)]
                return {asv_data.parse_param(v): i for i, v in enumerate(vals)}
        return {}

    def lookup(self, name: str, combo: dict[str, str]) -> dict[str, Any] | None:
        names = self.meta(name).get("param_names") or []
        if any(n not in combo for n in names):
            return None
        key = tuple(combo[n] for n in names) + ((combo.get("env", ""),) if self.multi_env else ())
        return self.index.get(name, {}).get(key)

    def paired_group(self, combo: dict[str, str]) -> dict[str, Any] | None:
        """The paired rounds (environment.json ``comparisons``) in which ``combo``'s variant was measured."""
        variant = combo.get(self.series_param or "variant")
        for entry in (self.env.get("comparisons") or {}).values():
            if not isinstance(entry, dict) or variant not in (entry.get("variants") or {}):
                continue
            if all(entry.get(p) == combo.get(p) for p in ("workload", "mode", "dtype")):
                return entry
        return None

    def paired_summary(self, combo: dict[str, str]) -> dict[str, Any] | None:
        """``combo``'s variant in its paired rounds: round medians, step time over clean rounds, dropped rounds."""
        group = self.paired_group(combo)
        return None if group is None else group["variants"][combo.get(self.series_param or "variant")]

    def verdict(self, combo: dict[str, str]) -> dict[str, Any] | None:
        """One of ours against the fastest peer of its framework, from the paired rounds: ratio (peer time / our
        time), 95 % interval, verdict, rounds used and dropped. None for peers, traps and unpaired rows."""
        group = self.paired_group(combo)
        ours = (group or {}).get("ours") or {}
        found = ours.get(combo.get(self.series_param or "variant"))
        return None if not found else found.get("vs_best_peer")

    def batch(self, combo: dict[str, str]) -> int | None:
        case = (self.env.get("cases") or {}).get("/".join(combo.get(p, "") for p in self.grid))
        try:
            return int(case["input_shape"][0])
        except (TypeError, KeyError, IndexError, ValueError):
            return None


# ------------------------------------------------------------------------------------------------------------
# Inputs


def _read_env(path: Path) -> tuple[dict[str, Any], list[str]]:
    if not path.is_file():
        return {}, [f"{path}: not found (environment details come from asv's machine.json only)"]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return {}, [f"{path}: unreadable ({exc})"]
    return (data, []) if isinstance(data, dict) else ({}, [f"{path}: not a JSON object"])


def _env_labels(files: list[dict[str, Any]]) -> dict[str, str]:
    """A short label per environment: the requirements that differ between them, else the env name."""
    reqs = {f["env_name"]: f.get("requirements") or {} for f in files}
    keys = sorted({k for r in reqs.values() for k in r})
    differing = [k for k in keys if len({str(r.get(k)) for r in reqs.values()}) > 1]
    out = {}
    for env, r in reqs.items():
        label = ", ".join(f"{k}=={r[k]}" if r.get(k) else f"{k} (any)" for k in differing)
        out[env] = label or str(env)
    return out


def make_context(results_dir: Path, parity_dir: Path, env_file: Path, machine: str | None, loader: str) -> Ctx:
    env, warnings = _read_env(env_file)
    data = asv_data.load(results_dir, loader=loader, environment=env)
    warnings += data.warnings
    parity = parity_data.load(parity_dir)
    warnings += parity.warnings
    m, c = asv_data.latest(data, machine)
    if machine and m != machine:
        warnings.append(f"no results for machine {machine!r}; showing {m!r}")
    rows = [r for r in data.rows if r["machine"] == m and r["commit"] == c]
    files = [f for f in data.files if f["machine"] == m and f["commit_hash"] == c]
    multi_env = len({f["env_name"] for f in files}) > 1
    if multi_env:
        labels = _env_labels(files)
        for r in data.rows:
            r["params"] = {**r["params"], "env": labels.get(r["env_name"], r["env_name"])}
    # the main grid: the parameters of the throughput benchmark, else of a time benchmark, else the longest
    metas = {r["benchmark"]: r for r in rows}
    cands = sorted(metas.values(), key=lambda r: (
        not _match("throughput", r["short_name"]), r["kind"] != "time", -len(r["param_names"])))
    grid = list(cands[0]["param_names"]) if cands else []
    series_param = "variant" if "variant" in grid else (grid[0] if grid else None)
    facet_params = [p for p in grid if p != series_param]
    index: dict[str, dict[tuple, dict[str, Any]]] = {}
    active: set[tuple] = set()
    for r in rows:
        names = r["param_names"]
        key = tuple(r["params"][n] for n in names) + ((r["params"]["env"],) if multi_env else ())
        index.setdefault(r["benchmark"], {})[key] = r
        if names == grid and (r["status"] in ("ok", "failed") or r["selected"]):
            active.add(key)
    return Ctx(env, data, parity, m, c, rows, R.Page(), warnings, grid, series_param, facet_params, multi_env,
               index, active)


# ------------------------------------------------------------------------------------------------------------
# Facets and series


def facets(ctx: Ctx) -> list[tuple[str, ...]]:
    n = len(ctx.facet_params)
    idx = [ctx.grid.index(p) for p in ctx.facet_params]
    found = {tuple(k[i] for i in idx) for k in ctx.active}
    orders = [ctx.param_order(p) for p in ctx.facet_params]
    return sorted(found, key=lambda f: tuple(orders[i].get(f[i], 99) for i in range(n)) + f)


def series_in(ctx: Ctx, facet: tuple[str, ...]) -> list[tuple[str, dict[str, str]]]:
    """[(label, combo)] of the series active in this facet, ours first."""
    if ctx.series_param is None:
        return []
    si = ctx.grid.index(ctx.series_param)
    fidx = [ctx.grid.index(p) for p in ctx.facet_params]
    out = {}
    for k in ctx.active:
        if tuple(k[i] for i in fidx) == facet:
            combo = dict(zip(ctx.grid, k))
            label = k[si]
            if ctx.multi_env:
                combo["env"] = k[-1]
                label = f"{label} · {k[-1]}"
            out[label] = combo
    order = ctx.param_order(ctx.series_param)
    return sorted(out.items(), key=lambda kv: (ROLE_RANK.get(ctx.role(kv[0]), 3),
                                                order.get(kv[1][ctx.series_param], 99), kv[0]))


def facet_title(ctx: Ctx, facet: tuple[str, ...]) -> str:
    return " · ".join(facet) if facet else "all"


def never_run(ctx: Ctx) -> list[str]:
    """Series values in the benchmark grid with no active combination at all."""
    if ctx.series_param is None:
        return []
    si = ctx.grid.index(ctx.series_param)
    seen = {k[si] for k in ctx.active}
    return [v for v in ctx.param_order(ctx.series_param) if v not in seen]


def _bar_from(row: dict[str, Any] | None, absent: str = "no result in this run") -> dict[str, Any]:
    if row is None:
        return {"value": None, "na": absent}
    if row["status"] != "ok":
        return {"value": None, "na": row["reason"]}
    return {"value": row["value"]}


def _reason(row: dict[str, Any] | None) -> str:
    return "no result in this run" if row is None else row["reason"]


# ------------------------------------------------------------------------------------------------------------
# Sections


def section_overview(ctx: Ctx) -> str:
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
    how = """
<h3 id="how-to-read">How to read this page</h3>
<p class="lead">Every implementation runs the same ConvLSTM spec with the same canonical weights. <b>Parity</b>
colours each comparison by <i>max-abs error ÷ tolerance</i> (green: far inside the tolerance, amber: close to it,
red: beyond it, i.e. a failing test); click a cell for the worst tensor, its error and its tolerance.
<b>Throughput</b> shows sequences per second of one forward pass or training step on the workload's batch (higher
is better); the black whisker is the interquartile range and the thin grey line the 99 % confidence interval of
asv's timing repeats. <b>Efficiency</b> is the achieved GFLOP/s as a fraction of the peak the same framework
reaches on a bare matmul / gate convolution in the same process. <b>Memory</b> is the peak RSS of the benchmark
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
    return (f'<section id="overview"><h2>Overview</h2><div class="cards">{"".join(cards)}</div>{warn}{how}'
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


def _machine_facts(ctx: Ctx) -> list[tuple[str, str]]:
    mj = ctx.asv.machines.get(ctx.machine or "", {})
    host = ctx.env.get("host") or {}
    fparams = next((f["params"] for f in ctx.asv.files if f["machine"] == ctx.machine and
                    f["commit_hash"] == ctx.commit), {})
    gpus = sorted({str(v.get("device_name")) for v in ctx.variants().values()
                   if str(v.get("device_kind", "")).lower() == "gpu" and v.get("device_name")})
    ram = mj.get("ram") or fparams.get("ram") or host.get("memory_bytes")
    try:
        ram_s = R.fmt_bytes(float(ram)) if ram else None
    except (TypeError, ValueError):
        ram_s = str(ram)
    run = ctx.env.get("run") or {}
    facts = [
        ("asv machine", ctx.machine),
        ("CPU", host.get("cpu") or mj.get("cpu") or fparams.get("cpu")),
        ("cores", host.get("cpu_count") or mj.get("num_cpu") or fparams.get("num_cpu")),
        ("memory", ram_s),
        ("GPU", ", ".join(gpus) if gpus else ("none used (CPU only)" if ctx.variants() else None)),
        ("OS / platform", host.get("platform") or mj.get("os") or fparams.get("os")),
        ("arch", mj.get("arch") or fparams.get("arch")),
        ("Python", host.get("python") or fparams.get("python")),
        ("benchmarked commit", ctx.commit),
        ("benchmark profile", run.get("profile")),
        ("run", " → ".join(str(x) for x in (run.get("started_at"), run.get("finished_at")) if x) or None),
        ("run wall time", R.fmt_seconds(run["wall_seconds"]) if isinstance(run.get("wall_seconds"), int | float)
         else None),
    ]
    return [(k, str(v)) for k, v in facts if v not in (None, "", [])]


def _installed_versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for pkg in ("numpy", "torch", "keras", "tensorflow", "tensorflow-cpu", "jax", "jaxlib", "flax", "optax", "asv"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def _git_head() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def section_environment(ctx: Ctx, generated: str) -> str:
    facts = _machine_facts(ctx)
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts)
    parts = ['<section id="environment"><h2>Environment</h2>']
    if not facts:
        parts.append(f'<p>{na("no asv results and no reports/asv/environment.json: run make bench")}</p>')
    else:
        parts.append(f'<dl class="kv">{dl}</dl>')
    variants = ctx.variants()
    if variants:
        rows, csv = [], []
        for name, v in sorted(variants.items(), key=lambda kv: (ROLE_RANK.get(kv[1].get("role"), 3), kv[0])):
            versions = ", ".join(f"{k} {val}" for k, val in sorted((v.get("versions") or {}).items()))
            options = ", ".join(f"{k}={val}" for k, val in sorted((v.get("options") or {}).items()))
            device = f'{v.get("device", "")} ({v.get("device_name", "")})'
            rows.append([f"<b>{esc(name)}</b>", esc(v.get("role")), esc(v.get("framework")), esc(versions),
                         esc(device), f"<small>{esc(options)}</small>", f"<small>{esc(v.get('description'))}</small>"])
            csv.append([name, v.get("role"), v.get("framework"), versions, device, options, v.get("description")])
        parts.append("<h3>Variants and library versions</h3>")
        parts.append(ctx.page.table(
            "variants", [("variant", ""), ("role", ""), ("framework", ""), ("versions", ""), ("device", ""),
                         ("options", ""), ("what runs", "")], rows, csv_rows=csv,
            caption="from reports/asv/environment.json (written by the benchmark processes)"))
        missing = [v for v in never_run(ctx) if v not in variants]
        if missing:
            parts.append(f'<p class="muted">Variants of the benchmark grid not in this run: {esc(", ".join(missing))} '
                         f"(outside the profile, or their framework is not installed).</p>")
    else:
        versions = _installed_versions()
        rows = [[esc(k), esc(v)] for k, v in versions.items()]
        parts.append("<h3>Library versions</h3>")
        parts.append(ctx.page.table("versions", [("package", ""), ("version", "")], rows,
                                    csv_rows=[[k, v] for k, v in versions.items()],
                                    caption="no environment.json: the packages installed where this report was "
                                            "built"))
    files = ctx.asv.files
    if files:
        rows, csv = [], []
        for f in sorted(files, key=lambda f: (f["machine"], f["date"] or 0)):
            nb = sum(1 for r in ctx.asv.rows if r["commit"] == f["commit_hash"] and r["env_name"] == f["env_name"]
                     and r["machine"] == f["machine"] and r["status"] == "ok")
            date = asv_data._iso(f["date"])
            reqs = ", ".join(f"{k}=={v}" if v else k for k, v in sorted((f.get("requirements") or {}).items()))
            rows.append([esc(f["machine"]), f"<code>{esc((f['commit_hash'] or '')[:8])}</code>", esc(date),
                         esc(f["env_name"]), esc(reqs or "—"), f'<span class="num">{nb}</span>'])
            csv.append([f["machine"], f["commit_hash"], date, f["env_name"], reqs, nb])
        parts.append("<h3>asv result files</h3>")
        parts.append(ctx.page.table(
            "result-files", [("machine", ""), ("commit", ""), ("commit date", ""), ("environment", ""),
                             ("requirements", ""), ("results", "num")], rows, csv_rows=csv))
    if ctx.parity.files or ctx.parity.notes:
        rows, csv = [], []
        for f in ctx.parity.files:
            rows.append([esc(f["name"]), esc(f["keras_backend"]), esc(f["created"]), esc(f["python"]),
                         esc(f["machine"]), f'<span class="num">{f["n_records"]}</span>'])
            csv.append([f["name"], f["keras_backend"], f["created"], f["python"], f["machine"], f["n_records"]])
        for n in ctx.parity.notes:
            extra = {k: v for k, v in n.items() if k not in ("path", "name", "created", "keras_backend", "machine")}
            rows.append([esc(n["name"]), esc(n.get("keras_backend")), esc(n.get("created")), "",
                         esc(n.get("machine")), f"<small>{esc(json.dumps(extra)[:200])}</small>"])
            csv.append([n["name"], n.get("keras_backend"), n.get("created"), "", n.get("machine"), json.dumps(extra)])
        parts.append("<h3>Parity test sessions</h3>")
        parts.append(ctx.page.table(
            "parity-files", [("file", ""), ("Keras backend", ""), ("created", ""), ("Python", ""), ("machine", ""),
                             ("records", "num")], rows, csv_rows=csv))
    run = ctx.env.get("run") or {}
    if run.get("asv_command"):
        parts.append(f"<details><summary>asv command of the run</summary><pre class=\"cmd\">"
                     f"{esc(' '.join(map(str, run['asv_command'])))}</pre></details>")
    head = _git_head()
    parts.append(f'<p class="muted">Report generated {esc(generated)}'
                 f'{" from working tree at commit " + esc(head[:12]) if head else ""}.</p></section>')
    return "".join(parts)


# --- parity ----------------------------------------------------------------------------------------------------


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
    parts = ['<section id="parity"><h2>Parity</h2>']
    if ctx.parity.empty:
        parts.append(f"<p>{na('no parity records in reports/parity/: run make test')}</p></section>")
        return "".join(parts)
    parts.append('<p class="lead">Cell = worst <i>max-abs error ÷ tolerance</i> over all cases (small number = '
                 "large margin; &gt; 1 fails), with the max-abs error below it. Rows and columns are implementations "
                 "(Keras labelled with its backend); the last columns are the float64 NumPy reference (and, for "
                 "gradients, its finite differences). Click a cell for its worst record.</p>")
    parts.append(R.ratio_legend())
    mats = parity_data.matrices(ctx.parity)
    by_group: dict[str, list[parity_data.Matrix]] = {}
    for m in mats:
        by_group.setdefault(m.group, []).append(m)
    for gid, ms in by_group.items():
        parts.append(f"<h3>{esc(ms[0].title)}</h3><div class=\"matrices\">")
        for m in ms:
            head = "".join(f"<th>{esc(c)}</th>" for c in m.cols)
            body = []
            for r in m.rows:
                cells = "".join(_cell(m.cells[(r, c)], m.missing.get(r), m.n_cases.get((r, c), 0),
                                      diag=(r == c and m.cells[(r, c)] is None)) for c in m.cols)
                body.append(f'<tr><th class="rowh">{esc(r)}</th>{cells}</tr>')
            parts.append(f'<div><div class="caption">{esc(m.dtype)}</div><table class="matrix" '
                         f'data-group="{esc(gid)}" data-dtype="{esc(m.dtype)}" data-rows="{len(m.rows)}" '
                         f'data-cols="{len(m.cols)}"><thead><tr><th></th>{head}</tr></thead>'
                         f'<tbody>{"".join(body)}</tbody></table></div>')
        parts.append("</div>")
        for m in ms:
            cases, pairs, cells = parity_data.case_table(ctx.parity, gid, m.dtype)
            if len(cases) < 2 and len(pairs) < 2:
                continue
            rows = []
            for case in cases:
                row = [f"<code>{esc(case)}</code>"]
                for p in pairs:
                    rec = cells.get((case, p))
                    if rec is None:
                        row.append('<span class="na">–</span>')
                    else:
                        bg, fg = R.ratio_color(rec["ratio"])
                        row.append(f'<a href="#{rec["id"]}" style="background:{bg};color:{fg}" '
                                   f'title="{esc(rec["tensor"])}: {esc(R.fmt_sci(rec["max_abs"]))} / '
                                   f'{esc(R.fmt_sci(rec["bound"]))}">{esc(R.sig(rec["ratio"], 2))}</a>')
                rows.append(row)
            csv = [[case] + [(cells.get((case, p)) or {}).get("ratio") for p in pairs] for case in cases]
            table = ctx.page.table(
                f"parity-cases-{gid}-{m.dtype}", [("case", "")] + [(esc(p), "h") for p in pairs], rows,
                csv_columns=["case"] + [f"{p} (error/tolerance)" for p in pairs], csv_rows=csv,
                caption=f"per case, {m.dtype}: error ÷ tolerance", max_height=True)
            table = table.replace('class="data"', 'class="data heat"')
            parts.append(f"<details><summary>{esc(ms[0].title)} per case — {esc(m.dtype)} ({len(cases)} cases × "
                         f"{len(pairs)} pairs)</summary>{table}</details>")
    cols = [("kind", ""), ("a", ""), ("b", ""), ("case", ""), ("dtype", ""), ("worst tensor", ""),
            ("max-abs", "num"), ("max-rel", "num"), ("tolerance (bound)", "num"), ("atol", "num"), ("rtol", "num"),
            ("error / tol.", "num"), ("result", ""), ("why this tolerance", "wide")]
    rows, csv, ids, classes = [], [], [], []
    for rec in ctx.parity.records:
        passed = rec.get("passed")
        rows.append([esc(rec["kind"]), esc(rec["a"]), esc(rec["b"]), f"<code>{esc(rec['case'])}</code>",
                     esc(rec["dtype"]), f"<code>{esc(rec['tensor'])}</code>", esc(R.fmt_sci(rec["max_abs"])),
                     esc(R.fmt_sci(rec["max_rel"])), esc(R.fmt_sci(rec["bound"])), esc(R.fmt_sci(rec["atol"])),
                     esc(R.fmt_sci(rec["rtol"])), esc(R.sig(rec["ratio"], 2) if rec["ratio"] is not None else "n/a"),
                     '<span class="ok">pass</span>' if passed else '<span class="bad">FAIL</span>'
                     if passed is False else na(None), f"<small>{esc(rec['reason'])}</small>"])
        csv.append([rec[k] for k in ("kind", "a", "b", "case", "dtype", "tensor", "max_abs", "max_rel", "bound",
                                     "atol", "rtol", "ratio", "passed", "reason", "source")])
        ids.append(rec["id"])
        classes.append("fail" if passed is False else "")
    parts.append("<h3>Every comparison</h3>")
    parts.append(ctx.page.table(
        "parity-records", cols, rows, csv_columns=["kind", "a", "b", "case", "dtype", "tensor", "max_abs", "max_rel",
                                                   "bound", "atol", "rtol", "error_over_tolerance", "passed",
                                                   "reason", "source"],
        csv_rows=csv, row_ids=ids, row_classes=classes, max_height=True,
        caption="one row per comparison (worst tensor); the same comparison from several Keras-backend sessions "
                "is kept once, at its worst"))
    parts.append("</section>")
    return "".join(parts)


# --- benchmark charts --------------------------------------------------------------------------------------------


def _spread(ctx: Ctx, time_row: dict[str, Any] | None, value: float) -> dict[str, Any]:
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


def _legend_row(ctx: Ctx, facets_series, extra: str = "") -> str:
    roles = sorted({ctx.role(lab) for _, ss in facets_series for lab, _ in ss}, key=lambda r: ROLE_RANK.get(r, 3))
    return f'<div class="legendrow">{R.role_legend(roles)}{extra}</div>'


WHISKERS = ('<span class="lg"><i class="whisker"></i>interquartile range of the repeats</span>'
            '<span class="lg"><i class="ciline"></i>99 % confidence interval</span>')


def section_throughput(ctx: Ctx) -> str:
    parts = ['<section id="throughput"><h2>Throughput</h2>']
    tp = ctx.bench_names(lambda n, s, m: _match("throughput", s) and m.get("param_names") == ctx.grid)
    tm = ctx.bench_names(lambda n, s, m: m.get("type") == "time" and m.get("param_names") == ctx.grid)
    fr = ctx.bench_names(lambda n, s, m: _match("frames", s) and m.get("param_names") == ctx.grid)
    pf = ctx.bench_names(lambda n, s, m: _match("faults", s) and m.get("param_names") == ctx.grid)
    if not (tp or tm):
        parts.append(f"<p>{na('no throughput or timing benchmark results: run make bench')}</p></section>")
        return "".join(parts)
    tp_name = tp[0] if tp else None
    tm_name = tm[0] if tm else None
    unit = ctx.meta(tp_name).get("unit") if tp_name else "sequences/s"
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
    parts.append(f'<p class="lead">Bar: {esc(unit)} (higher is better) = {how}. One chart per '
                 f"{esc(' · '.join(ctx.facet_params) or 'run')}. The subtitle and the table's “× best peer, same "
                 "framework” give each of ours over the fastest peer of its own framework: the geometric mean of the "
                 "per-round ratios (above 1 = faster) with its 95 % confidence interval, and a verdict only when the "
                 "interval excludes 1 (else “no clear difference”). Bars of different frameworks come from different "
                 "processes and are not ranked.</p>")
    fs = [(f, series_in(ctx, f)) for f in facets(ctx)]
    parts.append(_legend_row(ctx, fs, WHISKERS))
    charts, rows, csv = [], [], []
    for facet, series in fs:
        cats = []
        vals: dict[str, float] = {}
        first_row = len(rows)
        for label, combo in series:
            r_tp = ctx.lookup(tp_name, combo) if tp_name else None
            r_tm = ctx.lookup(tm_name, combo) if tm_name else None
            r_fr = ctx.lookup(fr[0], combo) if fr else None
            r_pf = ctx.lookup(pf[0], combo) if pf else None
            batch = ctx.batch(combo)
            bar: dict[str, Any]
            # bar and whiskers from one measurement: asv's timing repeats (batch ÷ time); the throughput track
            # (measured in another process) when there is no timing or no known batch size
            paired_sum = ctx.paired_summary(combo)
            if paired_sum and batch:
                bar = _paired_bar(paired_sum, batch)
            elif r_tm and r_tm["status"] == "ok" and batch:
                bar = {"value": batch / r_tm["value"], **_spread(ctx, r_tm, batch / r_tm["value"])}
            elif r_tp and r_tp["status"] == "ok":
                bar = {"value": r_tp["value"]}
            else:
                bar = {"value": None, "na": _reason(r_tp if r_tp and r_tp["status"] == "failed" else (r_tp or r_tm))}
            timing = ""
            implied = None
            if r_tm and r_tm["status"] == "ok":
                timing = (f"step {R.fmt_seconds(r_tm['value'])} (median of {int(r_tm['repeat'] or 0)} repeats, "
                          f"IQR {R.fmt_seconds(r_tm['q_25'])}–{R.fmt_seconds(r_tm['q_75'])})")
                if batch:
                    implied = batch / r_tm["value"]
            if bar.get("value") is not None:
                vals[label] = bar["value"]
                bar["tip"] = f"{label} · {facet_title(ctx, facet)}: {R.sig(bar['value'])} {unit}; {timing}"
            cats.append({"label": label, "role": ctx.role(label), "bars": [bar]})
            case = (ctx.env.get("cases") or {}).get("/".join(combo.get(p, "") for p in ctx.grid)) or {}
            note = _disagreement(r_tm, paired_sum, case)
            if not note and implied and not paired_sum and r_tp and r_tp["status"] == "ok" and abs(
                    r_tp["value"] / implied - 1) > DISAGREE:
                note = (f"{_short(tp_name)} = {R.sig(r_tp['value'])} is {R.sig(r_tp['value'] / implied)}× the "
                        f"timing benchmark's {R.sig(implied)}: the two processes disagree")
            verify = case.get("verify") or {}
            fv = lambda r: R.sig(r["value"]) if r and r["status"] == "ok" else R.na_short(_reason(r))  # noqa: E731
            rows.append([f"<b>{esc(label)}</b>", esc(ctx.role(label))] + [esc(v) for v in facet] + [
                _num(_bar_html(bar, R.sig)),
                _num(fv(r_tp) if tp_name else R.na_short("no throughput benchmark")),
                _num(_bar_html(_bar_from(r_tm), R.fmt_seconds)),
                _num(esc(R.fmt_seconds(r_tm["q_25"]) + " – " + R.fmt_seconds(r_tm["q_75"]))
                     if r_tm and r_tm["status"] == "ok" else ""),
                f'<span class="num">{int(r_tm["repeat"]) if r_tm and r_tm["repeat"] else ""}</span>',
                f'<span class="num">{fv(r_fr) if fr else ""}</span>',
                f'<span class="num">{_faults_cell(r_pf) if pf else ""}</span>',
                f'<span class="num">{esc(batch or "")}</span>',
                f'<span class="num">{esc(R.fmt_sci(verify.get("max_abs_err")) if "max_abs_err" in verify else "")}'
                f"</span>",
                f"<small>{esc(note or bar.get('na') or '')}</small>"])
            csv.append([label, ctx.role(label), *facet, bar.get("value"),
                        r_tp["value"] if r_tp else None, r_tm["value"] if r_tm else None,
                        r_tm["q_25"] if r_tm else None, r_tm["q_75"] if r_tm else None,
                        r_tm["ci_99_a"] if r_tm else None, r_tm["ci_99_b"] if r_tm else None,
                        r_tm["repeat"] if r_tm else None, r_fr["value"] if r_fr else None,
                        r_pf["value"] if r_pf and r_pf["status"] == "ok" else None, batch,
                        verify.get("max_abs_err"),
                        (r_tp or r_tm or {}).get("status", "absent"),
                        bar.get("na") or note])
        for (_label, combo), row, csv_row in zip(series, rows[first_row:], csv[first_row:]):
            v = ctx.verdict(combo)
            row.insert(len(row) - 1, _verdict_cell(v))
            csv_row[len(csv_row) - 2:len(csv_row) - 2] = (  # before status, note
                [v.get("ratio"), v.get("low"), v.get("high"), v.get("verdict"), v.get("peer"),
                 v.get("rounds_used"), v.get("rounds_dropped")] if v else [None] * 7)
        sub = _ours_vs_peers(ctx, series, vals, unit)
        axis = f"{unit} (higher is better)"
        svg = R.bar_chart(facet_title(ctx, facet), cats, [{"name": unit}], unit, axis_label=axis, subtitle=sub)
        charts.append(f"<figure>{svg}</figure>")
    parts.append(f'<div class="grid2">{"".join(charts)}</div>')
    cols = [("variant", ""), ("role", "")] + [(esc(p), "") for p in ctx.facet_params] + [
        (esc(unit) + " (bar)", "num"), (esc(_short(tp_name)) if tp_name else "track", "num"),
        ("step time (median)", "num"), ("step IQR", "num"), ("repeats", "num"), ("frames/s", "num"),
        ("page faults / step", "num"), ("batch", "num"), ("verified max-abs err", "num"),
        ("× best peer, same framework (paired, 95 % CI)", "num"), ("note", "")]
    parts.append(_folded(f"Table: throughput of every variant ({len(rows)} rows)", ctx.page.table(
        "throughput", cols, rows, caption="verified: outputs of batch element 0 vs the float64 reference before "
                                          "timing (from environment.json)",
        csv_columns=["variant", "role", *ctx.facet_params, unit, _short(tp_name) if tp_name else "track",
                     "step_seconds_median", "step_seconds_q25",
                     "step_seconds_q75", "step_seconds_ci99_low", "step_seconds_ci99_high", "repeats", "frames_per_s",
                     "minor_page_faults_per_step", "batch", "verify_max_abs_err",
                     "ours_over_best_same_framework_peer", "ci95_low", "ci95_high", "verdict", "best_peer",
                     "paired_rounds_used", "paired_rounds_dropped", "status", "reason_or_note"], csv_rows=csv)))
    parts.append("</section>")
    return "".join(parts)


def _faults_cell(record: dict[str, Any] | None) -> str:
    """Minor page faults per step (``PageFaults``), whole numbers; n/a with the reason where it was skipped."""
    if record and record["status"] == "ok":
        return esc(f"{record['value']:.0f}")
    return R.na_short(_reason(record))


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


def _disagreement(time_row: dict[str, Any] | None, summary: dict[str, Any] | None, case: dict[str, Any]) -> str:
    """Why asv's TimeStep and the paired rounds differ by more than :data:`DISAGREE` ('' when they agree)."""
    if not summary or not time_row or time_row["status"] != "ok" or not time_row["value"]:
        return ""
    ratio = time_row["value"] / summary["step_seconds"]
    if abs(ratio - 1) <= DISAGREE:
        return ""
    usage = case.get("timestep_usage") or {}
    why = (f"the machine was busy while TimeStep sampled ({usage['reason']})" if usage.get("contaminated") else
           "TimeStep ran in a process of its own, at another time: the machine's speed differed between the two")
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


def _ratio_cell(ratios: dict[str, tuple[float, str]], label: str, what: str) -> str:
    """A table cell with ``label``'s same-framework ratio (the peer on hover), or empty for peers and traps."""
    if label not in ratios:
        return '<span class="num"></span>'
    ratio, peer = ratios[label]
    return f'<span class="num" title="{esc(what)}: {esc(peer)}">{R.sig(ratio)}×</span>'


def _ours_vs_peers(ctx: Ctx, series: list[tuple[str, dict[str, str]]], vals: dict[str, float], unit: str) -> str:
    """The chart subtitle: each of ours against the best peer of its framework from the paired rounds, with the
    interval and the verdict. Nothing is ranked without paired rounds (different processes)."""
    if not vals:
        return "no results"
    found = [(label, ctx.verdict(combo)) for label, combo in series if ctx.role(label) == "ours"]
    found = [(label, v) for label, v in found if v]
    if found:
        return "ours ÷ best peer, same framework (paired, 95 % CI): " + " · ".join(
            f"{label} {verdict_text(v)}" for label, v in found)
    return "no paired comparison in this run: bars from separate processes, not ranked"


def _facet_charts(ctx: Ctx, measures: list[dict[str, Any]], unit: str, axis: str, value_of, ref_of=None,
                  sub_of=None) -> tuple[str, list]:
    """Charts with one bar per measure per series; measures without any value in a facet are dropped from its
    chart and named (with their reason) in the caption."""
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
        for k, (label, _combo) in enumerate(series):
            cats.append({"label": label, "role": ctx.role(label), "bars": [per_measure[i][k] for i in keep]})
            table.append((label, facet, [per_measure[i][k] for i in range(len(measures))]))
        refs = ref_of(facet) if ref_of else []
        sub = sub_of(facet, series, per_measure) if sub_of else ""
        svg = R.bar_chart(facet_title(ctx, facet), cats, [measures[i] for i in keep], unit, axis_label=axis,
                          subtitle=sub, ref_lines=refs)
        cap = "".join(f"<br>{esc(name)}: n/a — {esc(reason)}" for name, reason in dropped.items())
        charts.append(f"<figure>{svg}{'<figcaption>' + cap[4:] + '</figcaption>' if cap else ''}</figure>")
    return f'<div class="grid2">{"".join(charts)}</div>', table


def _prune(ctx: Ctx, measures: list[dict[str, Any]], value_of) -> tuple[list[dict[str, Any]], str]:
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


def _value_fn(ctx: Ctx):
    def value_of(m, combo):
        row = ctx.lookup(m["bench"], combo)
        bar = _bar_from(row)
        if bar.get("value") is not None:
            bar["tip"] = f"{combo.get(ctx.series_param)} · {m['name']}: {R.formatter(m.get('unit'))(bar['value'])}"
        return bar

    return value_of


def _note(bars: list[dict[str, Any]]) -> str:
    reasons = list(dict.fromkeys(b["na"] for b in bars if b.get("value") is None and b.get("na")))
    return f"<small>{esc('; '.join(reasons))}</small>"


def _folded(summary: str, table_html: str) -> str:
    return f'<details class="tbl"><summary>{esc(summary)}</summary>{table_html}</details>'


def _num(html: str) -> str:
    return f'<span class="num">{html}</span>'


def _bar_html(bar: dict[str, Any], fmt) -> str:
    return esc(fmt(bar["value"])) if bar.get("value") is not None else R.na_short(bar.get("na"))


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _pretty(short: str) -> str:
    s = re.sub(r"^(track|peakmem|time|mem)_", "", short).replace("_", " ")
    return s


def section_efficiency(ctx: Ctx) -> str:
    parts = ['<section id="efficiency"><h2>Efficiency</h2>']
    effs = ctx.bench_names(lambda n, s, m: _match("efficiency", s) and m.get("param_names") == ctx.grid)
    gfl = ctx.bench_names(lambda n, s, m: _match("gflops", s) and m.get("param_names") == ctx.grid)
    if not effs:
        parts.append(f"<p>{na('no efficiency benchmark (track_*fraction* / track_*efficiency*) results')}</p>"
                     "</section>")
        return "".join(parts)
    measures = [{"name": _pretty(_short(b)), "bench": b, "unit": "fraction", "color": R.MEASURE_COLORS[i % 6]}
                for i, b in enumerate(effs)]
    parts.append('<p class="lead">Achieved GFLOP/s (the spec\'s FLOP count ÷ median step time) as a fraction of the '
                 "peak the same framework measured in the same process: a large square matmul and the bare gate "
                 "convolution of the costliest layer. 100 % = as fast as the framework's own best kernel.</p>")
    measures, dropped = _prune(ctx, measures, _value_fn(ctx))
    parts.append(f'<div class="legendrow">{R.measure_legend(measures)}</div>{dropped}')
    charts, table = _facet_charts(ctx, measures, "fraction", "fraction of measured peak (higher is better)",
                                  _value_fn(ctx))
    parts.append(charts)
    rows, csv = [], []
    for label, facet, bars in table:
        combo = next(c for lab, c in series_in(ctx, facet) if lab == label)
        extra = [ctx.lookup(g, combo) for g in gfl]
        rows.append([f"<b>{esc(label)}</b>", esc(ctx.role(label))] + [esc(v) for v in facet]
                    + [_num(_bar_html(b, R.fmt_percent)) for b in bars]
                    + [_num(_bar_html(_bar_from(r), R.sig)) for r in extra] + [_note(bars)])
        csv.append([label, ctx.role(label), *facet] + [b.get("value") for b in bars]
                   + [r["value"] if r else None for r in extra])
    cols = [("variant", ""), ("role", "")] + [(esc(p), "") for p in ctx.facet_params] + [
        (esc(m["name"]), "num") for m in measures] + [(esc(_pretty(_short(g))) + " (GFLOP/s)", "num") for g in gfl] + [
        ("note", "")]
    parts.append(_folded(f"Table: efficiency and GFLOP/s ({len(rows)} rows)", ctx.page.table(
        "efficiency", cols, rows, csv_rows=csv,
        csv_columns=["variant", "role", *ctx.facet_params] + [_short(m["bench"]) for m in measures]
        + [_short(g) for g in gfl])))
    parts.append("</section>")
    return "".join(parts)


def section_memory(ctx: Ctx) -> str:
    parts = ['<section id="memory"><h2>Memory</h2>']
    host = ctx.bench_names(lambda n, s, m: m.get("type") in ("peakmemory", "memory")
                           and m.get("param_names") == ctx.grid)
    base = ctx.bench_names(lambda n, s, m: m.get("type") in ("peakmemory", "memory")
                           and m.get("param_names") == [ctx.series_param])
    dev = ctx.bench_names(lambda n, s, m: _match("device_mem", s) and m.get("param_names") == ctx.grid)
    spec = ctx.bench_names(lambda n, s, m: _match("spec_mem", s) and set(m.get("param_names") or []) <= set(ctx.grid))
    train = ctx.bench_names(lambda n, s, m: _match("train_mem", s) and m.get("param_names") == ctx.grid)
    if not (host or dev or train):
        parts.append(f"<p>{na('no memory benchmark (peakmem_* / track_*device* / track_train_rss_*) results')}"
                     "</p></section>")
        return "".join(parts)
    measures = []
    for b in host:
        name = "host peak RSS" + (f" ({_pretty(_short(b))})" if len(host) > 1 else "")
        measures.append({"name": name, "bench": b, "unit": "bytes"})
    if host and base:
        measures.append({"name": "host peak − import baseline", "bench": host[0], "minus": base[0], "unit": "bytes"})

    def train_key(bench: str) -> str | None:
        return next((k for k in TRAIN_MEM_NAMES if f"train_rss_{k}" in _short(bench)), None)

    order = list(TRAIN_MEM_NAMES)
    for b in sorted(train, key=lambda b: (order.index(train_key(b)) if train_key(b) else len(order), b)):
        key = train_key(b)
        measures.append({"name": TRAIN_MEM_NAMES[key] if key else _pretty(_short(b)), "bench": b, "unit": "bytes",
                         "train_increase": key == "increase"})
    for b in dev:
        name = "device peak" + (f" ({_pretty(_short(b))})" if len(dev) > 1 else "")
        measures.append({"name": name, "bench": b, "unit": "bytes"})
    for i, m in enumerate(measures):
        m["color"] = R.MEASURE_COLORS[i % 6]
    plain = _value_fn(ctx)

    def value_of(m, combo):
        if "minus" not in m:
            return plain(m, combo)
        a, b = ctx.lookup(m["bench"], combo), ctx.lookup(m["minus"], combo)
        if not a or a["status"] != "ok":
            return _bar_from(a)
        if not b or b["status"] != "ok":
            return {"value": None, "na": f"no import baseline ({_reason(b)})"}
        return {"value": a["value"] - b["value"],
                "tip": f"{combo.get(ctx.series_param)}: {R.fmt_bytes(a['value'])} − {R.fmt_bytes(b['value'])}"}

    def ref_of(facet):
        combo = dict(zip(ctx.facet_params, facet))
        out = []
        for s in spec:
            r = ctx.lookup(s, combo)
            if r and r["status"] == "ok":
                out.append((r["value"], f"spec: {_pretty(_short(s))}"))
        return out

    measures, dropped = _prune(ctx, measures, value_of)
    legend = R.measure_legend(measures)
    if spec:
        legend += '<span class="lg"><i class="refl"></i>spec prediction (activations kept by a training step)</span>'
    parts.append('<p class="lead">Host peak = peak resident memory of the benchmark process (import, build, compile, '
                 "verify, one more step); the import baseline is a process that only imports the framework, so the "
                 "difference approximates what the model and its step add. The training figures come from a fresh "
                 "process per combination (mode train): the increase is peak RSS over the first three steps, "
                 "compilation included, minus RSS after the build; the warm step is one more, warmed-up step's peak "
                 "over the build; held is what stays resident between steps after malloc_trim. Device peak is the "
                 "framework allocator's peak on a GPU (n/a on a CPU). The dashed line is the spec's prediction of "
                 "the activations a training step keeps; “increase / spec” in the table is the ratio to it.</p>")
    parts.append(f'<div class="legendrow">{legend}</div>{dropped}')
    charts, table = _facet_charts(ctx, measures, "bytes", "bytes (lower is better)", value_of, ref_of=ref_of)
    parts.append(charts)
    inc = next((i for i, m in enumerate(measures) if m.get("train_increase")), None)
    vs_peer: dict[tuple[str, ...], dict[str, tuple[float, str]]] = {}
    if inc is not None:
        per_facet: dict[tuple[str, ...], dict[str, float]] = {}
        for label, facet, bars in table:
            if bars[inc].get("value") is not None:
                per_facet.setdefault(tuple(facet), {})[label] = bars[inc]["value"]
        vs_peer = {f: same_framework_ratios(ctx, v, higher_is_better=False) for f, v in per_facet.items()}
    rows, csv = [], []
    for label, facet, bars in table:
        refs = ref_of(facet)
        spec_bytes = refs[0][0] if refs else None
        ratio = None
        if inc is not None and spec_bytes and bars[inc].get("value") is not None:
            ratio = bars[inc]["value"] / spec_bytes
        peer_ratios = vs_peer.get(tuple(facet), {})
        ratio_cell = [_num(f"{ratio:.2f}×" if ratio is not None else R.na_short("no training increase or spec")),
                      _ratio_cell(peer_ratios, label, "training increase ÷ the lowest peer of its framework")]
        rows.append([f"<b>{esc(label)}</b>", esc(ctx.role(label))] + [esc(v) for v in facet]
                    + [_num(_bar_html(b, R.fmt_bytes)) for b in bars]
                    + [_num(R.fmt_bytes(spec_bytes) if refs else R.na_short("no spec prediction"))]
                    + (ratio_cell if inc is not None else []) + [_note(bars)])
        csv.append([label, ctx.role(label), *facet] + [b.get("value") for b in bars] + [spec_bytes]
                   + ([ratio, peer_ratios[label][0] if label in peer_ratios else None] if inc is not None else []))
    cols = [("variant", ""), ("role", "")] + [(esc(p), "") for p in ctx.facet_params] + [
        (esc(m["name"]), "num") for m in measures] + [("spec prediction", "num")] + (
        [("increase / spec", "num"), ("increase × lowest peer, same framework", "num")] if inc is not None else []
    ) + [("note", "")]
    parts.append(_folded(f"Table: memory ({len(rows)} rows)", ctx.page.table(
        "memory", cols, rows, csv_rows=csv,
        csv_columns=["variant", "role", *ctx.facet_params] + [m["name"] for m in measures]
        + ["spec_prediction_bytes"]
        + (["training_increase_over_spec", "training_increase_over_lowest_same_framework_peer"] if inc is not None
           else []))))
    parts.append("</section>")
    return "".join(parts)


def section_compile(ctx: Ctx) -> str:
    parts = ['<section id="compile"><h2>Compile / first call</h2>']
    comp = ctx.bench_names(lambda n, s, m: _match("compile", s) and m.get("param_names") == ctx.grid)
    if not comp:
        parts.append(f"<p>{na('no compile / first-call benchmark (track_*first_call* / track_*compile*) results')}"
                     "</p></section>")
        return "".join(parts)
    measures = [{"name": _pretty(_short(b)), "bench": b, "unit": "seconds", "color": R.MEASURE_COLORS[i % 6]}
                for i, b in enumerate(comp)]
    parts.append('<p class="lead">Wall time of the first call on the benchmark input: tracing, compilation (XLA, '
                 "tf.function, inductor) and one execution. Paid once per process and input shape.</p>")
    fs = [(f, series_in(ctx, f)) for f in facets(ctx)]
    parts.append(_legend_row(ctx, fs) if len(measures) == 1 else
                 f'<div class="legendrow">{R.measure_legend(measures)}</div>')
    charts, table = _facet_charts(ctx, measures, "seconds", "seconds (lower is better)", _value_fn(ctx))
    parts.append(charts)
    rows = [[f"<b>{esc(lab)}</b>", esc(ctx.role(lab))] + [esc(v) for v in facet]
            + [_num(_bar_html(b, R.fmt_seconds)) for b in bars] + [_note(bars)] for lab, facet, bars in table]
    csv = [[lab, ctx.role(lab), *facet] + [b.get("value") for b in bars] for lab, facet, bars in table]
    cols = [("variant", ""), ("role", "")] + [(esc(p), "") for p in ctx.facet_params] + [
        (esc(m["name"]), "num") for m in measures] + [("note", "")]
    parts.append(_folded(f"Table: first-call times ({len(rows)} rows)", ctx.page.table(
        "compile", cols, rows, csv_rows=csv,
        csv_columns=["variant", "role", *ctx.facet_params] + [_short(b) + "_seconds" for b in comp])))
    parts.append("</section>")
    return "".join(parts)


def section_history(ctx: Ctx) -> str:
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
    key_names = [ctx.bench_names(lambda n, s, m: _match("throughput", s) and m.get("param_names") == ctx.grid),
                 ctx.bench_names(lambda n, s, m: m.get("type") == "time" and m.get("param_names") == ctx.grid),
                 ctx.bench_names(lambda n, s, m: _match("compile", s) and m.get("param_names") == ctx.grid)]
    shown = [names[0] for names in key_names if names]
    parts.append(f'<p class="lead">{len(commits)} commits on {esc(ctx.machine)}, oldest to newest; one line per '
                 f"variant. Hover a point for its value.</p>")
    for bench in shown:
        meta = ctx.meta(bench)
        unit = meta.get("unit") or ""
        parts.append(f"<h3>{esc(_pretty(_short(bench)))} <span class=\"muted\">({esc(unit)})</span></h3>")
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
        parts.append(f'<div class="grid2">{"".join(charts)}</div>')
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
    parts.append(ctx.page.table("history", [("benchmark", ""), ("parameter combinations", "num"),
                                            ("commits", "num"), ("values", "num")], table_rows,
                                csv_columns=["benchmark", "params", "commit", "date", "env", "value", "unit"],
                                csv_rows=csv, caption="the CSV holds every value of every commit on this machine"))
    parts.append("</section>")
    return "".join(parts)


def section_all(ctx: Ctx) -> str:
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
    rows, csv, classes = [], [], []
    for r in keep:
        fmt = R.formatter(r["unit"])
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items())
        value = f'<span class="num">{esc(fmt(r["value"]))}</span>' if r["status"] == "ok" else na(
            r["reason"], "failed" if r["status"] == "failed" else "n/a")
        spread = (f"{fmt(r['q_25'])} – {fmt(r['q_75'])}" if r["q_25"] is not None and r["q_75"] is not None else "")
        rows.append([f"<code>{esc('.'.join(r['benchmark'].rsplit('.', 2)[-2:]))}</code>", esc(params), value,
                     f'<span class="num">{esc(spread)}</span>',
                     f'<span class="num">{int(r["repeat"]) if r["repeat"] else ""}</span>', esc(r["unit"]),
                     esc(r["status"]) + (" (stale version)" if r["stale"] else "")])
        csv.append([r["benchmark"], params, r["unit"], r["status"], r["value"], r["ci_99_a"], r["ci_99_b"],
                    r["q_25"], r["q_75"], r["repeat"], r["number"], r["reason"], r["commit"], r["machine"],
                    r["env_name"]])
        classes.append("fail" if r["status"] == "failed" else "")
    parts.append(ctx.page.table(
        "all-results", [("benchmark", ""), ("parameters", ""), ("value", "num"), ("IQR", "num"), ("repeats", "num"),
                        ("unit", ""), ("status", "")], rows, csv_rows=csv, row_classes=classes, max_height=True,
        csv_columns=["benchmark", "params", "unit", "status", "value", "ci_99_low", "ci_99_high", "q25", "q75",
                     "repeats", "number", "reason", "commit", "machine", "env"],
        caption=f"{len(keep)} rows of commit {(ctx.commit or '')[:8]}"
                + (f"; {hidden} combinations not selected by the profile are left out" if hidden else "")))
    parts.append("</section>")
    return "".join(parts)


# ------------------------------------------------------------------------------------------------------------


def render_report(
    results_dir: str | Path = DEFAULT_RESULTS,
    parity_dir: str | Path = DEFAULT_PARITY,
    *,
    env_file: str | Path | None = None,
    machine: str | None = None,
    loader: str = "json",
    title: str = "ConvLSTM benchmark report",
    generated: str | None = None,
) -> str:
    """The report as one HTML string."""
    results_dir, parity_dir = Path(results_dir), Path(parity_dir)
    env_path = Path(env_file) if env_file else results_dir.parent / "environment.json"
    ctx = make_context(results_dir, parity_dir, env_path, machine, loader)
    generated = generated or _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    throughput = section_throughput(ctx)  # first: the overview quotes its winners
    sections = [
        section_overview(ctx),
        section_environment(ctx, generated),
        section_parity(ctx),
        throughput,
        section_efficiency(ctx),
        section_memory(ctx),
        section_compile(ctx),
        section_history(ctx),
        section_all(ctx),
    ]
    nav = [("overview", "Overview"), ("environment", "Environment"), ("parity", "Parity"),
           ("throughput", "Throughput"), ("efficiency", "Efficiency"), ("memory", "Memory"),
           ("compile", "Compile"), ("history", "History"), ("results", "All results")]
    cpu = (ctx.env.get("host") or {}).get("cpu") or ctx.asv.machines.get(ctx.machine or "", {}).get("cpu")
    meta = " · ".join(x for x in (
        f"machine <code>{esc(ctx.machine)}</code>" if ctx.machine else "no benchmark results",
        esc(cpu) if cpu else "",
        f"commit <code>{esc(ctx.commit[:8])}</code>" if ctx.commit else "",
        f"generated {esc(generated)}",
    ) if x)
    footer = ("Built by <code>convlstm-bench report</code> from asv results (reports/asv/results), "
              "reports/asv/environment.json and the parity records of <code>make test</code> (reports/parity). "
              "Self-contained: no external resources.")
    return R.page(title, meta, nav, "".join(sections), ctx.page.data_script(), footer)


def build_report(
    results_dir: str | Path = DEFAULT_RESULTS,
    parity_dir: str | Path = DEFAULT_PARITY,
    output: str | Path = DEFAULT_OUTPUT,
    **kwargs: Any,
) -> Path:
    """Render the report and write it atomically to ``output``; returns the path."""
    from implementations.fileio import atomic_write

    text = render_report(results_dir, parity_dir, **kwargs).encode("utf-8")
    return atomic_write(output, lambda fh: fh.write(text))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m reports.build`` (the same options as ``convlstm-bench report``)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m reports.build", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)
    return run(args)


def add_arguments(p) -> None:
    p.add_argument("--results", default=str(DEFAULT_RESULTS), help="asv results directory (default: %(default)s)")
    p.add_argument("--parity", default=str(DEFAULT_PARITY), help="parity records directory (default: %(default)s)")
    p.add_argument("--environment", help="environment JSON (default: <results>/../environment.json)")
    p.add_argument("--machine", help="asv machine to report (default: the one with the newest results)")
    p.add_argument("-o", "--output", default=str(DEFAULT_OUTPUT), help="HTML file to write (default: %(default)s)")


def run(args) -> int:
    out = build_report(args.results, args.parity, args.output, env_file=args.environment, machine=args.machine)
    size = out.stat().st_size
    print(f"wrote {out} ({size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
