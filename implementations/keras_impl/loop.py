"""The time loop of :class:`~implementations.keras_impl.model.ConvLSTMStack`, and the backend dispatch it needs.

Each layer runs its input convolution over all T frames as ONE call on ``(B*T, *S, C)`` before the time loop
(:func:`input_conv`), so only the recurrent convolution and the gate maths run per step (:func:`step`); the first
step from a zero state skips the recurrent convolution and the peephole terms (they are exactly 0). The loop is a
Python loop over the static T (:func:`run_layer`), unrolled when traced.

Both convolutions pad explicitly (``ops.pad``) with the TF/XLA 'same' rule of :meth:`LayerSpec.input_padding` /
:meth:`LayerSpec.recurrent_padding` and then run 'valid', so every backend computes the same windows (even kernels
included).

Two forms depend on whether TensorFlow's XLA compiles the trace (:func:`_backend_traced_by_xla`): the way the
steps are split (:func:`_split_steps`) and a single-channel input convolution (:func:`_conv_as_matmul`). Keras 3
has no backend-neutral gradient or tracing API; the ``_backend_*`` helpers at the end are that one dispatch.
The measurements behind these rules are in docs/performance.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from ..spec import LayerSpec

#: Input convolutions with this many input channels run as one matrix product under TF XLA
#: (:func:`_conv_as_matmul`): XLA's CPU convolution is slow for a single input channel, the product is not.
MATMUL_INPUT_CHANNELS = 1

Activation = Callable[[Any], Any]


def _pad_spatial(x: Any, padding: Sequence[tuple[int, int]]) -> Any:
    """Zero-pad the spatial axes of a channels-last tensor ``(N, *S, C)``; no-op without padding."""
    if not any(lo or hi for lo, hi in padding):
        return x
    return ops.pad(x, [(0, 0), *padding, (0, 0)])


def _conv_as_matmul(frames: Any, kernel: Any, strides: Sequence[int], dilation: Sequence[int]) -> Any:
    """A 'valid' convolution of padded channels-last ``frames`` ``(N, *S, C)`` with ``kernel`` ``(*k, C, F)`` as one
    matrix product: the ``prod(k)`` strided, shifted views of the frames side by side on the channel axis
    ``(N, *S', prod(k)*C)`` (offsets in row-major order, then channels: the kernel's own order) times the kernel
    reshaped to ``(prod(k)*C, F)``. Returns ``(N, *S', F)``."""
    k = tuple(kernel.shape[:-2])
    sizes = frames.shape[1:-1]
    out = [(n - d * (kk - 1) - 1) // s + 1 for n, kk, s, d in zip(sizes, k, strides, dilation)]
    views = [
        frames[(slice(None), *(slice(o * d, o * d + (m - 1) * s + 1, s) for o, m, s, d in zip(offset, out, strides,
                                                                                              dilation)))]
        for offset in np.ndindex(*k)
    ]
    patches = views[0] if len(views) == 1 else ops.concatenate(views, axis=-1)
    return ops.matmul(patches, ops.reshape(kernel, (-1, kernel.shape[-1])))


def _input_conv_as_matmul(in_channels: int) -> bool:
    """Whether an input convolution with ``in_channels`` runs as :func:`_conv_as_matmul`: only for
    :data:`MATMUL_INPUT_CHANNELS` channels under TF XLA; elsewhere the backend's convolution is the faster one."""
    return in_channels == MATMUL_INPUT_CHANNELS and _backend_traced_by_xla()


def input_conv(layer: LayerSpec, p: dict[str, Any], seq: Any) -> Any:
    """Input convolution (+ bias) of all T frames at once: ``(B, T, *S, C)`` -> ``(B, T, *S', 4F)``."""
    t, *spatial, cin = seq.shape[1:]
    frames = ops.reshape(seq, (-1, *spatial, cin))
    frames = _pad_spatial(frames, layer.input_padding(spatial))
    if _input_conv_as_matmul(cin):
        z = _conv_as_matmul(frames, p["kernel"], layer.strides, layer.dilation_rate)
    else:
        z = ops.conv(
            frames,
            p["kernel"],
            strides=layer.strides,
            padding="valid",
            dilation_rate=layer.dilation_rate,
            data_format="channels_last",
        )
    if layer.use_bias:
        z = ops.add(z, p["bias"])
    return ops.reshape(z, (-1, t, *z.shape[1:]))


def recurrent_conv(layer: LayerSpec, kernel: Any, h: Any) -> Any:
    """Recurrent convolution (stride 1, 'same', dilation 1): ``(B, *S', F)`` -> ``(B, *S', 4F)``."""
    padding = layer.recurrent_padding()
    if all(lo == hi for lo, hi in padding):
        # Odd kernel: symmetric padding, where every backend's 'same' agrees; it saves a pad op per step
        # (TF without XLA runs it as a separate copy).
        return ops.conv(h, kernel, strides=1, padding="same", data_format="channels_last")
    h = _pad_spatial(h, padding)
    return ops.conv(h, kernel, strides=1, padding="valid", data_format="channels_last")


def step(
    layer: LayerSpec, p: dict[str, Any], zx: Any, h: Any | None, c: Any | None, act: Activation, rec: Activation
) -> tuple[Any, Any]:
    """One step from the input pre-activation ``zx`` (B, *S', 4F). ``h = c = None``: zero state.
    ``act`` / ``rec``: the layer's activation and recurrent activation.

    A layer with no input (:func:`run_layer` with ``seq=None``) gives ``zx`` = its bias ``(4F,)`` (broadcast by the
    sum) or None (no bias: the gates are the recurrent convolution alone); it always has a state ``h``."""
    if h is None:
        z = zx
    else:
        zh = recurrent_conv(layer, p["recurrent_kernel"], h)
        z = zh if zx is None else ops.add(zx, zh)
    zi, zf, zc, zo = ops.split(z, 4, axis=-1)
    peephole = layer.peephole is not None
    if peephole and c is not None:
        zi = ops.add(zi, ops.multiply(p["peephole_i"], c))
        zf = ops.add(zf, ops.multiply(p["peephole_f"], c))
    i_t = rec(zi)
    if c is None:
        c_t = ops.multiply(i_t, act(zc))
    else:
        c_t = ops.add(ops.multiply(rec(zf), c), ops.multiply(i_t, act(zc)))
    if peephole:
        zo = ops.add(zo, ops.multiply(p["peephole_o"], c_t))
    h_t = ops.multiply(rec(zo), act(c_t))
    return h_t, c_t


def _split_steps(zx: Any) -> list[Any]:
    """``(B, T, ...)`` -> the T steps ``(B, ...)``, in the form whose gradient is cheapest on the backend.

    ``unstack``, whose gradient is one stack, except under TF XLA (``jit_compile=True``), where T slices are
    faster: XLA fuses the slices' padded gradients, and the stack of the unstack gradient costs more there. (On TF
    without XLA the gradient of each slice is a zero-filled (B, T, ...) tensor and the T of them are summed.)
    """
    if _backend_traced_by_xla():
        return [zx[:, t] for t in range(zx.shape[1])]
    return ops.unstack(zx, axis=1)


def run_layer(
    layer: LayerSpec, p: dict[str, Any], seq: Any, h: Any | None, c: Any | None, *, backwards: bool,
    act: Activation, rec: Activation, steps: int | None = None,
) -> tuple[Any, Any, Any]:
    """One layer over the sequence ``(B, T, *S, C)`` from ``(h, c)`` (None: zeros): its output sequence
    ``(B, T, *S', F)`` in processing order (t = T-1 ... 0 when ``backwards``) and its final ``h, c``.

    ``seq=None``: a layer with no input (a forecaster's layer 0) runs ``steps`` steps from the given ``(h, c)``
    with gates ``conv(h_{t-1}, R) + b``: no input sequence, no input convolution (the direction is moot)."""
    if seq is None:
        zxs = [p.get("bias")] * steps
    else:
        zxs = _split_steps(input_conv(layer, p, seq))
    outs = []
    for zx_t in reversed(zxs) if backwards else zxs:
        h, c = step(layer, p, zx_t, h, c, act, rec)
        outs.append(h)
    return ops.stack(outs, axis=1), h, c


# ---------------------------------------------------------------------------------------------
# Backend dispatch: what Keras 3 cannot express backend-neutrally (XLA detection, tracing, gradients).
# ---------------------------------------------------------------------------------------------


def _backend_traced_by_xla() -> bool:
    """True while the TF backend traces a function that XLA will compile (see :func:`_tf_traced_by_xla`);
    False on the other backends."""
    return keras.backend.backend() == "tensorflow" and _tf_traced_by_xla()


def _tf_traced_by_xla() -> bool:
    """Whether TensorFlow is now tracing a graph that XLA will compile: inside ``tf.function(jit_compile=True)``
    (what Keras' ``jit_compile=True`` uses), at any nesting depth (a ``tf.while_loop`` or ``tf.cond`` body of such
    a function too); False in eager code and in graphs TF runs itself.

    TF has no public API for this; it asks the private
    ``tensorflow.python.ops.control_flow_util.GraphOrParentsInXlaContext``. Fallback where TF lacks it: False
    (the layer then takes its non-XLA forms, ``unstack`` and the input conv: correct, slower under XLA).
    ``parity_tests/test_private_apis.py`` fails when the private API is gone, so that an upgrade is noticed.
    """
    try:
        import tensorflow as tf
        from tensorflow.python.ops import control_flow_util
    except ImportError:
        return False
    query = getattr(control_flow_util, "GraphOrParentsInXlaContext", None)
    return False if query is None else bool(query(tf.compat.v1.get_default_graph()))


def _backend_value_and_grad(loss: Callable[..., Any]) -> Callable[..., Any]:
    """``loss(values, x, *rest) -> scalar`` => ``f(values, x, *rest) -> (loss, grads of values, grad of x)``.

    Gradients of unused weights (e.g. the recurrent kernel when T = 1 from a zero state) are zeros.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        def value_and_grad_tf(values: list[Any], x: Any, *rest: Any) -> Any:
            values = [tf.convert_to_tensor(v) for v in values]
            with tf.GradientTape() as tape:
                tape.watch(values)
                tape.watch(x)
                value = loss(values, x, *rest)
            gv, gx = tape.gradient(value, (values, x), unconnected_gradients=tf.UnconnectedGradients.ZERO)
            return value, gv, gx

        return value_and_grad_tf
    if backend == "jax":
        import jax

        def value_and_grad_jax(values: list[Any], x: Any, *rest: Any) -> Any:
            value, (gv, gx) = jax.value_and_grad(loss, argnums=(0, 1))(values, x, *rest)
            return value, gv, gx

        return value_and_grad_jax
    if backend == "torch":
        import torch

        def value_and_grad_torch(values: list[Any], x: Any, *rest: Any) -> Any:
            leaves = [t.detach().requires_grad_(True) for t in (*values, x)]
            with torch.enable_grad():
                value = loss(leaves[:-1], leaves[-1], *rest)
            grads = torch.autograd.grad(value, leaves, allow_unused=True)
            grads = [torch.zeros_like(t) if g is None else g for t, g in zip(leaves, grads)]
            return value.detach(), grads[:-1], grads[-1]

        return value_and_grad_torch
    raise NotImplementedError(f"gradients on the {backend!r} Keras backend are not supported")


def _backend_inference(fn: Callable[..., Any], *, jit: bool) -> Callable[..., Any]:
    """``fn`` for inference: traced when ``jit``; on torch run under ``no_grad`` (no autograd graph)."""
    if keras.backend.backend() == "torch":
        import torch

        return torch.no_grad()(fn)
    return _backend_compile(fn) if jit else fn


def _backend_compile(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Trace ``fn`` once per input shape: ``tf.function`` / ``jax.jit``; torch (and others): as is."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, autograph=False)
    if backend == "jax":
        import jax

        return jax.jit(fn)
    return fn
