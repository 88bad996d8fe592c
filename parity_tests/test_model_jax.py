"""The JAX encoder-forecaster (implementations/jax_impl/nowcast.py) against the float64 NumPy reference model.

Two small models: the ``tiny-model`` preset (sigmoid output, BCE) and a variant with different encoder and
forecaster options (encoder 'full' peepholes and relu; forecaster 'channel' peepholes without bias, so its
no-input layer 0 has no input term at all) and a 'linear' output (MSE), run with a rolled time loop (``unroll=1``;
the tiny model with the default full unroll). Per model: forward logits, predictions and every final state in
float64 and float32 (``tolerance("forward", dtype)``); the loss in both dtypes; the gradients with respect to the
input and every weight array against directional finite differences of the reference loss in float64, with the CPU
default backward path and with ``backward_chunk=None`` (plain autodiff), and the two element-wise against each other
(``tolerance("grad", "float64")``); the weight round trip bit-exact. Each runner costs a compile (the gradient
programs most), so runners, gradients and reference results are cached per module and only float64 gradients are
compiled.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from implementations import reference_model
from implementations.model_spec import ModelSpec, get_model_preset
from implementations.model_weights import ModelWeights, init_model_weights, random_model_weights
from implementations.spec import LayerSpec, StackSpec
from implementations.tolerances import compare, tolerance

pytest.importorskip("jax", reason="jax is not installed")
pytest.importorskip("flax", reason="flax is not installed")

from implementations import jax_impl  # noqa: E402

BATCH = 2


def _variant() -> ModelSpec:
    enc = tuple(LayerSpec(f, (3, 3), peephole="full", activation="relu") for f in (3, 2))
    fc = tuple(LayerSpec(f, (3, 3), peephole="channel", use_bias=False) for f in (3, 2))
    return ModelSpec(1, 2, (8, 8), 3, 2, StackSpec(4, enc), StackSpec(0, fc, no_input=True), "linear")


SPECS = {"tiny-model": get_model_preset("tiny-model"), "variant": _variant()}
UNROLL = {"tiny-model": "full", "variant": 1}


@functools.cache
def _case(name: str) -> tuple[ModelWeights, np.ndarray, np.ndarray, reference_model.ModelResult]:
    """Weights (float64), frames, targets and the reference result of a model."""
    spec = SPECS[name]
    weights = random_model_weights(spec, 7, scale=0.4)
    rng = np.random.default_rng(3)
    frames = rng.random(spec.input_shape(BATCH))
    if spec.output_activation == "sigmoid":
        targets = (rng.random(spec.output_shape(BATCH)) > 0.5).astype(np.float64)
    else:
        targets = rng.standard_normal(spec.output_shape(BATCH))
    return weights, frames, targets, reference_model.forward(weights, frames, targets)


@functools.cache
def _runner(name: str, dtype: str, chunk: str | None = "auto") -> jax_impl.ModelRunner:
    return jax_impl.ModelRunner(_case(name)[0], dtype=dtype, device="cpu", backward_chunk=chunk, unroll=UNROLL[name])


@functools.cache
def _grads(name: str, dtype: str, chunk: str | None = "auto") -> tuple[float, dict[str, np.ndarray]]:
    _, frames, targets, _ = _case(name)
    return _runner(name, dtype, chunk).value_and_grad(frames, targets)


@functools.cache
def _fd(name: str) -> dict[str, tuple[np.ndarray, float]]:
    """Per gradient key: a seeded random direction and the reference loss's central difference along it."""
    weights, frames, targets, _ = _case(name)
    rng = np.random.default_rng(11)
    out = {}
    for key, shape in [*sorted(weights.spec.weight_shapes().items()), ("input", frames.shape)]:
        direction = rng.standard_normal(shape)
        ref_key = "frames" if key == "input" else key
        out[key] = direction, reference_model.directional_derivative(weights, frames, targets, ref_key, direction)
    return out


def _check(comparisons) -> None:
    failed = [c.describe() for c in comparisons if not c.passed]
    assert not failed, "\n".join(failed)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(SPECS))
