"""The encoder-forecaster model's framework-free foundation: spec, costs, the float64 reference, weight file v2.

Framework implementations are compared with this reference later; here the reference itself is pinned down by
hand-built examples and hand-computed arithmetic, and the v2 weight file is held to v1's strictness.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import implementations
from implementations import reference, reference_model
from implementations.model_spec import (
    MODEL_PRESETS,
    ModelSpec,
    build_model_spec,
    depth_to_space,
    get_model_preset,
    space_to_depth,
)
from implementations.model_weights import (
    ModelWeights,
    init_model_weights,
    load_model,
    random_model_weights,
    save_model,
)
from implementations.spec import LayerSpec, SpecError, StackSpec
from implementations.weights import WeightFileError, Weights

ROOT = Path(__file__).resolve().parent.parent
TINY = get_model_preset("tiny-model")


def _tiny_data(spec: ModelSpec = TINY, batch: int = 2, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    frames = rng.random(spec.input_shape(batch))
    targets = (rng.random(spec.output_shape(batch)) > 0.5).astype(np.float64)
    return frames, targets


@pytest.fixture(scope="module")
def tiny() -> tuple[ModelWeights, np.ndarray, np.ndarray]:
    frames, targets = _tiny_data()
    return random_model_weights(TINY, 0), frames, targets


# ---------------------------------------------------------------------------------------------
# Patches
# ---------------------------------------------------------------------------------------------

def test_space_to_depth_literal_example():
    # One 2x2 frame with one channel, p = 2: pixels (0,0)=1, (0,1)=2, (1,0)=3, (1,1)=4 -> depth dy*2+dx.
    x = np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(2, 2, 1)
    np.testing.assert_array_equal(space_to_depth(x, 2), np.array([[[1.0, 2.0, 3.0, 4.0]]]))
    # Two channels: depth (dy*p + dx)*C + c.
    x2 = np.stack([x[..., 0], 10 * x[..., 0]], axis=-1)
    np.testing.assert_array_equal(space_to_depth(x2, 2)[0, 0], [1, 10, 2, 20, 3, 30, 4, 40])


def test_space_to_depth_exact_depth_order():
    p, c, hp, wp = 3, 2, 2, 4
    x = np.zeros((hp * p, wp * p, c))
    for i in range(hp):
        for j in range(wp):
            for dy in range(p):
                for dx in range(p):
                    for ch in range(c):
                        x[i * p + dy, j * p + dx, ch] = 10000 * i + 1000 * j + 100 * dy + 10 * dx + ch
    y = space_to_depth(x[None, None], p)[0, 0]
    assert y.shape == (hp, wp, p * p * c)
    for i in range(hp):
        for j in range(wp):
            for dy in range(p):
                for dx in range(p):
                    for ch in range(c):
                        assert y[i, j, (dy * p + dx) * c + ch] == 10000 * i + 1000 * j + 100 * dy + 10 * dx + ch
    # The one-line NumPy form written in docs/model.md.
    b, t = 1, 1
    doc = x[None, None].reshape(b, t, hp, p, wp, p, c).transpose(0, 1, 2, 4, 3, 5, 6).reshape(b, t, hp, wp, -1)
    np.testing.assert_array_equal(doc[0, 0], y)


@pytest.mark.parametrize("shape,p", [((2, 3, 8, 12, 3), 2), ((1, 1, 4, 4, 1), 4), ((5, 6, 2), 1), ((2, 9, 6, 2), 3)])
def test_space_to_depth_round_trip(shape, p):
    x = np.random.default_rng(0).standard_normal(shape)
    y = space_to_depth(x, p)
    assert y.shape == (*shape[:-3], shape[-3] // p, shape[-2] // p, p * p * shape[-1])
    np.testing.assert_array_equal(depth_to_space(y, p), x)
    np.testing.assert_array_equal(space_to_depth(depth_to_space(y, p), p), y)


def test_space_to_depth_refuses_non_divisible_naming_both():
    with pytest.raises(SpecError, match=r"H=6, W=7 .*divisible by patch_size 4"):
        space_to_depth(np.zeros((6, 7, 1)), 4)
    with pytest.raises(SpecError, match="divisible by patch_size"):
        depth_to_space(np.zeros((2, 2, 6)), 2)


# ---------------------------------------------------------------------------------------------
# Spec validation
# ---------------------------------------------------------------------------------------------

def _layers(filters: list[int], **options: Any) -> tuple[LayerSpec, ...]:
    return tuple(LayerSpec(f, (3, 3), **options) for f in filters)


def _model(enc: tuple[LayerSpec, ...] | None = None, fc: tuple[LayerSpec, ...] | None = None, **kw: Any) -> ModelSpec:
    args = {"input_channels": 1, "patch_size": 2, "frame_size": (8, 8), "t_in": 3, "t_out": 2,
            "output_activation": "sigmoid", **kw}
    pc = args["patch_size"] ** 2 * args["input_channels"]
    return ModelSpec(
        encoder=StackSpec(pc, enc or _layers([3, 2])),
        forecaster=StackSpec(0, fc or _layers([3, 2]), no_input=True),
        **args,
    )


@pytest.mark.parametrize(
    "build,pattern",
    [
        (lambda: _model(frame_size=(8, 10), patch_size=4), r"H=8 and W=10 must both be divisible by patch_size 4"),
        (lambda: _model(fc=_layers([3, 4])), r"forecaster layer 1: filters: expected 2 .*found 4"),
        (lambda: _model(fc=_layers([3])), r"forecaster: expected as many layers as the encoder \(2\), found 1"),
        (lambda: _model(enc=(LayerSpec(3, strides=2), LayerSpec(2))), r"encoder layer 0: strides: expected \(1, 1\)"),
        (lambda: _model(fc=(LayerSpec(3), LayerSpec(2, padding="valid"))),
         r"forecaster layer 1: padding: expected 'same'.*found 'valid'"),
        (lambda: _model(fc=(LayerSpec(3, dilation_rate=2), LayerSpec(2))),
         r"forecaster layer 0: dilation_rate: expected \(1, 1\)"),
        (lambda: _model(enc=(LayerSpec(3, (3,)), LayerSpec(2, (3,))), fc=(LayerSpec(3, (3,)), LayerSpec(2, (3,)))),
         r"encoder layer 0: kernel_size: expected 2 entries"),
        (lambda: _model(output_activation="softmax"), r"output_activation: expected one of .*found 'softmax'"),
        (lambda: _model(t_in=0), r"t_in: expected a positive int, found 0"),
        (lambda: dataclasses.replace(TINY, encoder=StackSpec(5, _layers([3, 2]))),
         r"encoder.input_channels: expected .* = 4, found 5"),
        (lambda: dataclasses.replace(TINY, forecaster=StackSpec(4, _layers([3, 2]))),
         r"forecaster.input_channels: expected 0"),
    ],
    ids=["non-divisible", "filters", "layer-count", "stride", "valid", "dilation", "rank", "activation", "t_in",
         "encoder-channels", "forecaster-channels"],
)
def test_spec_validation_names_layer_and_option(build, pattern):
    with pytest.raises(SpecError, match=pattern):
        build()


def test_dilation_is_allowed_where_there_is_an_input_convolution():
    spec = _model(enc=(LayerSpec(3, dilation_rate=2), LayerSpec(2)), fc=(LayerSpec(3), LayerSpec(2, dilation_rate=2)))
    assert spec.patched_size == (4, 4)


@pytest.mark.parametrize("name", sorted(MODEL_PRESETS))
def test_presets_round_trip_through_dicts(name):
    spec = get_model_preset(name)
    meta = json.loads(json.dumps(spec.to_meta()))
    assert ModelSpec.from_dict(meta) == spec
    assert meta["forecaster"]["input_channels"] == 0
    assert meta["encoder"]["input_channels"] == spec.patch_size ** 2 * spec.input_channels


def test_presets_are_the_papers():
    mm, radar = get_model_preset("paper-moving-mnist"), get_model_preset("paper-radar")
    assert (mm.frame_size, mm.patch_size, mm.t_in, mm.t_out, mm.output_activation) == ((64, 64), 4, 10, 10, "sigmoid")
    assert [la.filters for la in mm.encoder.layers] == [128, 64, 64]
    assert all(la.kernel_size == (5, 5) for la in mm.encoder.layers + mm.forecaster.layers)
    assert (radar.frame_size, radar.t_in, radar.t_out, radar.output_activation) == ((100, 100), 5, 15, "linear")
    assert [la.filters for la in radar.forecaster.layers] == [64, 64]
    with pytest.raises(KeyError, match="unknown model preset 'nope'"):
        get_model_preset("nope")


def test_from_dict_layer_defaults_and_implied_encoder_channels():
    spec = ModelSpec.from_dict({
        "input_channels": 1, "patch_size": 2, "frame_size": [8, 8], "t_in": 3, "t_out": 2,
        "encoder": {"layer_defaults": {"kernel_size": [3, 3]}, "layers": [{"filters": 3}, {"filters": 2}]},
        "forecaster": {"input_channels": 0, "layer_defaults": {"kernel_size": [3, 3]},
                       "layers": [{"filters": 3}, {"filters": 2}]},
    })
    assert spec == TINY


# -- the spec.py extension (no_input) leaves v1 stacks exactly as they were ---------------------

def test_v1_stack_specs_unchanged():
    with pytest.raises(SpecError, match=r"^input_channels: expected a positive int, found 0$"):
        StackSpec(0, _layers([3]))
    with pytest.raises(SpecError, match=r"^input_channels: expected a positive int, found 0$"):
        StackSpec.from_meta({"input_channels": 0, "layers": [LayerSpec(3).to_meta()]})
    with pytest.raises(SpecError, match="expected 0 for a stack whose first layer reads no input"):
        StackSpec(1, _layers([3]), no_input=True)
    with pytest.raises(SpecError, match="no_input: expected true/false"):
        StackSpec(1, _layers([3]), no_input=1)
    a = StackSpec(2, _layers([4, 4]))
    assert a == StackSpec(2, _layers([4, 4]), no_input=False) and hash(a) == hash(StackSpec(2, _layers([4, 4])))
    assert a.to_meta() == {"input_channels": 2, "layers": [LayerSpec(4, (3, 3)).to_meta()] * 2}
    # v1 flops by the documented formula: per position and step 2*9*(C_in+F)*4F + 4F + 4F + 9F.
    assert a.flops((2, 3, 8, 8, 2)) == 2 * 3 * 64 * ((2 * 9 * 6 * 16 + 16 + 16 + 36) + (2 * 9 * 8 * 16 + 16 + 16 + 36))
    assert a.param_count() == (9 * 2 * 16 + 9 * 4 * 16 + 16) + (9 * 4 * 16 + 9 * 4 * 16 + 16)


def test_v1_file_with_zero_input_channels_is_still_refused(tmp_path):
    w = implementations.init_weights(StackSpec(0, _layers([3]), no_input=True), 0)
    with pytest.raises(WeightFileError, match="a stack whose first layer reads no input .*save_model"):
        implementations.save(tmp_path / "w.npz", w)
    assert not (tmp_path / "w.npz").exists()
    np.savez(tmp_path / "w.npz", meta=np.array(json.dumps(w.meta())), **w.arrays)  # written by hand
    with pytest.raises(WeightFileError, match=r"meta: input_channels: expected a positive int, found 0"):
        implementations.load(tmp_path / "w.npz")


# ---------------------------------------------------------------------------------------------
# Costs, by hand on tiny-model
# ---------------------------------------------------------------------------------------------

def test_param_count_by_hand():
    # tiny-model: C=1, p=2 -> patched 4x4 with 4 channels; layers 3/2, 3x3, bias, no peepholes.
    enc0 = 3 * 3 * 4 * 12 + 3 * 3 * 3 * 12 + 12  # 432 + 324 + 12 = 768
    enc1 = 3 * 3 * 3 * 8 + 3 * 3 * 2 * 8 + 8  # 216 + 144 + 8 = 368
    fc0 = 0 + 3 * 3 * 3 * 12 + 12  # empty kernel (3,3,0,12): 0 + 324 + 12 = 336
    fc1 = enc1
    head = 5 * 4 + 4  # (1,1,3+2,4) + (4,)
    assert TINY.param_count() == enc0 + enc1 + fc0 + fc1 + head == 1864
    assert TINY.param_count() == sum(int(np.prod(s)) for s in TINY.weight_shapes().values())


def test_flops_by_hand():
    b, pos = 2, 4 * 4  # batch, patch positions
    # per position and step: conv 2*9*(C_in+F)*4F; sum of convs 4F (absent without input); bias 4F; gates 9F.
    enc0 = 2 * 9 * (4 + 3) * 12 + 12 + 12 + 27  # 1512 + 51 = 1563
    enc1 = 2 * 9 * (3 + 2) * 8 + 8 + 8 + 18  # 720 + 34 = 754
    fc0 = 2 * 9 * (0 + 3) * 12 + 0 + 12 + 27  # 648 + 39 = 687
    fc1 = enc1
    head = 2 * 5 * 4 + 4  # 1x1 conv over 5 channels to 4, plus bias
    out = 1 + 4  # sigmoid + BCE from logits, per output value
    forward = b * pos * (3 * (enc0 + enc1) + 2 * (fc0 + fc1 + head)) + b * 2 * 8 * 8 * 1 * out
    assert forward == 2 * 159376
    assert TINY.flops(b) == forward
    assert TINY.flops(b, "train") == 3 * forward
    linear = dataclasses.replace(TINY, output_activation="linear")
    assert linear.flops(b) == forward - b * 2 * 64 * (out - 3)  # linear 0 + MSE 3
    with pytest.raises(SpecError, match="mode"):
        TINY.flops(1, "eval")


def test_activation_bytes_by_hand():
    b = 2
    enc = 3 * 16 * 4 + 3 * 16 * 7 * 3 + 3 * 16 * 7 * 2  # patched input once + 7F per position and step
    fc = 2 * 16 * 7 * 3 + 2 * 16 * 7 * 2  # no input
    head = 2 * 2 * 64  # logits + predictions, T_out * H * W * C each
    assert TINY.activation_bytes(b, itemsize=8) == b * (enc + fc + head) * 8


# ---------------------------------------------------------------------------------------------
# The reference
# ---------------------------------------------------------------------------------------------

def _forecaster_states(w: ModelWeights, frames: np.ndarray) -> list[list[np.ndarray]]:
    """h of every forecaster layer at every step, from the encoder's final states (float64)."""
    w = w.astype(np.float64)
    enc = reference.forward(w.encoder, space_to_depth(frames, w.spec.patch_size), return_sequences=False)
    h, c = list(enc.h), list(enc.c)
    steps = []
    for _ in range(w.spec.t_out):
        h, c = reference_model.forecaster_step(w, h, c)
        steps.append(h)
    return steps


