"""Gradients of a scalar loss (a fixed linear probe of every output) w.r.t. the input and every weight.

float64: each framework against central finite differences of the float64 reference, along a random
direction per tensor (one directional derivative checks the whole gradient tensor at once).
Across frameworks: element-wise in float64 and float32.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from implementations import reference
from implementations.tolerances import tolerance

from .cases import CASES_BY_ID, GRAD_CASE_IDS
from .conftest import FRAMEWORKS, assert_all_close, framework_label, get_runner, runner_class

GRAD_CASES = [CASES_BY_ID[i] for i in GRAD_CASE_IDS]
_FD_CACHE: dict[str, tuple[float, dict[str, np.ndarray], dict[str, float]]] = {}


def finite_differences(case):
    """(reference loss, direction per tensor, directional derivative per tensor), cached per case."""
    if case.id not in _FD_CACHE:
        w, x, probe = case.weights("float64"), case.inputs("float64"), case.probe()
        kwargs = case.run_kwargs()
        rng = np.random.default_rng(99)
        shapes = {k: v.shape for k, v in w.arrays.items()} | {"input": x.shape}
        directions = {k: rng.standard_normal(s) for k, s in shapes.items()}
        fd = {k: reference.directional_derivative(w, x, probe, k, d, **kwargs) for k, d in directions.items()}
        _FD_CACHE[case.id] = (reference.loss(w, x, probe, **kwargs), directions, fd)
    return _FD_CACHE[case.id]


def grads(framework, case, dtype):
    runner = get_runner(framework, case.id, case.weights(dtype), dtype)
    return runner.value_and_grad(case.inputs(dtype), case.probe().astype(dtype), **case.run_kwargs(dtype))


@pytest.mark.parametrize("case", GRAD_CASES, ids=lambda c: c.id)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_gradients_match_finite_differences(framework, case):
    ref_loss, directions, fd = finite_differences(case)
    result = grads(framework, case, "float64")
    assert sorted(result.grads) == sorted(directions), (
        f"{framework_label(framework)} / {case.id}: gradient keys {sorted(result.grads)} != {sorted(directions)}"
    )
    for name, g in result.grads.items():
        assert g.shape == directions[name].shape, f"{framework} / {case.id}: grad {name} shape {g.shape}"
    actual = {"loss": np.array(result.loss)} | {
        k: np.array(np.sum(result.grads[k] * d)) for k, d in directions.items()
    }
    expected = {"loss": np.array(ref_loss)} | {k: np.array(v) for k, v in fd.items()}
    assert_all_close(
        "gradient . direction vs finite difference", framework, case.id, actual, expected,
        tolerance("grad_fd", "float64"), other="reference-fd", kind="grad_fd", dtype="float64",
    )


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", GRAD_CASES, ids=lambda c: c.id)
@pytest.mark.parametrize("pair", list(itertools.combinations(FRAMEWORKS, 2)), ids="-vs-".join)
def test_gradients_agree_across_frameworks(pair, case, dtype):
    a, b = pair
    runner_class(a), runner_class(b)
    ga, gb = grads(a, case, dtype), grads(b, case, dtype)
    assert_all_close(
        "gradients", a, case.id, ga.grads, gb.grads, tolerance("grad", dtype),
        other=framework_label(b), kind="grad_cross", dtype=dtype,
    )
