"""Shared fixtures: the framework parameter (a missing framework is a skip with its reason), a cache of
built runners, the assertion helper that names framework/case/tensor/errors, and the parity record
that the report reads (``reports/parity/parity-<label>.json``, written atomically at session end).
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

import implementations
from implementations.fileio import atomic_write
from implementations.tolerances import Comparison, Tolerance, compare

FRAMEWORKS = list(implementations.FRAMEWORKS)
ROOT = Path(__file__).resolve().parent.parent
_RUNNERS: dict[tuple, Any] = {}
_RECORDS: list[dict[str, Any]] = []
#: Lines (or callables returning one, evaluated at the end) printed in the terminal summary: counts of generated
#: cases, measured error growth ... that a pass/fail line does not show.
SUMMARY: list[Any] = []


def framework_label(framework: str) -> str:
    """'keras' carries its backend (KERAS_BACKEND, tensorflow by default)."""
    if framework == "keras":
        return f"keras[{os.environ.get('KERAS_BACKEND', 'tensorflow')}]"
    return framework


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests that exercise the keras implementation carry the `keras` marker, so the Keras
    # backend reruns (`make test`) can select them with `-m keras`.
    for item in items:
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec else {}
        if "keras" in params.values() or any(
            isinstance(v, tuple) and "keras" in v for v in params.values()
        ):
            item.add_marker(pytest.mark.keras)


def runner_class(framework: str):
    try:
        return implementations.get_runner(framework)
    except implementations.FrameworkUnavailable as exc:
        pytest.skip(f"framework unavailable: {exc}")


def get_runner(framework: str, case_id: str, weights, dtype: str, **options):
    """A built runner, cached per (framework, case, dtype, options) for the session."""
    key = (framework, case_id, dtype, tuple(sorted(options.items())))
    if key not in _RUNNERS:
        _RUNNERS[key] = runner_class(framework)(weights, dtype=dtype, **options)
    return _RUNNERS[key]


def record(kind: str, framework: str, other: str, case: str, dtype: str, comps: Iterable[Comparison], tol: Tolerance):
    comps = list(comps)
    worst = max(comps, key=lambda c: c.max_abs / c.bound if c.bound else (0 if c.passed else float("inf")))
    _RECORDS.append(
        {
            "kind": kind,
            "a": framework_label(framework),
            "b": other,
            "case": case,
            "dtype": dtype,
            "tensor": worst.tensor,
            "max_abs": worst.max_abs,
            "max_rel": worst.max_rel,
            "bound": worst.bound,
            "atol": tol.atol,
            "rtol": tol.rtol,
            "reason": tol.reason,
            "passed": all(c.passed for c in comps),
        }
    )


def assert_all_close(
    what: str,
    framework: str,
    case: str,
    actual: dict,
    expected: dict,
    tol: Tolerance,
    *,
    other: str = "reference",
    kind: str = "forward",
    dtype: str = "float64",
) -> None:
    """Compare every tensor; fail with one line per tensor naming framework, case, errors and bound."""
    missing = sorted(set(expected) - set(actual))
    assert not missing, f"{framework_label(framework)} / {case}: {what}: missing tensors {missing}"
    comps = [compare(name, actual[name], expected[name], tol) for name in expected]
    record(kind, framework, other, case, dtype, comps, tol)
    failed = [c for c in comps if not c.passed]
    if failed:
        lines = "\n  ".join(c.describe() for c in failed)
        pytest.fail(
            f"{framework_label(framework)} vs {other} / case {case} / {what} / {dtype} "
            f"(atol {tol.atol:g}, rtol {tol.rtol:g}: {tol.reason}):\n  {lines}"
        )


def write_json_report(name: str, payload: dict[str, Any]) -> Path:
    """Write ``reports/parity/<name>-<KERAS_BACKEND>.json`` atomically; returns its path."""
    label = os.environ.get("KERAS_BACKEND", "tensorflow")
    out = ROOT / "reports" / "parity" / f"{name}-{label}.json"
    data = json.dumps({"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "keras_backend": label,
                       "machine": platform.platform(), **payload}, indent=1).encode()
    return atomic_write(out, lambda fh: fh.write(data))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if SUMMARY:
        terminalreporter.section("convlstm-bench measurements")
        for line in SUMMARY:
            terminalreporter.write_line(line() if callable(line) else str(line))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _RECORDS:
        return
    label = os.environ.get("KERAS_BACKEND", "tensorflow")
    out = ROOT / "reports" / "parity" / f"parity-{label}.json"
    payload = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": platform.platform(),
        "python": platform.python_version(),
        "keras_backend": label,
        "records": _RECORDS,
    }
    data = json.dumps(payload, indent=1).encode()
    atomic_write(out, lambda fh: fh.write(data))
