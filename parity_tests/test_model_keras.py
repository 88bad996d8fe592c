"""The Keras encoder-forecaster (:mod:`implementations.keras_impl.nowcast`) against the float64 NumPy reference
(:mod:`implementations.reference_model`), on the active Keras backend (``make test`` reruns every ``keras``-marked
test under JAX and torch).

Two models: the ``tiny-model`` preset (sigmoid output, BCE) and a variant with peepholes ('channel' and 'full'),
relu, a forecaster without bias (its no-input layer 0 then has no input term at all), 2 channels on a non-square
frame and a 'linear' output (MSE). Forward values and final states in float64 and float32, the loss, gradients
against directional finite differences of the reference loss (float64) and against the float64 gradients
(float32), the weight round trip and the keras.ops patching, all at :mod:`implementations.tolerances`' bounds.
"""

from __future__ import annotations

import numpy as np
import pytest

from implementations import model_spec, model_weights, reference_model
from implementations.model_spec import ModelSpec
from implementations.spec import LayerSpec, StackSpec
from implementations.tolerances import compare, tolerance

keras = pytest.importorskip("keras", reason="keras is not installed")
pytestmark = pytest.mark.keras

BATCH = 2


def _variant_spec() -> ModelSpec:
    """Peepholes, relu, no forecaster bias, C = 2, a 4x6 frame (2x3 patched), 'linear' output."""
    encoder = (LayerSpec(3, (3, 3), peephole="channel", activation="relu"), LayerSpec(2, (3, 3), peephole="full"))
    forecaster = (
        LayerSpec(3, (3, 3), peephole="full", use_bias=False, activation="relu"),
        LayerSpec(2, (3, 3), peephole="channel", use_bias=False),
    )
    return ModelSpec(
        input_channels=2, patch_size=2, frame_size=(4, 6), t_in=2, t_out=3,
        encoder=StackSpec(8, encoder), forecaster=StackSpec(0, forecaster, no_input=True),
        output_activation="linear",
    )


CASES = {
    "tiny-model": lambda: model_weights.random_model_weights(model_spec.get_model_preset("tiny-model"), 0),
    "variant": lambda: model_weights.random_model_weights(_variant_spec(), 1),
}
_CACHE: dict[tuple[str, ...], object] = {}


def _case(name: str):
    """(weights, frames, targets, reference result) of a case, made once per session."""
    key = ("case", name)
    if key not in _CACHE:
        weights = CASES[name]()
        spec = weights.spec
        rng = np.random.default_rng(7)
        x = rng.random(spec.input_shape(BATCH))
        y = rng.random(spec.output_shape(BATCH))
        if spec.output_activation == "linear":
            y = rng.standard_normal(spec.output_shape(BATCH))
        _CACHE[key] = (weights, x, y, reference_model.forward(weights, x, y))
    return _CACHE[key]


def _runner(name: str, dtype: str):
    from implementations.keras_impl import ModelRunner

    key = ("runner", name, dtype)
    if key not in _CACHE:
        _CACHE[key] = ModelRunner(_case(name)[0], dtype=dtype)
    return _CACHE[key]


def _check(comps) -> None:
    failed = [c.describe() for c in comps if not c.passed]
    assert not failed, f"keras[{keras.backend.backend()}]: " + "; ".join(failed)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", list(CASES))
def test_forward_matches_reference(case: str, dtype: str) -> None:
    weights, x, _, ref = _case(case)
    logits, predictions, hs, cs = _runner(case, dtype).forward(x.astype(dtype))
    assert logits.dtype == predictions.dtype == np.dtype(dtype)
    tol = tolerance("forward", dtype)
    comps = [compare(f"{case}/{dtype}/logits", logits, ref.logits, tol),
             compare(f"{case}/{dtype}/predictions", predictions, ref.predictions, tol)]
    assert len(hs) == len(cs) == weights.spec.num_layers
    for k, (h, c) in enumerate(zip(hs, cs)):
        comps += [compare(f"{case}/{dtype}/h[{k}]", h, ref.h[k], tol),
                  compare(f"{case}/{dtype}/c[{k}]", c, ref.c[k], tol)]
    _check(comps)


@pytest.mark.parametrize("case", list(CASES))
def test_loss_and_gradients_match_finite_differences(case: str) -> None:
    """float64: the loss equals the reference's; every gradient (every weight array, the empty kernel of the
    forecaster's layer 0 included, and the input) along a random direction equals the reference loss's central
    difference along it."""
    weights, x, y, ref = _case(case)
    loss, grads = _runner(case, "float64").value_and_grad(x, y)
    assert set(grads) == {*weights.arrays, "input"}
    assert grads["forecaster/layers/0/kernel"].shape[2] == 0
    comps = [compare(f"{case}/loss", np.array(loss), np.array(ref.loss), tolerance("forward", "float64"))]
    rng = np.random.default_rng(11)
    tol = tolerance("grad_fd", "float64")
    for key in [*weights.arrays, "input"]:
        direction = rng.standard_normal(grads[key].shape)
        fd = reference_model.directional_derivative(weights, x, y, "frames" if key == "input" else key, direction)
        comps.append(compare(f"{case}/d loss/d {key}", np.array(np.sum(grads[key] * direction)), np.array(fd), tol))
    _check(comps)