def test_reference_shapes(tiny):
    w, frames, targets = tiny
    r = reference_model.forward(w, frames, targets)
    assert r.predictions.shape == r.logits.shape == (2, 2, 8, 8, 1)
    assert [h.shape for h in r.h] == [c.shape for c in r.c] == [(2, 4, 4, 3), (2, 4, 4, 2)]
    assert np.all((r.predictions > 0) & (r.predictions < 1))
    assert np.isfinite(r.loss) and r.loss == reference_model.loss(w, frames, targets)
    assert reference_model.forward(w, frames).loss is None
    with pytest.raises(implementations.api.InputError, match="frames: expected shape"):
        reference_model.forward(w, frames[:, :2])
    with pytest.raises(implementations.api.InputError, match="targets: expected shape"):
        reference_model.forward(w, frames, targets[:, :1])


def test_forecaster_starts_from_the_encoder_states(tiny):
    w, frames, _ = tiny
    base = reference_model.forward(w, frames)
    for key in ("encoder/layers/0/kernel", "encoder/layers/1/recurrent_kernel"):
        arrays = dict(w.arrays)
        arrays[key] = arrays[key] + 0.1
        changed = reference_model.forward(ModelWeights(w.spec, arrays), frames)
        assert np.max(np.abs(changed.predictions - base.predictions)) > 1e-6, key
    # The encoder's final states are the forecaster's initial states: frames only reach it through them.
    enc = reference.forward(w.encoder.astype(np.float64), space_to_depth(frames, 2), return_sequences=False)
    h, c = reference_model.forecaster_step(w.astype(np.float64), list(enc.h), list(enc.c))
    h, c = reference_model.forecaster_step(w.astype(np.float64), h, c)
    for k in range(2):
        np.testing.assert_array_equal(h[k], base.h[k])
        np.testing.assert_array_equal(c[k], base.c[k])


