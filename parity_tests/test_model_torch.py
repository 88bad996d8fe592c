"""The PyTorch encoder-forecaster (:mod:`implementations.torch_impl.nowcast`) against the float64 NumPy reference
(:mod:`implementations.reference_model`): forward outputs and final states in float64 and float32, the loss, the
gradients w.r.t. the frames and every weight array (central finite differences of the reference, the forecaster's
no-input layer 0 included), the hand-written loop's backward against the autograd loop's, and the weight round trip.
Every bound comes from :mod:`implementations.tolerances`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch", reason="torch is not installed")

import torch  # noqa: E402

from implementations import reference_model  # noqa: E402
from implementations.model_spec import ModelSpec, get_model_preset  # noqa: E402
from implementations.model_weights import ModelWeights, random_model_weights  # noqa: E402
from implementations.spec import LayerSpec, SpecError, StackSpec  # noqa: E402
from implementations.tolerances import compare, tolerance  # noqa: E402
from implementations.torch_impl import ConvLSTM, EncoderForecaster, ModelRunner  # noqa: E402

DTYPES = ("float64", "float32")


def _variant() -> ModelSpec:
    """Peepholes ('full' and 'channel'), relu, hard sigmoid, a layer without bias, a 'linear' output (MSE)."""
    enc = (LayerSpec(3, (3, 3), peephole="full"), LayerSpec(2, (3, 3), peephole="channel", use_bias=False))
    fc = (
        LayerSpec(3, (3, 3), peephole="channel", activation="relu"),
        LayerSpec(2, (3, 3), peephole="full", recurrent_activation="hard_sigmoid"),
    )
    return ModelSpec(1, 2, (8, 8), 3, 2, StackSpec(4, enc), StackSpec(0, fc, no_input=True), "linear")


def _no_bias_forecaster() -> ModelSpec:
    """The forecaster's no-input layer 0 without a bias: its input term is zero."""
    enc = (LayerSpec(3, (3, 3)), LayerSpec(2, (1, 3)))
    fc = (LayerSpec(3, (3, 3), use_bias=False), LayerSpec(2, (3, 1), peephole="channel"))
    return ModelSpec(2, 2, (4, 6), 2, 3, StackSpec(8, enc), StackSpec(0, fc, no_input=True), "sigmoid")


SPECS = {"tiny-model": get_model_preset("tiny-model"), "variant": _variant(), "no-bias-fc0": _no_bias_forecaster()}


def _case(name: str, batch: int = 2) -> tuple[ModelWeights, np.ndarray, np.ndarray]:
    spec = SPECS[name]
    rng = np.random.default_rng(7)
    frames = rng.random(spec.input_shape(batch))
    if spec.output_activation == "sigmoid":
        targets = (rng.random(spec.output_shape(batch)) > 0.5).astype(np.float64)
    else:
        targets = rng.standard_normal(spec.output_shape(batch))
    return random_model_weights(spec, 3), frames, targets


@pytest.fixture(scope="module", params=sorted(SPECS))
def case(request: Any) -> tuple[ModelWeights, np.ndarray, np.ndarray]:
    return _case(request.param)


@pytest.fixture(scope="module")
def grads64(case: tuple[ModelWeights, np.ndarray, np.ndarray]) -> tuple[float, dict[str, np.ndarray]]:
    w, frames, targets = case
    return ModelRunner(w, dtype="float64", device="cpu").value_and_grad(frames, targets)


def _assert_ok(name: str, actual: np.ndarray, expected: np.ndarray, quantity: str, dtype: str) -> float:
    result = compare(name, actual, expected, tolerance(quantity, dtype))
    assert result.passed, result.describe()
    return result.max_abs


