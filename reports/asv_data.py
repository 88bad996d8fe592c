"""asv 0.6 results -> tidy rows (one dict per result file × benchmark × parameter combination).

asv writes one file per machine, commit and environment, ``results/<machine>/<commit[:8]>-<env_name>.json``
(API version 2)::

    {"commit_hash", "env_name", "date" (commit date, ms), "params" (machine, python, ...), "python",
     "requirements", "env_vars", "durations",
     "result_columns": ["result", "params", "version", "started_at", "duration", "stats_ci_99_a",
                        "stats_ci_99_b", "stats_q_25", "stats_q_75", "stats_number", "stats_repeat",
                        "samples", "profile"],
     "results": {benchmark: [one value per column, trailing nulls dropped]}, "version": 2}

``result`` and every ``stats_*``/``samples`` column are lists aligned with ``itertools.product(*params)``, or
``null`` as a whole. In ``result`` a ``null`` entry is a **failed** benchmark (it raised, or timed out), ``NaN``
is **skipped** (``NotImplementedError`` in ``setup``, or the combination was not selected by ``--bench``).
``params`` holds the parameter values as Python reprs (``"'torch'"``). Stats exist for timing benchmarks only.

``benchmarks.json`` (beside the machine folders) describes every benchmark: ``name``, ``type``, ``unit``,
``param_names``, ``params``, ``version``.

:func:`load` returns a :class:`AsvData` (the tidy rows plus machine and benchmark metadata); ``loader="json"``
parses the files directly, ``loader="asv"`` goes through :class:`asv.results.Results` (needs asv installed).
"""

from __future__ import annotations

import ast
import dataclasses
import datetime as _dt
import itertools
import json
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

#: The columns of asv 0.6's compact format, in asv's order (used when a file lacks ``result_columns``).
RESULT_COLUMNS = [
    "result", "params", "version", "started_at", "duration", "stats_ci_99_a", "stats_ci_99_b", "stats_q_25",
    "stats_q_75", "stats_number", "stats_repeat", "samples", "profile",
]
STAT_KEYS = ["ci_99_a", "ci_99_b", "q_25", "q_75", "number", "repeat"]

REASON_FAILED = "failed: the benchmark raised or timed out (asv keeps no message; see reports/asv/asv-run-*.log)"
REASON_SKIPPED = "skipped: setup raised NotImplementedError (unsupported here, or the framework is missing)"
REASON_NOT_SELECTED = "not selected in this run (outside the benchmark profile)"
REASON_SKIPPED_UNKNOWN = "skipped or not selected (NaN in asv's results)"
REASON_NOT_RUN = "no result for this benchmark in this results file"


class AsvDataError(Exception):
    """A results file that cannot be read; :func:`load` collects these as warnings."""


def parse_param(value: Any) -> str:
    """asv stores parameter values as reprs (``"'torch'"``); return the plain string (``torch``)."""
    if not isinstance(value, str):
        return str(value)
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return value
    return parsed if isinstance(parsed, str) else str(parsed)


def is_nan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)


def _number(x: Any) -> float | None:
    if x is None or isinstance(x, bool):
        return None
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) or math.isinf(x) else x