def test_forecaster_first_layer_has_no_input_term(tiny):
    w, frames, _ = tiny
    assert w.arrays["forecaster/layers/0/kernel"].shape == (3, 3, 0, 12)
    enc = reference.forward(w.encoder.astype(np.float64), space_to_depth(frames, 2), return_sequences=False)
    # A v1 one-layer stack with a zero input kernel, the forecaster layer 0's R and b, started from the encoder's
    # layer-0 state, fed arbitrary input: its h sequence is the forecaster layer 0's.
    layer = w.spec.forecaster.layers[0]
    f0 = w.forecaster.layer(0)
    stack = Weights(StackSpec(5, (layer,)), {
        "layers/0/kernel": np.zeros((3, 3, 5, 12)),
        "layers/0/recurrent_kernel": f0["recurrent_kernel"], "layers/0/bias": f0["bias"],
    })
    noise = np.random.default_rng(7).standard_normal((2, 2, 4, 4, 5))
    v1 = reference.forward(stack, noise, initial_state=[(enc.h[0], enc.c[0])])
    steps = _forecaster_states(w, frames)
    for t in range(2):
        np.testing.assert_allclose(steps[t][0], v1.outputs[:, t], rtol=0, atol=1e-14)


def test_head_sees_every_forecaster_layer(tiny):
    w, frames, _ = tiny
    steps = _forecaster_states(w, frames)
    kernel, bias = w.head_kernel[0, 0], w.head_bias  # (5, 4), (4,)
    base = reference_model.forward(w, frames)
    for t in range(2):  # the head by hand: h0 @ K[0:3] + h1 @ K[3:5] + b, then depth-to-space
        by_hand = steps[t][0] @ kernel[:3] + steps[t][1] @ kernel[3:] + bias
        np.testing.assert_allclose(base.logits[:, t], depth_to_space(by_hand, 2), rtol=0, atol=1e-13)
    for rows, keep in ((slice(3, 5), 0), (slice(0, 3), 1)):  # zero one layer's head rows
        arrays = dict(w.arrays)
        arrays["head/kernel"] = w.head_kernel.copy()
        arrays["head/kernel"][0, 0, rows] = 0.0
        out = reference_model.forward(ModelWeights(w.spec, arrays), frames)
        for t in range(2):
            own = slice(0, 3) if keep == 0 else slice(3, 5)
            expected = depth_to_space(steps[t][keep] @ kernel[own] + bias, 2)
            np.testing.assert_allclose(out.logits[:, t], expected, rtol=0, atol=1e-13)
        assert np.max(np.abs(out.logits - base.logits)) > 1e-3


