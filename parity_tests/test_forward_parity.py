"""Forward parity: every implementation against the float64 reference and against each other."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from implementations import reference
from implementations.tolerances import tolerance

from .cases import CASES
from .conftest import FRAMEWORKS, assert_all_close, framework_label, get_runner, runner_class

_REF_CACHE: dict[str, dict] = {}


def reference_tensors(case) -> dict[str, np.ndarray]:
    if case.id not in _REF_CACHE:
        res = reference.forward(
            case.weights("float64"), case.inputs("float64"), return_sequences=case.return_sequences, **case.run_kwargs()
        )
        _REF_CACHE[case.id] = res.tensors()
    return _REF_CACHE[case.id]


def run_framework(framework: str, case, dtype: str) -> dict[str, np.ndarray]:
    runner = get_runner(framework, case.id, case.weights(dtype), dtype)
    res = runner.forward(
        case.inputs(dtype), return_sequences=case.return_sequences, **case.run_kwargs(dtype)
    )
    return res.tensors()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_forward_matches_reference(framework, case, dtype):
    actual = run_framework(framework, case, dtype)
    for name, arr in actual.items():
        assert arr.dtype == np.dtype(dtype), f"{framework} / {case.id}: {name} came back as {arr.dtype}, not {dtype}"
    expected = reference_tensors(case)
    assert_all_close("forward", framework, case.id, actual, expected, tolerance("forward", dtype), dtype=dtype)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
@pytest.mark.parametrize("pair", list(itertools.combinations(FRAMEWORKS, 2)), ids="-vs-".join)
def test_frameworks_agree_float32(pair, case):
    a, b = pair
    runner_class(a), runner_class(b)
    # Both in float32 against each other: the bound is twice the reference bound (two roundings).
    tol = tolerance("forward", "float32")
    tol = type(tol)(2 * tol.atol, tol.rtol, f"two float32 implementations, each within {tol.atol:g}: {tol.reason}")
    assert_all_close(
        "forward", a, case.id, run_framework(a, case, "float32"), run_framework(b, case, "float32"), tol,
        other=framework_label(b), kind="cross", dtype="float32",
    )


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_return_sequences_false_is_last_step(framework):
    case = next(c for c in CASES if c.id == "go_backwards_2layers")
    runner = get_runner(framework, case.id, case.weights("float64"), "float64")
    full = runner.forward(case.inputs(), go_backwards=True)
    last = runner.forward(case.inputs(), go_backwards=True, return_sequences=False)
    np.testing.assert_array_equal(last.outputs, full.outputs[:, -1])
    np.testing.assert_array_equal(last.h[-1], full.outputs[:, -1])


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_non_contiguous_and_fortran_inputs(framework):
    case = CASES[0]
    runner = get_runner(framework, case.id, case.weights("float64"), "float64")
    x = case.inputs()
    expected = runner.forward(x).outputs
    np.testing.assert_array_equal(runner.forward(np.asfortranarray(x)).outputs, expected)
    padded = np.zeros(x.shape[:-1] + (2 * x.shape[-1],))
    padded[..., ::2] = x
    np.testing.assert_array_equal(runner.forward(padded[..., ::2]).outputs, expected)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_nan_in_input_propagates(framework):
    """Documented behaviour: NaN input is not an error at run time; it propagates to the outputs."""
    case = CASES[0]
    runner = get_runner(framework, case.id, case.weights("float64"), "float64")
    x = case.inputs()
    x[0, 1, 2, 2, 0] = np.nan
    out = runner.forward(x).outputs
    assert np.isnan(out[0, 1:]).any(), "NaN at step 1 must reach later outputs of that sample"
    assert np.isfinite(out[1]).all(), "the other sample must be unaffected"