def _iso(ms: Any) -> str | None:
    x = _number(ms)
    if x is None:
        return None
    return _dt.datetime.fromtimestamp(x / 1000.0, tz=_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _read_json(path: Path) -> Any:
    # asv writes NaN/Infinity literals; Python's json reads them.
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AsvDataError(f"{path}: unreadable JSON ({exc})") from None


# --------------------------------------------------------------------------------------------------------------
# One results file -> {benchmark: {params, result, stats, samples, version, started_at, duration}}


def _expand(column: Any, n: int) -> list:
    """A per-combination column: a list of n entries (``null`` as a whole means n Nones)."""
    if column is None:
        return [None] * n
    if not isinstance(column, list):
        return [column] + [None] * (n - 1)
    return (list(column) + [None] * n)[:n]


def _combos(params: Sequence[Sequence[str]]) -> list[tuple[str, ...]]:
    return list(itertools.product(*params)) if params else [()]


def parse_result_file(data: dict[str, Any]) -> dict[str, Any]:
    """The compact asv 0.6 format (a loaded results JSON) -> a normalised dict; see :func:`read_result_file`."""
    if not isinstance(data, dict) or "results" not in data:
        raise AsvDataError("not an asv results file (no 'results')")
    version = data.get("version")
    if version not in (None, 2):
        raise AsvDataError(f"asv results API version {version!r}; this report reads version 2 (asv >= 0.5)")
    columns = data.get("result_columns") or RESULT_COLUMNS
    benchmarks: dict[str, Any] = {}
    for name, row in (data.get("results") or {}).items():
        if not isinstance(row, list):
            raise AsvDataError(f"benchmark {name}: expected a list aligned with result_columns")
        cols = dict(zip(columns, row))  # trailing nulls are dropped by asv: missing -> None
        params = cols.get("params") or []
        n = len(_combos(params))
        stats_cols = {k: _expand(cols.get(f"stats_{k}"), n) for k in STAT_KEYS}
        stats = []
        for j in range(n):
            s = {k: stats_cols[k][j] for k in STAT_KEYS if stats_cols[k][j] is not None}
            stats.append(s or None)
        benchmarks[name] = {
            "params": params,
            "result": _expand(cols.get("result"), n),
            "stats": stats,
            "samples": _expand(cols.get("samples"), n),
            "version": cols.get("version"),
            "started_at": cols.get("started_at"),
            "duration": cols.get("duration"),
        }
    return {
        "commit_hash": data.get("commit_hash"),
        "env_name": data.get("env_name"),
        "date": data.get("date"),
        "params": data.get("params") or {},
        "python": data.get("python"),
        "requirements": data.get("requirements") or {},
        "env_vars": data.get("env_vars") or {},
        "durations": data.get("durations") or {},
        "benchmarks": benchmarks,
    }


def _via_asv(path: Path) -> dict[str, Any]:
    """The same normalised dict through asv's own :class:`asv.results.Results` loader."""
    from asv import util
    from asv.results import Results

    try:
        res = Results.load(str(path))
    except util.UserError as exc:
        raise AsvDataError(str(exc)) from None
    benchmarks = {}
    for key in res.get_all_result_keys():
        params = res.get_result_params(key)
        n = len(_combos(params))
        stats = res.get_result_stats(key, params)
        samples = res.get_result_samples(key, params)
        benchmarks[key] = {
            "params": params,
            "result": _expand(res.get_result_value(key, params), n),
            "stats": [s or None for s in _expand(stats, n)],
            "samples": _expand(samples, n),
            "version": res.benchmark_version.get(key),
            "started_at": res.started_at.get(key),
            "duration": res.duration.get(key),
        }
    raw = _read_json(path)
    return {
        "commit_hash": res.commit_hash,
        "env_name": res.env_name,
        "date": res.date,
        "params": res.params,
        "python": raw.get("python"),
        "requirements": raw.get("requirements") or {},
        "env_vars": res.env_vars,
        "durations": raw.get("durations") or {},
        "benchmarks": benchmarks,
    }


def read_result_file(path: str | Path, loader: str = "json") -> dict[str, Any]:
    """One results file -> ``{commit_hash, env_name, date, params, python, requirements, env_vars, durations,
    benchmarks: {name: {params, result, stats, samples, version, started_at, duration}}}`` where ``result``,
    ``stats`` (dicts or None) and ``samples`` are lists aligned with ``itertools.product(*params)``."""
    path = Path(path)
    if loader == "asv":
        return _via_asv(path)
    if loader != "json":
        raise ValueError(f"loader must be 'json' or 'asv', not {loader!r}")
    try:
        return parse_result_file(_read_json(path))
    except AsvDataError as exc:
        raise AsvDataError(f"{path}: {exc}") from None


# --------------------------------------------------------------------------------------------------------------
# --bench selection, as asv applies it


def bench_regexes(asv_command: Sequence[str] | None) -> list[str] | None:
    """The ``--bench``/``-b`` regexes of an ``asv run`` command line; None when there is no command."""
    if not asv_command:
        return None
    out: list[str] = []
    args = list(asv_command)
    for i, arg in enumerate(args):
        if arg in ("--bench", "-b") and i + 1 < len(args):
            out.append(args[i + 1])
        elif arg.startswith("--bench="):
            out.append(arg.split("=", 1)[1])
    return out


def is_selected(name: str, param_reprs: Sequence[str], regexes: Sequence[str] | None) -> bool | None:
    """Whether ``asv run --bench`` selected this combination (asv matches ``name(p1, p2)``); None: unknown."""
    if regexes is None:
        return None
    if not regexes:
        return True
    full = f"{name}({', '.join(param_reprs)})" if param_reprs else name
    for reg in regexes:
        try:
            if re.search(reg, full):
                return True
        except re.error:
            return None
    return False


# --------------------------------------------------------------------------------------------------------------
# The tidy table


@dataclasses.dataclass
class AsvData:
    """Tidy asv results: ``rows`` (one dict per file × benchmark × combination) and metadata."""

    rows: list[dict[str, Any]]
    benchmarks: dict[str, dict[str, Any]]
    machines: dict[str, dict[str, Any]]
    files: list[dict[str, Any]]
    warnings: list[str]

    @property
    def empty(self) -> bool:
        return not self.rows

    def commits(self, machine: str | None = None) -> list[dict[str, Any]]:
        """Distinct (machine, commit) with their date, oldest first."""
        seen: dict[tuple, dict[str, Any]] = {}
        for f in self.files:
            if machine is not None and f["machine"] != machine:
                continue
            key = (f["machine"], f["commit_hash"])
            cur = seen.setdefault(key, {"machine": f["machine"], "commit": f["commit_hash"], "date": f["date"],
                                        "envs": []})
            cur["envs"].append(f["env_name"])
            cur["date"] = max(x for x in (cur["date"], f["date"], 0) if x is not None)
        return sorted(seen.values(), key=lambda c: (c["date"] or 0, c["commit"] or ""))


def benchmark_kind(name: str, meta: dict[str, Any] | None = None) -> str:
    """asv's benchmark type from metadata, else from the method's prefix."""
    if meta and meta.get("type"):
        return str(meta["type"])
    short = name.rsplit(".", 1)[-1]
    for prefix, kind in (("time_", "time"), ("peakmem_", "peakmemory"), ("mem_", "memory"), ("track_", "track")):
        if short.startswith(prefix):
            return kind
    return "unknown"


def load_benchmarks(results_dir: str | Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """``benchmarks.json`` -> {name: metadata}; missing or unreadable: ({}, [warning])."""
    path = Path(results_dir) / "benchmarks.json"
    if not path.is_file():
        return {}, [f"{path}: not found (benchmark units and parameter names are guessed)"]
    try:
        data = _read_json(path)
    except AsvDataError as exc:
        return {}, [str(exc)]
    if not isinstance(data, dict):
        return {}, [f"{path}: not a JSON object"]
    return {k: v for k, v in data.items() if k != "version" and isinstance(v, dict)}, []


def load(
    results_dir: str | Path,
    *,
    loader: str = "json",
    environment: dict[str, Any] | None = None,
) -> AsvData:
    """Every results file under ``results_dir`` as tidy rows. A missing or empty directory gives no rows;
    unreadable files are skipped with a warning. ``environment`` (``reports/asv/environment.json``) adds the
    ``--bench`` selection of its run and per-variant device kinds, which refine the reasons of NaN results."""
    results_dir = Path(results_dir)
    benchmarks, warnings = load_benchmarks(results_dir) if results_dir.is_dir() else ({}, [])
    machines: dict[str, dict[str, Any]] = {}
    files: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    if not results_dir.is_dir():
        return AsvData(rows, benchmarks, machines, files, [f"{results_dir}: no asv results directory"])
    env = environment or {}
    run = env.get("run") or {}
    variants = env.get("variants") or {}
    for mdir in sorted(p for p in results_dir.iterdir() if p.is_dir()):
        mfile = mdir / "machine.json"
        if mfile.is_file():
            try:
                machines[mdir.name] = {k: v for k, v in _read_json(mfile).items() if k != "version"}
            except (AsvDataError, AttributeError) as exc:
                warnings.append(str(exc))
                machines[mdir.name] = {"machine": mdir.name}
        else:
            machines[mdir.name] = {"machine": mdir.name}
        for path in sorted(mdir.glob("*.json")):
            if path.name == "machine.json":
                continue
            try:
                data = read_result_file(path, loader=loader)
            except (AsvDataError, OSError, KeyError, TypeError, ValueError) as exc:
                warnings.append(f"skipped {path}: {exc}")
                continue
            machine = (data["params"] or {}).get("machine") or mdir.name
            regexes = None
            if run.get("commit") and run.get("commit") == data["commit_hash"] and run.get("machine") in (None, machine):
                regexes = bench_regexes(run.get("asv_command"))
            info = {
                "path": str(path), "machine": machine, "commit_hash": data["commit_hash"],
                "env_name": data["env_name"], "date": data["date"], "params": data["params"],
                "python": data["python"], "requirements": data["requirements"], "env_vars": data["env_vars"],
                "durations": data["durations"],
            }
            files.append(info)
            rows.extend(_rows_of_file(info, data["benchmarks"], benchmarks, regexes, variants))
    return AsvData(rows, benchmarks, machines, files, warnings)


def _rows_of_file(info, file_benchmarks, benchmarks, regexes, variants) -> Iterable[dict[str, Any]]:
    commit = info["commit_hash"] or ""
    for name, b in sorted(file_benchmarks.items()):
        meta = benchmarks.get(name) or {}
        params = b["params"] or []
        names = list(meta.get("param_names") or [])
        if len(names) != len(params):
            names = [f"param{i + 1}" for i in range(len(params))]
        stale = bool(meta.get("version") and b["version"] and meta["version"] != b["version"])
        for j, combo in enumerate(_combos(params)):
            values = {n: parse_param(v) for n, v in zip(names, combo)}
            raw = b["result"][j]
            stats = b["stats"][j] or {}
            samples = b["samples"][j]
            if raw is None:
                status, reason = "failed", REASON_FAILED
            elif is_nan(raw) or _number(raw) is None:
                sel = is_selected(name, combo, regexes)
                status = "skipped"
                if sel is False:
                    reason = REASON_NOT_SELECTED
                elif sel is None:
                    reason = REASON_SKIPPED_UNKNOWN
                else:
                    reason = _skip_reason(name, values, variants)
            else:
                status, reason = "ok", ""
            yield {
                "machine": info["machine"],
                "commit": commit,
                "commit_short": commit[:8],
                "date": _iso(info["date"]),
                "date_ms": info["date"],
                "env_name": info["env_name"],
                "benchmark": name,
                "short_name": name.rsplit(".", 1)[-1],
                "kind": benchmark_kind(name, meta),
                "unit": meta.get("unit") or ("seconds" if benchmark_kind(name, meta) == "time" else
                                             "bytes" if "mem" in benchmark_kind(name, meta) else ""),
                "param_names": names,
                "params": values,
                "param_reprs": list(combo),
                "value": _number(raw) if status == "ok" else None,
                "status": status,
                "reason": reason,
                "selected": is_selected(name, combo, regexes),
                "ci_99_a": _number(stats.get("ci_99_a")),
                "ci_99_b": _number(stats.get("ci_99_b")),
                "q_25": _number(stats.get("q_25")),
                "q_75": _number(stats.get("q_75")),
                "number": _number(stats.get("number")),
                "repeat": _number(stats.get("repeat")),
                "samples": [s for s in samples if _number(s) is not None] if isinstance(samples, list) else None,
                "version": b["version"],
                "stale": stale,
                "started_at": _iso(b["started_at"]),
                "duration": _number(b["duration"]),
            }


def _skip_reason(name: str, values: dict[str, str], variants: dict[str, Any]) -> str:
    """A NaN result that ``--bench`` selected: say why, as far as environment.json tells."""
    variant = values.get("variant")
    if variants and variant is not None:
        v = variants.get(variant)
        if v is None:
            return (f"skipped: variant {variant!r} never got ready (its framework is missing, failed to import, "
                    "or the combination is unsupported)")
        if "device" in name.lower() and v.get("device_kind") == "cpu":
            return "not measured: the variant ran on a CPU (no device allocator to read)"
    return REASON_SKIPPED


# --------------------------------------------------------------------------------------------------------------
# Helpers over the rows


CSV_COLUMNS = [
    "machine", "commit", "date", "env_name", "benchmark", "params", "unit", "status", "value", "ci_99_a",
    "ci_99_b", "q_25", "q_75", "repeat", "number", "reason",
]


def flat(row: dict[str, Any]) -> dict[str, Any]:
    """A row with parameters flattened to ``param.<name>`` columns (CSV, DataFrame)."""
    out = {k: v for k, v in row.items() if k not in ("params", "param_names", "param_reprs", "samples")}
    out["params"] = ", ".join(f"{k}={v}" for k, v in row["params"].items())
    out["n_samples"] = len(row["samples"]) if row.get("samples") else 0
    for k, v in row["params"].items():
        out[f"param.{k}"] = v
    return out


def to_dataframe(rows: Iterable[dict[str, Any]]):
    """The rows as a pandas DataFrame (pandas imported here only)."""
    import pandas as pd

    return pd.DataFrame([flat(r) for r in rows])


def latest(data: AsvData, machine: str | None = None) -> tuple[str | None, str | None]:
    """(machine, commit) of the newest results: the machine with the newest file, its newest commit."""
    if not data.files:
        return None, None
    files = [f for f in data.files if machine is None or f["machine"] == machine] or data.files
    started: dict[tuple, str] = {}
    for r in data.rows:
        k = (r["machine"], r["commit"])
        started[k] = max(started.get(k, ""), r["started_at"] or "")
    best = max(files, key=lambda f: (f["date"] or 0, started.get((f["machine"], f["commit_hash"] or ""), "")))
    return best["machine"], best["commit_hash"]