def test_bce_from_logits_equals_the_naive_formula_and_is_stable(tiny):
    w, frames, targets = tiny
    r = reference_model.forward(w, frames, targets)
    p = r.predictions
    naive = -np.mean(targets * np.log(p) + (1 - targets) * np.log(1 - p))
    assert abs(r.loss - naive) < 1e-12
    z = np.array([-800.0, -30.0, 0.0, 30.0, 800.0])
    y = np.array([1.0, 0.0, 0.5, 1.0, 0.0])
    stable = reference_model.bce_from_logits(z, y)
    assert np.isfinite(stable)
    assert abs(stable - np.mean([800.0, np.log1p(np.exp(-30.0)), np.log(2.0), np.log1p(np.exp(-30.0)), 800.0])) < 1e-9


def test_linear_output_uses_mse(tiny):
    w, frames, targets = tiny
    lin = ModelWeights(dataclasses.replace(TINY, output_activation="linear"), w.arrays)
    r = reference_model.forward(lin, frames, targets)
    np.testing.assert_array_equal(r.predictions, r.logits)
    assert r.loss == pytest.approx(np.mean((r.logits - targets) ** 2), rel=1e-14)
    sig = reference_model.forward(w, frames)
    np.testing.assert_array_equal(r.logits, sig.logits)


