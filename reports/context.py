"""What every section of the report reads: the inputs of one run (:class:`Ctx`), its facets and series.

Benchmarks are recognised by asv type and name patterns (:data:`PATTERNS`), parameters by ``param_names`` in
``benchmarks.json``: the series of a chart is the ``variant`` parameter (else the first), the other parameters of
the main grid make the facets. The paired-comparison lookups (:meth:`Ctx.paired_group`, :meth:`Ctx.paired_summary`,
:meth:`Ctx.verdict`) read the ``comparisons`` that the benchmarks' paired rounds write to ``environment.json``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from . import asv_data, parity_data
from . import render as R

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


def match(kind: str, short: str) -> bool:
    """Whether the benchmark method ``short`` is a ``track_*`` benchmark of ``kind`` (a key of :data:`PATTERNS`)."""
    return short.startswith("track_") and re.search(PATTERNS[kind], short) is not None


@dataclasses.dataclass
class Ctx:
    """One run to report: the environment, the asv and parity data, the machine and commit shown, and the grid."""

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

    def grid_benchmarks(self, kind: str) -> list[str]:
        """The ``track_*`` benchmarks of ``kind`` (:data:`PATTERNS`) parametrised by the main grid."""
        return self.bench_names(lambda n, s, m: match(kind, s) and m.get("param_names") == self.grid)

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

    def case(self, combo: dict[str, str]) -> dict[str, Any]:
        """The benchmark case of ``combo`` in environment.json (input shape, verification, usage), or {}."""
        return (self.env.get("cases") or {}).get("/".join(combo.get(p, "") for p in self.grid)) or {}

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
    """Load everything the report shows, for ``machine`` (default: the newest) and its newest commit."""
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
        not match("throughput", r["short_name"]), r["kind"] != "time", -len(r["param_names"])))
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
    """The facet values (one chart each) with at least one active combination, in benchmark parameter order."""
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


def bar_from(row: dict[str, Any] | None, absent: str = "no result in this run") -> dict[str, Any]:
    """A chart bar from one result row: its value, or none and the reason."""
    if row is None:
        return {"value": None, "na": absent}
    if row["status"] != "ok":
        return {"value": None, "na": row["reason"]}
    return {"value": row["value"]}


def reason(row: dict[str, Any] | None) -> str:
    """Why a result row has no value (or that there is no row)."""
    return "no result in this run" if row is None else row["reason"]
