"""Keras on TF under XLA (``jit_compile=True``): the layer splits its steps with slices there and with
``unstack`` elsewhere (:func:`implementations.keras_impl._split_steps`). Both forms must give the same
values and gradients as the float64 reference, and the XLA detection must see XLA where it is."""

from __future__ import annotations

import os

import numpy as np
import pytest

from implementations import reference
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
    x = tf.constant(x64.astype("float32"))

    def loss_and_grads(x):
        with tf.GradientTape() as tape:
            y = layer(x)
            loss = tf.reduce_sum(y * y)
        return y, tape.gradient(loss, layer.trainable_variables)

    runs = {jit: tf.function(loss_and_grads, jit_compile=jit)(x) for jit in (True, False)}
    want = reference.forward(weights, x64, go_backwards=case.go_backwards).outputs
    tol = tolerance("forward", "float32")
    for jit, (y, _) in runs.items():
        err = float(np.max(np.abs(y.numpy() - want)))
        assert err <= tol.bound(want), f"jit_compile={jit}: forward max abs diff {err:.3e} > {tol.bound(want):.3e}"
    gtol = tolerance("grad", "float32")
    for var, g_xla, g_graph in zip(layer.trainable_variables, runs[True][1], runs[False][1]):
        a, b = g_xla.numpy(), g_graph.numpy()
        err = float(np.max(np.abs(a - b)))
        assert err <= gtol.bound(b), f"{var.path}: XLA vs graph gradient max abs diff {err:.3e} > {gtol.bound(b):.3e}"