def test_float32_weights_run_in_float64(tiny):
    w, frames, _ = tiny
    r32 = reference_model.forward(w.astype(np.float32), frames.astype(np.float32))
    r64 = reference_model.forward(w.astype(np.float32).astype(np.float64), frames.astype(np.float32).astype(np.float64))
    assert r32.logits.dtype == np.float64
    np.testing.assert_array_equal(r32.logits, r64.logits)


@pytest.mark.parametrize(
    "key",
    ["encoder/layers/0/kernel", "encoder/layers/1/recurrent_kernel", "encoder/layers/0/bias",
     "forecaster/layers/0/recurrent_kernel", "forecaster/layers/0/bias", "forecaster/layers/1/kernel",
     "head/kernel", "head/bias", "frames"],
)
def test_finite_difference_gradients_are_finite_and_nonzero(tiny, key):
    w, frames, targets = tiny
    shape = frames.shape if key == "frames" else w.arrays[key].shape
    direction = np.random.default_rng(3).standard_normal(shape)
    d1 = reference_model.directional_derivative(w, frames, targets, key, direction, eps=1e-5)
    d2 = reference_model.directional_derivative(w, frames, targets, key, direction, eps=1e-4)
    assert np.isfinite(d1) and abs(d1) > 1e-6, (key, d1)
    assert abs(d1 - d2) <= 1e-6 * max(1.0, abs(d1)), (key, d1, d2)  # smooth: O(eps^2) agreement


def test_peepholes_and_options_run():
    spec = _model(
        enc=(LayerSpec(3, peephole="full", kernel_size=(2, 3)), LayerSpec(2, peephole="channel", use_bias=False)),
        fc=(LayerSpec(3, peephole="channel", activation="relu"), LayerSpec(2, peephole="full",
                                                                           recurrent_activation="hard_sigmoid")),
    )
    assert spec.weight_shapes()["forecaster/layers/1/peephole_o"] == (4, 4, 2)
    assert spec.weight_shapes()["encoder/layers/0/kernel"] == (2, 3, 4, 12)
    w = random_model_weights(spec, 2)
    frames, targets = _tiny_data(spec)
    r = reference_model.forward(w, frames, targets)
    assert r.predictions.shape == (2, 2, 8, 8, 1) and np.isfinite(r.loss)