def test_float32_loss_and_gradients() -> None:
    """float32, on the variant (peepholes, relu, no forecaster bias): the loss within the forward bound of the
    reference, every gradient within the float32 gradient bound of the float64 gradients (checked against finite
    differences above). One case only: each float32 gradient trace costs seconds of compilation on JAX."""
    case = "variant"
    _, x, y, ref = _case(case)
    _, want = _runner(case, "float64").value_and_grad(x, y)
    loss, grads = _runner(case, "float32").value_and_grad(x.astype("float32"), y.astype("float32"))
    comps = [compare(f"{case}/float32/loss", np.array(loss), np.array(ref.loss), tolerance("forward", "float32"))]
    tol = tolerance("grad", "float32")
    comps += [compare(f"{case}/float32/grad {key}", grads[key], want[key], tol) for key in want]
    assert all(g.dtype == np.float32 for g in grads.values())
    _check(comps)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", list(CASES))
def test_weights_round_trip_bit_exact(case: str, dtype: str) -> None:
    weights = _case(case)[0].astype(dtype)
    runner = _runner(case, dtype)
    out = runner.export_weights()
    assert list(out.arrays) == list(weights.arrays)
    for key, value in weights.arrays.items():
        assert out.arrays[key].dtype == value.dtype and np.array_equal(out.arrays[key], value), key
    assert set(runner.model.canonical_variables()) == set(weights.spec.weight_shapes())


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="backend-neutral; slow to rebuild on JAX")
def test_config_round_trip() -> None:
    """``get_config`` / ``from_config`` rebuild the same model (backend-neutral code, so on the default backend only:
    a rebuild runs Keras' initialisers, which JAX compiles shape by shape)."""
    model = _runner("variant", "float64").model
    again = type(model).from_config(model.get_config())
    assert again.spec == model.spec and again.forecaster.spec.no_input
    assert again.compute_dtype == "float64"
    assert [tuple(v.shape) for v in again.trainable_variables] == [tuple(v.shape) for v in model.trainable_variables]


def test_patching_matches_the_numpy_definition() -> None:
    """keras.ops space-to-depth / depth-to-space are exactly model_spec's (TF order) and each other's inverse."""
    from implementations.keras_impl import nowcast

    x = np.arange(2 * 3 * 4 * 6 * 2, dtype=np.float64).reshape(2, 3, 4, 6, 2)
    patched = np.asarray(keras.ops.convert_to_numpy(nowcast.space_to_depth(keras.ops.convert_to_tensor(x), 2)))
    assert np.array_equal(patched, model_spec.space_to_depth(x, 2))
    back = np.asarray(keras.ops.convert_to_numpy(nowcast.depth_to_space(keras.ops.convert_to_tensor(patched), 2)))
    assert np.array_equal(back, x)


def test_stack_without_input_is_called_with_steps_and_states() -> None:
    """A no-input stack refuses an input sequence and a missing state; an ordinary stack refuses ``steps``; the
    no-input stack's config round-trips (``to_meta`` alone would lose ``no_input``)."""
    from implementations.keras_impl import ConvLSTMStack

    layers = (LayerSpec(2, (3, 3)),)
    stack = ConvLSTMStack(StackSpec(0, layers, no_input=True), return_state=True)
    stack.build(None)
    assert tuple(stack.canonical_variables()["layers/0/kernel"].shape) == (3, 3, 0, 8)
    state = [keras.ops.zeros((1, 4, 4, 2)), keras.ops.zeros((1, 4, 4, 2))]
    out, h, c = stack(None, initial_state=state, steps=2)
    assert tuple(out.shape) == tuple(h.shape) == (1, 4, 4, 2)
    with pytest.raises(ValueError, match="reads no input"):
        stack(keras.ops.zeros((1, 2, 4, 4, 0)), initial_state=state, steps=2)
    with pytest.raises(ValueError, match="initial_state"):
        stack(None, steps=2)
    assert type(stack).from_config(stack.get_config()).spec == stack.spec
    plain = ConvLSTMStack(StackSpec(1, layers))
    with pytest.raises(ValueError, match="steps"):
        plain(keras.ops.zeros((1, 2, 4, 4, 1)), steps=2)
