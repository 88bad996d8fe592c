"""The private framework APIs the implementations rely on are still there, and still answer as expected.

Each is asked in exactly one function, which falls back to a safe answer where the API is missing; a framework
upgrade that drops one would then only make a path slower, silently. These tests make it loud:

* torch: ``torch._C._autograd._get_current_graph_task_keep_graph``, behind ``torch_impl._keeps_graph`` (does the
  running backward keep its graph? then the hand-written loop backward must not overwrite its saved gates);
* TensorFlow: ``tensorflow.python.ops.control_flow_util.GraphOrParentsInXlaContext``, behind
  ``keras_impl.loop._tf_traced_by_xla`` (is this graph compiled by XLA? then the layer takes its XLA forms).
"""

from __future__ import annotations

import pytest


def test_torch_keep_graph_query_exists():
    torch = pytest.importorskip("torch", reason="torch is not installed")
    assert hasattr(torch._C._autograd, "_get_current_graph_task_keep_graph"), (
        f"torch {torch.__version__} no longer has torch._C._autograd._get_current_graph_task_keep_graph: "
        "torch_impl._keeps_graph now always answers True (every eager backward copies its saved gates); "
        "find the replacement and update _keeps_graph"
    )


@pytest.mark.parametrize("retain_graph", [True, False])
def test_torch_keeps_graph_inside_a_backward(retain_graph):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    from implementations import torch_impl

    seen = []

    class Record(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return 2 * x

        @staticmethod
        def backward(ctx, grad):
            seen.append(torch_impl._keeps_graph())
            return 2 * grad

    x = torch.ones(3, requires_grad=True)
    Record.apply(x).sum().backward(retain_graph=retain_graph)
    assert seen == [retain_graph]


def _tf():
    tf = pytest.importorskip("tensorflow", reason="tensorflow is not installed")
    pytest.importorskip("keras", reason="keras is not installed")
    from implementations import keras_impl

    return tf, keras_impl


def test_tf_xla_context_query_exists():
    tf, _ = _tf()
    from tensorflow.python.ops import control_flow_util

    assert hasattr(control_flow_util, "GraphOrParentsInXlaContext"), (
        f"tensorflow {tf.__version__} no longer has control_flow_util.GraphOrParentsInXlaContext: "
        "keras_impl._tf_traced_by_xla now always answers False (keras-tf-xla takes the slower non-XLA forms); "
        "find the replacement and update _tf_traced_by_xla"
    )


@pytest.mark.parametrize("where", ["eager", "tf.function", "tf.function(jit_compile=True)", "while_loop under XLA"])
def test_tf_traced_by_xla(where):
    tf, keras_impl = _tf()
    seen = []

    def record(x):
        seen.append(keras_impl._tf_traced_by_xla())
        return x

    def in_loop(x):
        return tf.while_loop(lambda i, v: i < 2, lambda i, v: (i + 1, record(v) + 1.0), (tf.constant(0), x))[1]

    x = tf.constant(1.0)
    if where == "eager":
        record(x)
    elif where == "tf.function":
        tf.function(record, jit_compile=False)(x)
    elif where == "tf.function(jit_compile=True)":
        tf.function(record, jit_compile=True)(x)
    else:
        tf.function(in_loop, jit_compile=True)(x)
    assert seen and all(s is ("XLA" in where or "jit_compile=True" in where) for s in seen), f"{where}: {seen}"