# ---------------------------------------------------------------------------------------------
# Weight file v2
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_is_bit_exact(tmp_path, dtype):
    w = init_model_weights(TINY, 0, dtype=dtype)
    assert w.arrays["head/bias"].dtype == dtype and not np.any(w.arrays["head/bias"])
    assert np.all(w.arrays["forecaster/layers/1/bias"][2:4] == 1.0)  # Keras' unit forget bias, block f of F=2
    path = save_model(tmp_path / "m.npz", w)
    back = load_model(path)
    assert back.spec == TINY
    assert sorted(back.arrays) == sorted(w.arrays)
    for k in w.arrays:
        assert back.arrays[k].dtype == w.arrays[k].dtype and back.arrays[k].tobytes() == w.arrays[k].tobytes(), k
    save_model(tmp_path / "m2.npz", back)
    with zipfile.ZipFile(tmp_path / "m.npz") as a, zipfile.ZipFile(tmp_path / "m2.npz") as b:
        assert {i.filename: a.read(i) for i in a.infolist()} == {i.filename: b.read(i) for i in b.infolist()}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_init_is_seeded_and_stacks_are_v1_inits():
    a, b, c = init_model_weights(TINY, 5), init_model_weights(TINY, 5), init_model_weights(TINY, 6)
    assert all(np.array_equal(a.arrays[k], b.arrays[k]) for k in a.arrays)
    assert not np.array_equal(a.arrays["head/kernel"], c.arrays["head/kernel"])
    limit = np.sqrt(6.0 / (5 + 4))
    assert np.all(np.abs(a.arrays["head/kernel"]) <= limit)
    r = a.arrays["encoder/layers/0/recurrent_kernel"].astype(np.float64).reshape(-1, 12)  # orthogonal columns
    np.testing.assert_allclose(r.T @ r, np.eye(12), atol=1e-5)


def test_unknown_meta_fields_survive_a_round_trip(tmp_path):
    w = random_model_weights(TINY, 0, dtype=np.float32)
    meta = w.meta()
    meta["note"] = {"by": "someone else"}
    meta["encoder"]["origin"] = "x"
    meta["forecaster"]["layers"][1]["tag"] = 7
    _write(tmp_path / "a.npz", {"meta": np.array(json.dumps(meta)), **w.arrays})
    loaded = load_model(tmp_path / "a.npz")
    save_model(tmp_path / "b.npz", loaded)
    again = load_model(tmp_path / "b.npz").meta()
    assert again["note"] == {"by": "someone else"}
    assert again["encoder"]["origin"] == "x"
    assert again["forecaster"]["layers"][1]["tag"] == 7
    assert again == json.loads(json.dumps(meta))


def _write(path: Path, entries: dict[str, np.ndarray], *, pickle_ok: bool = False) -> Path:
    """A .npz from entries, with numpy and zipfile only (object arrays allowed when ``pickle_ok``)."""
    with zipfile.ZipFile(path, "w") as zf:
        for key, value in entries.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(value), allow_pickle=pickle_ok)
            zf.writestr(key + ".npy", buf.getvalue())
    return path


def _good_entries() -> dict[str, np.ndarray]:
    w = random_model_weights(TINY, 0, dtype=np.float32)
    return {"meta": np.array(json.dumps(w.meta())), **w.arrays}


