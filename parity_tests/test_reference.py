"""The float64 reference and the spec, checked against independent formulations written here."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from implementations import reference
from implementations.spec import LayerSpec, SpecError, StackSpec, same_padding, stack_from_dict
from implementations.weights import random_weights


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


@pytest.mark.parametrize(
    "n,k,s,d,expected",
    [(5, 2, 1, 1, (0, 1)), (5, 3, 1, 1, (1, 1)), (7, 3, 2, 1, (1, 1)), (6, 3, 2, 1, (0, 1)), (7, 3, 1, 2, (2, 2)),
     (5, 4, 1, 1, (1, 2)), (2, 5, 1, 1, (2, 2)), (8, 1, 3, 1, (0, 0))],
)
def test_same_padding_follows_tf_rule(n, k, s, d, expected):
    assert same_padding(n, k, s, d) == expected


def test_conv_nd_matches_direct_loop():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 7, 6, 3))
    k = rng.standard_normal((3, 2, 3, 4))
    strides, dil, pad = (2, 1), (1, 2), ((1, 2), (0, 1))
    got = reference.conv_nd(x, k, strides, dil, pad)
    xp = np.pad(x, [(0, 0), *pad, (0, 0)])
    oh = (xp.shape[1] - (3 - 1) * 1 - 1) // 2 + 1
    ow = (xp.shape[2] - (2 - 1) * 2 - 1) // 1 + 1
    want = np.zeros((2, oh, ow, 4))
    for b, i, j, o in itertools.product(range(2), range(oh), range(ow), range(4)):
        want[b, i, j, o] = sum(
            xp[b, i * 2 + a, j + c * 2, ci] * k[a, c, ci, o] for a in range(3) for c in range(2) for ci in range(3)
        )
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_1x1_convlstm_is_a_per_pixel_lstm():
    spec = StackSpec(3, (LayerSpec(2, (1, 1)),))
    w = random_weights(spec, seed=4)
    x = np.random.default_rng(1).standard_normal((2, 4, 3, 2, 3))
    got = reference.forward(w, x)
    K = w.arrays["layers/0/kernel"][0, 0]
    R = w.arrays["layers/0/recurrent_kernel"][0, 0]
    b = w.arrays["layers/0/bias"]
    h = np.zeros((2, 3, 2, 2))
    c = np.zeros_like(h)
    outs = []
    for t in range(4):
        z = x[:, t] @ K + h @ R + b
        i, f, g, o = z[..., 0:2], z[..., 2:4], z[..., 4:6], z[..., 6:8]
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        outs.append(h)
    np.testing.assert_allclose(got.outputs, np.stack(outs, 1), atol=1e-14)
    np.testing.assert_allclose(got.c[0], c, atol=1e-14)


def test_output_peephole_reads_the_new_cell_state():
    spec = StackSpec(1, (LayerSpec(1, (1, 1), peephole="channel", use_bias=False),))
    w = random_weights(spec, seed=0)
    for key in ("peephole_i", "peephole_f"):
        w.arrays[f"layers/0/{key}"][:] = 0.0
    w.arrays["layers/0/peephole_o"][:] = 2.0
    x = np.full((1, 1, 1, 1, 1), 0.7)
    got = reference.forward(w, x)
    K = w.arrays["layers/0/kernel"][0, 0, 0]
    z = 0.7 * K  # h0 = c0 = 0, so only the input conv contributes
    c1 = sigmoid(z[0]) * np.tanh(z[2])
    h1 = sigmoid(z[3] + 2.0 * c1) * np.tanh(c1)
    np.testing.assert_allclose(got.outputs.ravel(), [h1], atol=1e-15)


def test_go_backwards_single_layer_is_reversed_input():
    spec = StackSpec(2, (LayerSpec(3, (3, 3)),))
    w = random_weights(spec, seed=2)
    x = np.random.default_rng(3).standard_normal((1, 4, 5, 5, 2))
    back = reference.forward(w, x, go_backwards=True)
    fwd = reference.forward(w, x[:, ::-1].copy())
    np.testing.assert_array_equal(back.outputs, fwd.outputs)


def test_hard_sigmoids_differ_as_documented():
    spec3 = StackSpec(1, (LayerSpec(2, (3, 3), recurrent_activation="hard_sigmoid"),))
    spec2 = StackSpec(1, (LayerSpec(2, (3, 3), recurrent_activation="hard_sigmoid_keras2"),))
    w = random_weights(spec3, seed=1, scale=2.0)
    w2 = random_weights(spec2, seed=1, scale=2.0)
    x = np.random.default_rng(0).standard_normal((1, 3, 5, 5, 1))
    diff = np.abs(reference.forward(w, x).outputs - reference.forward(w2, x).outputs).max()
    assert diff > 0.01, "Keras 3 and Keras 2 hard_sigmoid must give different outputs"


def test_param_count_and_flops_by_hand():
    spec = StackSpec(2, (LayerSpec(3, (3, 3), peephole="channel"), LayerSpec(4, (1, 1), use_bias=False)))
    # layer 0: 9*2*12 + 9*3*12 + 12 + 3*3 = 216 + 324 + 12 + 9 ; layer 1: 3*16 + 4*16 = 112
    assert spec.param_count() == 561 + 112
    shape = (2, 3, 5, 5, 2)
    per_pos0 = 2 * 9 * (2 + 3) * 12 + 4 * 3 + 4 * 3 + 6 * 3 + 9 * 3
    per_pos1 = 2 * 1 * (3 + 4) * 16 + 4 * 4 + 9 * 4
    assert spec.flops(shape) == 2 * 3 * 25 * (per_pos0 + per_pos1)
    assert spec.flops(shape, "train") == 3 * spec.flops(shape)
    assert spec.activation_bytes(shape, 4) == 4 * (2 * 3 * 25 * 2 + 2 * 3 * 25 * 7 * 3 + 2 * 3 * 25 * 7 * 4)


def test_output_shapes_and_geometry_errors():
    spec = StackSpec(1, (LayerSpec(2, (3, 3), strides=2, padding="valid"), LayerSpec(2, (3, 3), strides=2)))
    assert spec.state_spatials((9, 8)) == [(4, 3), (2, 2)]
    with pytest.raises(SpecError, match=r"layer 0: input spatial shape \(2, 2\) is too small"):
        spec.state_spatials((2, 2))


@pytest.mark.parametrize(
    "bad,pattern",
    [
        ({"filters": 0}, "filters: expected a positive int"),
        ({"kernel_size": [3, 3, 3, 3]}, "spatial rank must be 1, 2 or 3"),
        ({"padding": "causal"}, "padding: expected one of"),
        ({"peephole": "diag"}, "peephole: expected one of"),
        ({"activation": "gelu"}, "activation: expected one of"),
        ({"recurrent_activation": "tanh"}, "recurrent_activation: expected one of"),
        ({"strides": [2, 2], "dilation_rate": [2, 2]}, "is not supported"),
        ({"strides": [2, 2, 2]}, "strides: expected 2 ints"),
    ],
)
def test_invalid_specs_are_refused(bad, pattern):
    with pytest.raises(SpecError, match=pattern):
        stack_from_dict({"input_channels": 1, "layers": [{"filters": 2, "kernel_size": [3, 3], **bad}]})


def test_mixed_ranks_refused():
    with pytest.raises(SpecError, match="same spatial rank"):
        StackSpec(1, (LayerSpec(2, (3, 3)), LayerSpec(2, (3,))))