def test_forward_and_loss_match_reference(name: str, dtype: str) -> None:
    spec, (_, frames, targets, ref) = SPECS[name], _case(name)
    logits, predictions, hs, cs = _runner(name, dtype).forward(frames)
    tol = tolerance("forward", dtype)
    assert logits.dtype == np.dtype(dtype) and len(hs) == len(cs) == len(ref.h)
    comparisons = [compare("logits", logits, ref.logits, tol)]
    comparisons.append(compare("predictions", predictions, ref.predictions, tol))
    comparisons += [compare(f"h/{k}", h, r, tol) for k, (h, r) in enumerate(zip(hs, ref.h))]
    comparisons += [compare(f"c/{k}", c, r, tol) for k, (c, r) in enumerate(zip(cs, ref.c))]
    # The loss of the gradient program (float64), and model_loss on the float32 logits (eager, no extra compile).
    loss = _grads(name, "float64")[0] if dtype == "float64" else jax_impl.model_loss(
        spec.output_activation, logits, targets.astype(np.float32)
    )
    assert np.asarray(loss).dtype == np.dtype("float64" if dtype == "float64" else "float32")
    comparisons.append(compare("loss", np.asarray(loss), np.array(ref.loss), tol))
    _check(comparisons)


@pytest.mark.parametrize("chunk", ["auto", None], ids=["cpu-default", "plain"])
@pytest.mark.parametrize("name", sorted(SPECS))
def test_gradients_match_finite_differences(name: str, chunk: str | None) -> None:
    weights, frames, _, _ = _case(name)
    _, grads = _grads(name, "float64", chunk)
    fd = _fd(name)
    assert set(grads) == set(fd) == {*weights.spec.weight_shapes(), "input"}
    comparisons = []
    for key, (direction, expected) in fd.items():
        assert grads[key].shape == direction.shape and grads[key].dtype == np.float64, key
        actual = float(np.sum(grads[key] * direction))
        comparisons.append(compare(key, np.array(actual), np.array(expected), tolerance("grad_fd", "float64")))
    _check(comparisons)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_gradient_paths_agree(name: str) -> None:
    """The CPU default backward path (chunked custom VJP) equals plain autodiff element-wise."""
    loss_default, default = _grads(name, "float64")
    loss_plain, plain = _grads(name, "float64", None)
    assert default.keys() == plain.keys()
    comparisons = [compare("loss", np.array(loss_plain), np.array(loss_default), tolerance("forward", "float64"))]
    _check(comparisons + [compare(k, plain[k], g, tolerance("grad", "float64")) for k, g in default.items()])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_weight_round_trip_is_bit_exact(dtype: str) -> None:
    spec = SPECS["tiny-model"]
    weights = init_model_weights(spec, 5, dtype=np.dtype(dtype))
    weights.meta_extra = {"top": {"note": "kept"}}
    module = jax_impl.EncoderForecaster.from_weights(weights)
    back = module.to_weights(weights.meta_extra)
    assert back.meta_extra == weights.meta_extra and set(back.arrays) == set(weights.arrays)
    for key, value in weights.arrays.items():
        assert back.arrays[key].dtype == value.dtype and back.arrays[key].shape == value.shape, key
        assert np.array_equal(back.arrays[key], value), key
    params = jax_impl.model_params_from_weights(weights)
    assert jax_impl.model_params_to_arrays(params).keys() == weights.arrays.keys()


def test_no_input_stack_needs_state_and_no_frames() -> None:
    spec = SPECS["tiny-model"].forecaster
    params = jax_impl.model_params_from_weights(_case("tiny-model")[0])["forecaster"]
    with pytest.raises(jax_impl.api.InputError, match="no_input"):
        jax_impl.convlstm_apply(spec, params, np.zeros((1, 2, 4, 4, 4)))
    with pytest.raises(jax_impl.api.InputError, match="initial state"):
        jax_impl.convlstm_apply(spec, params, None, steps=2)