def _meta_edit(fn) -> Any:
    """An edit of the good entries that changes the meta object in place with ``fn`` (its result is ignored)."""
    def edit(e: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        meta = json.loads(str(e["meta"]))
        fn(meta)
        return {**e, "meta": np.array(json.dumps(meta))}
    return edit


def _with(key: str, value: Any) -> Any:
    return lambda e: {**e, key: value}


def _nan(e: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    bad = e["forecaster/layers/1/kernel"].copy()
    bad[0, 0, 0, 0] = np.inf
    return {**e, "forecaster/layers/1/kernel": bad}


# name -> (edit of the good entries, regex the message must match). Every message also names the file.
HOSTILE: dict[str, tuple[Any, str]] = {
    "missing key": (lambda e: {k: v for k, v in e.items() if k != "forecaster/layers/1/bias"},
                    r"missing key\(s\) \['forecaster/layers/1/bias'\]: expected by meta"),
    "missing head": (lambda e: {k: v for k, v in e.items() if k != "head/kernel"},
                     r"missing key\(s\) \['head/kernel'\]"),
    "extra key": (_with("head/extra", np.zeros(2, np.float32)), r"unexpected key\(s\) \['head/extra'\]"),
    "v1-style key": (_with("layers/0/kernel", np.zeros(2, np.float32)), r"unexpected key\(s\) \['layers/0/kernel'\]"),
    "head shape": (_with("head/kernel", np.zeros((1, 1, 4, 4), np.float32)),
                   r"head/kernel: expected shape \(1, 1, 5, 4\), found \(1, 1, 4, 4\)"),
    "non-empty first kernel": (_with("forecaster/layers/0/kernel", np.zeros((3, 3, 1, 12), np.float32)),
                               r"forecaster/layers/0/kernel: expected shape \(3, 3, 0, 12\), found \(3, 3, 1, 12\)"),
    "int dtype": (_with("head/bias", np.zeros(4, np.int32)),
                  r"head/bias: expected dtype float32 or float64, found int32"),
    "float16": (_with("head/bias", np.zeros(4, np.float16)),
                r"head/bias: expected dtype float32 or float64, found float16"),
    "mixed dtypes": (_with("head/bias", np.zeros(4, np.float64)),
                     r"head/bias: expected dtype float32 like the other arrays of the file, found float64"),
    "inf": (_nan, r"forecaster/layers/1/kernel: expected finite values, found 1 NaN/Inf"),
    "nan": (_with("head/bias", np.array([0, np.nan, 0, 0], np.float32)), r"head/bias: expected finite values"),
    "format": (_meta_edit(lambda m: m.update(format="other")), r"meta.format: expected 'convlstm-npz', found 'other'"),
    "version 3": (_meta_edit(lambda m: m.update(version=3)), r"meta.version: expected 2, found 3"),
    "version string": (_meta_edit(lambda m: m.update(version="2")), r"meta.version: expected 2, found '2'"),
    "kind": (_meta_edit(lambda m: m.update(kind="seq2seq")),
             r"meta.kind: expected 'encoder-forecaster', found 'seq2seq'"),
    "no kind": (_meta_edit(lambda m: m.pop("kind")), r"meta: missing field 'kind' \(expected 'encoder-forecaster'\)"),
    "gate order": (_meta_edit(lambda m: m.update(gate_order="icfo")),
                   r"meta.gate_order: expected 'ifco', found 'icfo'"),
    "no t_out": (_meta_edit(lambda m: m.pop("t_out")), r"meta: missing field 't_out'"),
    "t_in bool": (_meta_edit(lambda m: m.update(t_in=True)), r"meta: t_in: expected a positive int, found True"),
    "frame not divisible": (_meta_edit(lambda m: m.update(frame_size=[8, 9])), r"H=8 and W=9 must both be divisible"),
    "frame not list": (_meta_edit(lambda m: m.update(frame_size=8)), r"meta.frame_size: expected \[H, W\], found 8"),
    "activation": (_meta_edit(lambda m: m.update(output_activation="softmax")),
                   r"meta: output_activation: expected one of .*found 'softmax'"),
    "forecaster channels": (_meta_edit(lambda m: m["forecaster"].update(input_channels=4)),
                            r"meta.forecaster: input_channels: expected 0 .*found 4"),
    "encoder channels": (_meta_edit(lambda m: m["encoder"].update(input_channels=3)),
                         r"meta: encoder.input_channels: expected .* = 4, found 3"),
    "filters mismatch": (_meta_edit(lambda m: m["forecaster"]["layers"][1].update(filters=3)),
                         r"meta: forecaster layer 1: filters: expected 2 .*found 3"),
    "valid padding": (_meta_edit(lambda m: m["encoder"]["layers"][0].update(padding="valid")),
                      r"meta: encoder layer 0: padding: expected 'same'"),
    "bad layer": (_meta_edit(lambda m: m["encoder"]["layers"][0].update(activation="gelu")),
                  r"meta.encoder: layers\[0\]: activation: expected one of"),
    "encoder not object": (_meta_edit(lambda m: m.update(encoder=[1])), r"meta.encoder: spec: expected a JSON object"),
    "meta list": (_with("meta", np.array("[1, 2]")), r"meta: expected a JSON object, found list"),
    "meta not json": (_with("meta", np.array("{not json")), r"meta: expected JSON, found unparsable text"),
    "meta duplicate key": (_with("meta", np.array('{"version": 2, "version": 2}')), r"meta: duplicate JSON key\(s\)"),
    "meta bytes": (_with("meta", np.array(b"{}")), r"meta: expected a 0-d unicode array, found dtype \|S2"),
    "no meta": (lambda e: {k: v for k, v in e.items() if k != "meta"}, r"missing key 'meta'"),
    "meta too large": (_with("meta", np.array(json.dumps({"pad": "x" * (1 << 18)}))),
                       r"entry 'meta' declares \d+ bytes, expected at most 1048576"),
    "meta too deep": (_with("meta", np.array("[" * 100_000 + "]" * 100_000)),
                      r"meta: expected JSON, found nesting too deep to parse"),
    "oversized entry": (_with("head/bias", np.zeros(2000, np.float32)),
                        r"entry 'head/bias' declares \d+ bytes, expected at most 4128 for its shape"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_file_is_refused_naming_key_expected_found(tmp_path, name):
    edit, pattern = HOSTILE[name]
    path = _write(tmp_path / "m.npz", edit(_good_entries()))
    with pytest.raises(WeightFileError) as info:
        load_model(path)
    assert str(path) in str(info.value)
    assert re.search(pattern, str(info.value)), str(info.value)


def test_pickled_array_is_never_unpickled(tmp_path):
    entries = {**_good_entries(), "head/bias": np.array([1, "x"], dtype=object)}
    path = _write(tmp_path / "m.npz", entries, pickle_ok=True)
    with pytest.raises(WeightFileError, match=r"entry 'head/bias': expected a numeric array, found an object"):
        load_model(path)


def test_zip_level_defects(tmp_path):
    good = _write(tmp_path / "good.npz", _good_entries())
    dup = tmp_path / "dup.npz"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(dup, "w") as zout, pytest.warns(UserWarning, match="Duplicate"):
        for info in zin.infolist():
            zout.writestr(info, zin.read(info))
        zout.writestr("head/bias.npy", zin.read("head/bias.npy"))
    with pytest.raises(WeightFileError, match=r"duplicate entries \['head/bias.npy'\]: expected each key once"):
        load_model(dup)
    txt = tmp_path / "txt.npz"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(txt, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, zin.read(info))
        zout.writestr("notes.txt", "hello")
    with pytest.raises(WeightFileError, match=r"unexpected non-array entries \['notes.txt'\]"):
        load_model(txt)
    with pytest.raises(WeightFileError, match="no such file"):
        load_model(tmp_path / "absent.npz")
    (tmp_path / "plain.npz").write_text("not a zip")
    with pytest.raises(WeightFileError, match=r"expected a .npz \(zip\) weight file, found an unreadable file"):
        load_model(tmp_path / "plain.npz")
    data = good.read_bytes()
    for n in (0, 10, len(data) // 3, len(data) // 2, len(data) - 30, len(data) - 1):
        cut = tmp_path / f"cut{n}.npz"
        cut.write_bytes(data[:n])
        with pytest.raises(WeightFileError, match=re.escape(str(cut))):
            load_model(cut)


def test_v1_and_v2_files_point_to_each_others_loader(tmp_path):
    v1 = implementations.save(tmp_path / "v1.npz", implementations.init_weights(StackSpec(4, _layers([3])), 0))
    with pytest.raises(WeightFileError, match=r"expected 2, found 1: this is a version-1 file .*implementations\.load"):
        load_model(v1)
    v2 = save_model(tmp_path / "v2.npz", init_model_weights(TINY, 0))
    with pytest.raises(WeightFileError, match=r"expected 1, found 2: this is a version-2 file .*load_model"):
        implementations.load(v2)


def test_save_refuses_invalid_arrays(tmp_path):
    w = random_model_weights(TINY, 0)
    arrays = dict(w.arrays)
    arrays["head/bias"] = np.zeros(3)
    with pytest.raises(WeightFileError, match=r"head/bias: expected shape \(4,\), found \(3,\)"):
        save_model(tmp_path / "m.npz", ModelWeights(TINY, arrays))
    assert not (tmp_path / "m.npz").exists()


def _doc_example() -> str:
    text = (ROOT / "docs" / "model.md").read_text()
    section = text.split("### Writing one with NumPy alone", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_file_written_outside_the_project_loads(tmp_path):
    """docs/model.md's example, run by a Python that imports only NumPy, writes a file load_model reads."""
    code = _doc_example()
    assert "implementations" not in code
    subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp_path, check=True, timeout=60)
    w = load_model(tmp_path / "model.npz")
    assert w.spec.t_in == 3 and w.spec.patch_size == 2 and w.dtype == np.float32
    assert w.arrays["forecaster/layers/0/kernel"].shape == (3, 3, 0, 12)
    frames, targets = _tiny_data(w.spec, batch=1)
    r = reference_model.forward(w, frames, targets)
    assert r.predictions.shape == (1, 2, 8, 8, 1) and np.isfinite(r.loss)


def test_documented_layout_matches_weight_shapes():
    # Built from docs/model.md's table alone for a 2-layer model with channel peepholes on layer 1.
    spec = build_model_spec(2, 2, (6, 4), 2, 2, [3, 5], 3, "linear", peephole="channel")
    pc, sum_f = 8, 8
    expected = {}
    for stack in ("encoder", "forecaster"):
        for i, (c_in, f) in enumerate(((pc if stack == "encoder" else 0, 3), (3, 5))):
            expected[f"{stack}/layers/{i}/kernel"] = (3, 3, c_in, 4 * f)
            expected[f"{stack}/layers/{i}/recurrent_kernel"] = (3, 3, f, 4 * f)
            expected[f"{stack}/layers/{i}/bias"] = (4 * f,)
            for g in "ifo":
                expected[f"{stack}/layers/{i}/peephole_{g}"] = (f,)
    expected["head/kernel"] = (1, 1, sum_f, pc)
    expected["head/bias"] = (pc,)
    assert spec.weight_shapes() == expected
