"""``value_and_grad`` takes the probe as a :class:`LossProbe` or as a plain array (the output cotangent).

An array of the output sequence's shape means the loss ``sum(outputs * probe)`` with zero cotangents for the
final states, so it must give exactly the gradients of that LossProbe; anything else is a ``TypeError``, and a
wrongly shaped probe an ``InputError`` naming the expected and found shapes, in every runner alike.
"""

from __future__ import annotations

import numpy as np
import pytest

import implementations
from implementations import reference
from implementations.api import InputError, LossProbe, check_probe
from implementations.spec import LayerSpec, StackSpec
from implementations.weights import random_weights

from .conftest import runner_class

SPEC = StackSpec(1, (LayerSpec(2, (3, 3)), LayerSpec(2, (3, 3))))
INPUT_SHAPE = (1, 2, 8, 8, 1)
OUTPUT_SHAPE = (1, 2, 8, 8, 2)
STATE_SHAPE = (1, 8, 8, 2)
FRAMEWORK_PARAMS = [
    pytest.param(name, marks=[pytest.mark.keras] if name == "keras" else []) for name in implementations.FRAMEWORKS
]
_RUNNERS: dict[str, object] = {}


def _runner(framework: str):
    if framework not in _RUNNERS:
        _RUNNERS[framework] = runner_class(framework)(random_weights(SPEC, seed=5), dtype="float64")
    return _RUNNERS[framework]


def _inputs() -> np.ndarray:
    return np.random.default_rng(7).standard_normal(INPUT_SHAPE)


def _gy() -> np.ndarray:
    return np.random.default_rng(8).standard_normal(OUTPUT_SHAPE)


def _zeros_probe(gy: np.ndarray) -> LossProbe:
    """The LossProbe an array probe stands for, written out by hand."""
    zeros = [np.zeros(STATE_SHAPE) for _ in SPEC.layers]
    return LossProbe(gy, list(zeros), list(zeros))


@pytest.mark.parametrize("framework", FRAMEWORK_PARAMS)
def test_array_probe_gives_the_gradients_of_the_equivalent_loss_probe(framework):
    runner, x, gy = _runner(framework), _inputs(), _gy()
    from_array = runner.value_and_grad(x, gy)
    from_probe = runner.value_and_grad(x, _zeros_probe(gy))
    assert from_array.loss == from_probe.loss
    assert sorted(from_array.grads) == sorted(from_probe.grads)
    for key, want in from_probe.grads.items():
        assert np.array_equal(from_array.grads[key], want), f"{framework}: gradient {key} differs"
    outputs = runner.forward(x).outputs
    np.testing.assert_allclose(from_array.loss, np.sum(outputs * gy), rtol=1e-12)


NOT_PROBES = {
    "list": lambda gy: gy.tolist(),
    "tuple of cotangents": lambda gy: (gy, [], []),
    "None": lambda gy: None,
    "masked array": lambda gy: np.ma.masked_array(gy),
}


@pytest.mark.parametrize("kind", list(NOT_PROBES))
@pytest.mark.parametrize("framework", FRAMEWORK_PARAMS)
def test_anything_but_a_probe_or_an_array_raises_type_error(framework, kind):
    probe = NOT_PROBES[kind](_gy())
    with pytest.raises(TypeError, match=rf"expected a LossProbe or a plain NumPy array .*{OUTPUT_SHAPE}.*found"):
        _runner(framework).value_and_grad(_inputs(), probe)


def _wrong_state_probe(gy: np.ndarray) -> LossProbe:
    probe = _zeros_probe(gy)
    probe.gc[1] = np.zeros((1, 8, 8, 3))
    return probe


WRONG_SHAPES = {
    "array, one step too many": (
        lambda gy: np.concatenate([gy, gy[:, :1]], 1),
        r"expected shape \(1, 2, 8, 8, 2\), found \(1, 3, 8, 8, 2\)",
    ),
    "array, last step only": (lambda gy: gy[:, -1], r"expected shape \(1, 2, 8, 8, 2\), found \(1, 8, 8, 2\)"),
    "probe.gy": (
        lambda gy: _zeros_probe(gy[..., :1]),
        r"probe.gy: expected shape \(1, 2, 8, 8, 2\), found \(1, 2, 8, 8, 1\)",
    ),
    "probe.gc[1]": (_wrong_state_probe, r"probe.gc\[1\]: expected shape \(1, 8, 8, 2\), found \(1, 8, 8, 3\)"),
    "probe.gh, one layer": (
        lambda gy: LossProbe(gy, [np.zeros(STATE_SHAPE)], _zeros_probe(gy).gc),
        r"probe.gh: expected 2 arrays \(one per layer\), found 1",
    ),
}


@pytest.mark.parametrize("kind", list(WRONG_SHAPES))
@pytest.mark.parametrize("framework", FRAMEWORK_PARAMS)
def test_wrongly_shaped_probe_raises_input_error(framework, kind):
    make, pattern = WRONG_SHAPES[kind]
    with pytest.raises(InputError, match=pattern):
        _runner(framework).value_and_grad(_inputs(), make(_gy()))


def test_reference_loss_takes_the_same_probes():
    w, x, gy = random_weights(SPEC, seed=5), _inputs(), _gy()
    assert reference.loss(w, x, gy) == reference.loss(w, x, _zeros_probe(gy))
    with pytest.raises(TypeError):
        reference.loss(w, x, gy.tolist())


def test_check_probe_casts_and_keeps_a_loss_probe_exact():
    probe = LossProbe.random(SPEC, INPUT_SHAPE, seed=2)
    checked = check_probe(SPEC, probe, INPUT_SHAPE, "float32")
    assert checked.gy.dtype == np.float32 and checked.gy.flags.c_contiguous
    for got, want in zip([checked.gy, *checked.gh, *checked.gc], [probe.gy, *probe.gh, *probe.gc]):
        assert np.array_equal(got, want.astype(np.float32))


def test_loss_probe_is_exported_without_importing_a_framework():
    assert implementations.LossProbe is LossProbe
    assert "LossProbe" in implementations.__all__