# ---------------------------------------------------------------------------------------------
# Forward and loss
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_matches_reference(case, dtype):
    w, frames, targets = case
    # The float32 run reads rounded weights and frames; the reference computes on the same rounded values in float64.
    w_in, x_in = w.astype(dtype), frames.astype(dtype)
    ref = reference_model.forward(w_in, x_in, targets)
    logits, predictions, hs, cs = ModelRunner(w_in, dtype=dtype, device="cpu").forward(x_in)
    assert logits.dtype == np.dtype(dtype) and logits.shape == w.spec.output_shape(frames.shape[0])
    _assert_ok("logits", logits, ref.logits, "forward", dtype)
    _assert_ok("predictions", predictions, ref.predictions, "forward", dtype)
    assert len(hs) == len(cs) == w.spec.num_layers
    for k, (h, c) in enumerate(zip(hs, cs)):
        _assert_ok(f"h[{k}]", h, ref.h[k], "forward", dtype)
        _assert_ok(f"c[{k}]", c, ref.c[k], "forward", dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_loss_matches_reference(case, dtype):
    w, frames, targets = case
    w_in, x_in, y_in = w.astype(dtype), frames.astype(dtype), targets.astype(dtype)
    expected = reference_model.loss(w_in, x_in, y_in)
    value, _ = ModelRunner(w_in, dtype=dtype, device="cpu").value_and_grad(x_in, y_in)
    _assert_ok("loss", np.array(value), np.array(expected), "forward", dtype)


def test_module_loss_is_stable_for_large_logits():
    w, frames, targets = _case("tiny-model")
    arrays = dict(w.arrays)
    arrays["head/bias"] = np.full_like(arrays["head/bias"], 800.0)  # sigmoid saturates; log(1 - sigma) would be -inf
    big = ModelWeights(w.spec, arrays)
    value, grads = ModelRunner(big, dtype="float64", device="cpu").value_and_grad(frames, targets)
    assert np.isfinite(value) and all(np.all(np.isfinite(g)) for g in grads.values())
    _assert_ok("loss", np.array(value), np.array(reference_model.loss(big, frames, targets)), "forward", "float64")


# ---------------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------------

def test_gradients_match_finite_differences(case, grads64):
    """Every weight array and the frames: the analytic directional derivative along a random direction against the
    reference's central difference."""
    w, frames, targets = case
    _, grads = grads64
    assert set(grads) == {*w.spec.weight_shapes(), "input"}
    rng = np.random.default_rng(11)
    for key in (*sorted(w.arrays), "input"):
        shape = frames.shape if key == "input" else w.arrays[key].shape
        assert grads[key].shape == shape, key
        if not np.prod(shape):  # the forecaster's empty layer-0 kernel: nothing to differentiate
            continue
        d = rng.standard_normal(shape)
        fd = reference_model.directional_derivative(w, frames, targets, "frames" if key == "input" else key, d)
        _assert_ok(f"d loss / d {key}", np.array(np.sum(grads[key] * d)), np.array(fd), "grad_fd", "float64")


def test_no_input_layer_bias_gradient_elementwise(case, grads64):
    """The bias of the forecaster's layer 0, whose gates have no input term: each entry by central differences."""
    w, frames, targets = case
    key = "forecaster/layers/0/bias"
    if key not in w.arrays:
        pytest.skip("this model's forecaster layer 0 has no bias")
    _, grads = grads64
    fd = np.empty(w.arrays[key].shape)
    for j in range(fd.size):
        e = np.zeros(fd.shape)
        e[j] = 1.0
        fd[j] = reference_model.directional_derivative(w, frames, targets, key, e)
    _assert_ok(key, grads[key], fd, "grad_fd", "float64")


def test_float32_gradients_match_float64(case, grads64):
    w, frames, targets = case
    _, g64 = grads64
    _, g32 = ModelRunner(w.astype("float32"), dtype="float32", device="cpu").value_and_grad(
        frames.astype("float32"), targets.astype("float32")
    )
    for key, g in g64.items():
        assert g32[key].dtype == np.float32
        _assert_ok(key, g32[key], g, "grad", "float32")


def test_hand_written_backward_equals_autograd_loop(case, grads64):
    """Both time-loop paths of the stacks, the no-input layer included, give the same float64 gradients."""
    w, frames, targets = case
    value, g_fast = grads64
    runner = ModelRunner(w, dtype="float64", device="cpu")
    runner.module.use_autograd_loop(True)
    value_ag, g_ag = runner.value_and_grad(frames, targets)
    _assert_ok("loss", np.array(value_ag), np.array(value), "forward", "float64")
    for key, g in g_fast.items():
        _assert_ok(key, g_ag[key], g, "grad", "float64")


# ---------------------------------------------------------------------------------------------
# Weights, the no-input layer alone
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_export_weights_round_trip_is_bit_exact(case, dtype):
    w = case[0].astype(dtype)
    w = ModelWeights(w.spec, w.arrays, {"top": {"note": "kept"}})
    out = ModelRunner(w, dtype=dtype, device="cpu").export_weights()
    assert out.spec == w.spec and out.meta() == w.meta()
    assert sorted(out.arrays) == sorted(w.arrays)
    for key, value in w.arrays.items():
        assert out.arrays[key].dtype == value.dtype and out.arrays[key].shape == value.shape, key
        assert np.array_equal(out.arrays[key], value), key
    assert out.arrays["forecaster/layers/0/kernel"].shape[2] == 0


def test_no_input_stack_from_zero_state_is_the_bias_alone():
    """A no-input stack without a state: the first step's gates are the bias, so ``c = sigma(b_i) tanh(b_c)`` and
    ``h = sigma(b_o) tanh(c)`` everywhere, on both loop paths; a non-empty input is refused."""
    spec = StackSpec(0, (LayerSpec(2, (3, 3)),), no_input=True)
    stack = ConvLSTM(spec, dtype=torch.float64)
    with torch.no_grad():
        stack.layers[0].bias.copy_(torch.linspace(-1.0, 1.0, 8, dtype=torch.float64))
    b = stack.layers[0].bias.detach()
    c = torch.sigmoid(b[0:2]) * torch.tanh(b[4:6])
    h = torch.sigmoid(b[6:8]) * torch.tanh(c)
    for autograd in (False, True):
        stack.use_autograd_loop(autograd)
        seq, hs, cs = stack(torch.empty(3, 1, 0, 4, 5, dtype=torch.float64))
        assert seq.shape == (3, 1, 2, 4, 5)
        torch.testing.assert_close(seq[:, 0], h.view(1, 2, 1, 1).expand(3, 2, 4, 5), rtol=0, atol=1e-15)
    with pytest.raises(SpecError, match="no input"):
        stack(torch.zeros(3, 1, 1, 4, 5, dtype=torch.float64))


def test_module_takes_torch_tensors_channels_last():
    w, frames, targets = _case("tiny-model")
    module = EncoderForecaster.from_weights(w)
    logits, hs, cs = module(torch.from_numpy(frames))
    assert logits.shape == w.spec.output_shape(2) and hs[0].shape == cs[0].shape == (2, 4, 4, 3)
    loss = module.loss(torch.from_numpy(frames), torch.from_numpy(targets))
    assert abs(float(loss.detach()) - reference_model.loss(w, frames, targets)) <= tolerance("forward", "float64").atol
