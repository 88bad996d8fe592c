"""Keras on TF under XLA (``jit_compile=True``): the layer splits its steps with slices there and with
``unstack`` elsewhere (:func:`implementations.keras_impl.loop._split_steps`). Both forms must give the same
values and gradients as the float64 reference, and the XLA detection must see XLA where it is."""

from __future__ import annotations

import os

import numpy as np
import pytest

from implementations import reference
from implementations.spec import LayerSpec, StackSpec
from implementations.tolerances import tolerance
from implementations.weights import init_weights

from .cases import CASES_BY_ID

keras = pytest.importorskip("keras", reason="keras is not installed")
pytestmark = [
    pytest.mark.keras,
    pytest.mark.skipif(
        os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow", reason="XLA jit_compile path is TF-only"
    ),
]


@pytest.fixture(scope="module")
def tf():
    return pytest.importorskip("tensorflow", reason="tensorflow is not installed")


def test_xla_detection(tf):
    from implementations import keras_impl

    seen = {}

    def probe(x):
        seen["xla"] = keras_impl._backend_traced_by_xla()
        return x

    tf.function(probe, jit_compile=True)(tf.constant(1.0))
    assert seen["xla"] is True, "TF's XLA context is no longer detected: keras-tf-xla trains on the slower form"
    tf.function(probe, jit_compile=False)(tf.constant(1.0))
    assert seen["xla"] is False
    assert keras_impl._backend_traced_by_xla() is False  # eager


def _check_xla_against_graph(tf, layer, x, want, dtype: str) -> None:
    """Run ``layer`` on ``x`` under ``tf.function`` with and without XLA, forward and gradients of sum(y^2):
    both forwards against ``want`` (the reference), the XLA gradients against graph mode's, at ``dtype``'s
    tolerances; max abs diff in every message."""

    def loss_and_grads(x):
        with tf.GradientTape() as tape:
            y = layer(x)
            loss = tf.reduce_sum(y * y)
        return y, tape.gradient(loss, layer.trainable_variables)

    runs = {jit: tf.function(loss_and_grads, jit_compile=jit)(x) for jit in (True, False)}
    tol = tolerance("forward", dtype)
    for jit, (y, _) in runs.items():
        err = float(np.max(np.abs(y.numpy() - want)))
        assert err <= tol.bound(want), f"jit_compile={jit}: forward max abs diff {err:.3e} > {tol.bound(want):.3e}"
    gtol = tolerance("grad", dtype)
    for var, g_xla, g_graph in zip(layer.trainable_variables, runs[True][1], runs[False][1]):
        a, b = g_xla.numpy(), g_graph.numpy()
        err = float(np.max(np.abs(a - b)))
        assert err <= gtol.bound(b), f"{var.path}: XLA vs graph gradient max abs diff {err:.3e} > {gtol.bound(b):.3e}"


@pytest.mark.parametrize("case_id", ["go_backwards_2layers", "3layers_mixed"])
def test_xla_and_graph_agree(tf, case_id):
    """Forward against the float64 reference and gradients between the two step-split forms."""
    from implementations import keras_impl

    case = CASES_BY_ID[case_id]
    weights = init_weights(case.spec, seed=5)
    x64 = case.inputs("float64")
    layer = keras_impl.ConvLSTMStack(case.spec, return_sequences=True, go_backwards=case.go_backwards)
    layer.build(x64.shape)
    layer.set_canonical_weights(weights.arrays)
    want = reference.forward(weights, x64, go_backwards=case.go_backwards).outputs
    _check_xla_against_graph(tf, layer, tf.constant(x64.astype("float32")), want, "float32")


SINGLE_CHANNEL = {
    "k3_same": (LayerSpec(3, (3, 3)), (2, 3, 6, 5, 1)),
    "strides2_valid": (LayerSpec(3, (3, 2), strides=(2, 2), padding="valid"), (2, 3, 7, 8, 1)),
    "dilation_same_even": (LayerSpec(2, (2, 3), dilation_rate=(2, 1)), (1, 2, 7, 6, 1)),
    "rank1_strides2": (LayerSpec(3, (3,), strides=(2,)), (2, 3, 9, 1)),
    "rank3": (LayerSpec(2, (3, 2, 3)), (1, 2, 4, 3, 5, 1)),
}


@pytest.mark.parametrize("name", sorted(SINGLE_CHANNEL))
def test_single_channel_input_conv_as_matmul_under_xla(tf, name, monkeypatch):
    """Under XLA a one-channel input conv is one matrix product of shifted views
    (:func:`implementations.keras_impl.loop._conv_as_matmul`): in float64 its forward must match the reference and its
    gradients those of the plain convolution (graph mode), over strides, dilation, 'valid' and ranks 1 and 3."""
    from implementations import keras_impl

    layer_spec, shape = SINGLE_CHANNEL[name]
    spec = StackSpec(1, (layer_spec,))
    weights = init_weights(spec, seed=3)
    x64 = np.random.default_rng(4).standard_normal(shape)
    layer = keras_impl.ConvLSTMStack(spec, return_sequences=True, dtype="float64")
    layer.build(x64.shape)
    layer.set_canonical_weights(weights.arrays)
    calls = []
    real = keras_impl.loop._conv_as_matmul
    monkeypatch.setattr(keras_impl.loop, "_conv_as_matmul", lambda *a: calls.append(1) or real(*a))  # where it is used
    _check_xla_against_graph(tf, layer, tf.constant(x64), reference.forward(weights, x64).outputs, "float64")
    assert len(calls) == 1, f"the single-channel input conv took the matmul path {len(calls)} times (XLA only: 1)"
