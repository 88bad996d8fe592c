"""Parity records (``reports/parity/parity-<KERAS_BACKEND>.json``) -> records and matrices.

``parity_tests/conftest.py`` writes, at the end of each pytest session, one file per Keras backend::

    {"created", "machine", "python", "keras_backend",
     "records": [{"kind", "a", "b", "case", "dtype", "tensor", "max_abs", "max_rel", "bound", "atol", "rtol",
                  "reason", "passed"}, ...]}

One record per comparison (worst tensor of the comparison): ``a`` is a framework label (``torch``, ``jax``,
``keras[tensorflow]`` ...), ``b`` the other side (another framework label, ``reference``, ``reference-fd``, a
peer format ...). ``kind`` is ``forward`` (vs the float64 reference), ``cross`` (framework vs framework),
``grad_fd``, ``grad_cross``, ``interop`` or ``property``. Other JSON files in the folder without ``records``
(e.g. ``properties-*.json``) are kept as notes.

The colour of a cell is ``ratio = max_abs / bound``: the measured error as a fraction of its tolerance
(``bound = atol + rtol·|expected|`` at the worst element); ``ratio > 1`` fails.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: Kinds shown together in one matrix, in page order: (group id, title, kinds).
GROUPS = [
    ("forward", "Forward outputs and final states", ("forward", "cross")),
    ("gradients", "Gradients", ("grad_cross", "grad_fd")),
    ("interop", "Weight conversion (interop)", ("interop",)),
    ("property", "Property-based (generated specs)", ("property",)),
]
FIELDS = ["kind", "a", "b", "case", "dtype", "tensor", "max_abs", "max_rel", "bound", "atol", "rtol", "reason",
          "passed"]


def _num(x: Any) -> float | None:
    if x is None or isinstance(x, bool):
        return None
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def ratio(rec: dict[str, Any]) -> float | None:
    """max_abs / bound (inf when a zero bound is exceeded); None when the record has no numbers."""
    max_abs, bound = _num(rec.get("max_abs")), _num(rec.get("bound"))
    if max_abs is None:
        return None if rec.get("passed") is None else (0.0 if rec.get("passed") else math.inf)
    if bound is None or bound <= 0:
        return 0.0 if rec.get("passed", max_abs == 0) else math.inf
    return max_abs / bound


@dataclasses.dataclass
class ParityData:
    records: list[dict[str, Any]]  # deduplicated, each with "id", "ratio", "source", "duplicates"
    files: list[dict[str, Any]]  # per file: path, created, machine, python, keras_backend, n_records
    notes: list[dict[str, Any]]  # JSON files without records (e.g. properties-*.json)
    warnings: list[str]
    expected_labels: list[str]  # framework labels the page should show even without records

    @property
    def empty(self) -> bool:
        return not self.records


def load(parity_dir: str | Path, frameworks: Iterable[str] | None = None) -> ParityData:
    """Read every ``*.json`` in ``parity_dir``. Files that are unreadable are skipped with a warning; the same
    comparison recorded by several sessions (the Keras-backend reruns) is kept once, at its worst."""
    parity_dir = Path(parity_dir)
    files, notes, warnings = [], [], []
    best: dict[tuple, dict[str, Any]] = {}
    backends: list[str] = []
    if not parity_dir.is_dir():
        warnings.append(f"{parity_dir}: no parity records (run `make test`)")
    paths = sorted(parity_dir.glob("*.json")) if parity_dir.is_dir() else []
    for path in paths:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            warnings.append(f"skipped {path}: unreadable JSON ({exc})")
            continue
        if not isinstance(data, dict):
            warnings.append(f"skipped {path}: not a JSON object")
            continue
        meta = {k: data.get(k) for k in ("created", "machine", "python", "keras_backend")}
        if not isinstance(data.get("records"), list):
            notes.append({"path": str(path), "name": path.name, **{k: v for k, v in data.items() if k != "records"}})
            continue
        if meta["keras_backend"] and meta["keras_backend"] not in backends:
            backends.append(str(meta["keras_backend"]))
        n = 0
        for raw in data["records"]:
            if not isinstance(raw, dict) or not raw.get("a") or not raw.get("kind"):
                continue
            rec = {k: raw.get(k) for k in FIELDS}
            rec["case"] = str(rec["case"]) if rec["case"] is not None else ""
            rec["dtype"] = str(rec["dtype"] or "")
            rec["b"] = str(rec["b"] or "")
            rec["ratio"] = ratio(rec)
            rec["source"] = path.name
            rec["created"] = meta["created"]
            key = (rec["kind"], rec["a"], rec["b"], rec["case"], rec["dtype"])
            cur = best.get(key)
            if cur is None:
                rec["duplicates"] = 1
                best[key] = rec
            else:
                dup = cur["duplicates"] + 1
                if (rec["ratio"] or 0) > (cur["ratio"] or 0):
                    best[key] = rec
                best[key]["duplicates"] = dup
            n += 1
        files.append({"path": str(path), "name": path.name, "n_records": n, **meta})
    records = sorted(best.values(), key=lambda r: (_group_index(r["kind"]), r["kind"], r["dtype"], r["a"], r["b"],
                                                   r["case"]))
    for i, rec in enumerate(records):
        rec["id"] = f"p{i}"
    expected = []
    for fw in frameworks if frameworks is not None else _default_frameworks():
        if fw == "keras":
            expected.extend(f"keras[{b}]" for b in (backends or ["tensorflow"]))
        else:
            expected.append(fw)
    return ParityData(records, files, notes, warnings, expected)


def _default_frameworks() -> list[str]:
    try:
        from implementations import FRAMEWORKS
    except ImportError:  # pragma: no cover - the report also works outside the project
        return ["torch", "keras", "jax"]
    return list(FRAMEWORKS)


def _group_index(kind: str) -> int:
    for i, (_, _, kinds) in enumerate(GROUPS):
        if kind in kinds:
            return i
    return len(GROUPS)


def group_of(kind: str) -> tuple[str, str]:
    for gid, title, kinds in GROUPS:
        if kind in kinds:
            return gid, title
    return kind, kind


@dataclasses.dataclass
class Matrix:
    """One square matrix: rows = framework labels, cols = the same labels, then the non-framework sides
    (``reference`` ...). ``cells[(row, col)]`` is the worst record over the cases (None: no record)."""

    group: str
    title: str
    dtype: str
    rows: list[str]
    cols: list[str]
    cells: dict[tuple[str, str], dict[str, Any] | None]
    n_cases: dict[tuple[str, str], int]
    missing: dict[str, str]  # row label -> why it has no records at all


def matrices(data: ParityData) -> list[Matrix]:
    """A matrix per (group, dtype) with at least one record. Framework × framework comparisons fill both
    triangles (a vs b is b vs a)."""
    out = []
    framework_labels = set(data.expected_labels)
    for rec in data.records:
        if rec["kind"] in ("forward", "cross", "grad_cross", "grad_fd", "property"):
            framework_labels.add(rec["a"])
        if rec["kind"] in ("cross", "grad_cross"):
            framework_labels.add(rec["b"])
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rec in data.records:
        gid, _ = group_of(rec["kind"])
        groups.setdefault((gid, rec["dtype"]), []).append(rec)
    order = {gid: i for i, (gid, _, _) in enumerate(GROUPS)}
    for (gid, dtype), recs in sorted(groups.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0][0], kv[0][1])):
        labels = sorted({r["a"] for r in recs} | {r["b"] for r in recs if r["b"] in framework_labels}
                        | (set(data.expected_labels) if gid in ("forward", "gradients") else set()),
                        key=_label_order)
        others = sorted({r["b"] for r in recs if r["b"] not in labels}, key=lambda b: (not b.startswith("ref"), b))
        # framework columns only where framework-vs-framework comparisons exist (float64 has reference ones only)
        cols = (labels if any(r["b"] in labels for r in recs) else []) + others
        cells: dict[tuple[str, str], dict[str, Any] | None] = {}
        counts: dict[tuple[str, str], int] = {}
        for r in recs:
            pairs = [(r["a"], r["b"])]
            if r["b"] in labels and r["a"] != r["b"]:
                pairs.append((r["b"], r["a"]))
            for pair in pairs:
                counts[pair] = counts.get(pair, 0) + 1
                cur = cells.get(pair)
                if cur is None or (r["ratio"] or 0) > (cur["ratio"] or 0):
                    cells[pair] = r
        present = {r["a"] for r in recs} | {r["b"] for r in recs}
        missing = {lab: "no records: the framework is unavailable here, or these tests did not run"
                   for lab in labels if lab not in present}
        title = group_of(recs[0]["kind"])[1]
        out.append(Matrix(gid, title, dtype, labels, cols, {(a, b): cells.get((a, b)) for a in labels for b in cols},
                          counts, missing))
    return out


def _label_order(label: str) -> tuple:
    base = label.split("[", 1)[0]
    rank = {"torch": 0, "keras": 1, "jax": 2, "reference": 9}.get(base, 5)
    return (rank, label)


def case_table(data: ParityData, group: str, dtype: str) -> tuple[list[str], list[str], dict]:
    """Rows = cases, cols = "a vs b" pairs, cell = the record (for the per-case heat table)."""
    recs = [r for r in data.records if group_of(r["kind"])[0] == group and r["dtype"] == dtype]
    cases = sorted({r["case"] for r in recs})
    pairs = sorted({f"{r['a']} vs {r['b']}" for r in recs}, key=lambda p: (
        p.endswith("reference") is False, _label_order(p.split(" vs ")[0]), p))
    cells = {(r["case"], f"{r['a']} vs {r['b']}"): r for r in recs}
    return cases, pairs, cells


def summary(data: ParityData) -> dict[str, Any]:
    n = len(data.records)
    failed = [r for r in data.records if r.get("passed") is False]
    worst = max(data.records, key=lambda r: r["ratio"] or 0, default=None)
    return {"records": n, "failed": len(failed), "worst": worst}
