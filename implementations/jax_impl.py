"""ConvLSTM in JAX: a pure functional core, a Flax NNX module over it, and the benchmark ``Runner``.

Layers (each calls the one below; the maths lives only in the functional core):

* Functional core -- :func:`convlstm_apply` / :func:`layer_apply`. Parameters are a pytree: one
  dict per layer keyed by the canonical short names (``kernel`` (*k, C_in, 4F), ``recurrent_kernel``
  (*k, F, 4F), ``bias`` (4F,), ``peephole_{i,f,o}`` (F,) or (*S', F)), i.e. exactly the arrays of
  :meth:`Weights.layer <implementations.weights.Weights.layer>`; kernels are HWIO (channels-last,
  ``(*k, I, O)``) and used as stored. Convolutions are ``lax.conv_general_dilated`` with explicit
  TF/XLA 'same' padding from :meth:`LayerSpec.input_padding` / :meth:`LayerSpec.recurrent_padding`.
  Each layer's input convolution is hoisted out of the time loop (one convolution over all T*B
  frames); only the recurrent convolution runs inside ``jax.lax.scan``. From a zero initial state
  the first step runs before the scan without the recurrent convolution (its input is exactly 0).
* :class:`ConvLSTM` -- a ``flax.nnx.Module`` holding the weights as ``nnx.Param`` s.
* :class:`Runner` -- the :class:`implementations.api.Runner` contract (NumPy in/out), jit-compiled.

Loop strategy: the single knob is ``unroll`` (given to ``jax.lax.scan``): ``True`` or ``"full"``
unrolls the time loop completely (straight-line XLA code, no while loop), an int ``n >= 1`` keeps a
while loop whose body holds ``n`` steps (``1`` or ``False`` = fully rolled). It is normalised to
``"full"`` or an int, because ``True == 1`` (and hashes alike) would otherwise make jit's cache
confuse full unrolling with a rolled loop. The default :data:`DEFAULT_UNROLL` is ``"full"``:
on CPU, backpropagating through a rolled XLA while loop was measured 35-60x slower than the
unrolled program (10-16x on the 2-core dev box: 'small' 440 vs 46 ms, 'radar' 15.3 s vs 0.95 s),
and the forward pass is no slower unrolled (12 vs 17 ms, 260 vs 304 ms). Compile time grows with T
(a few seconds for the suite's workloads, T <= 10). Pass ``unroll=1`` (or a small int) for long sequences.

Backward chunking (``backward_chunk``, default ``"auto"``): on a CPU the backward pass of each layer's hoisted input
convolution (T*B frames) runs its input- and kernel-gradient convolutions on :data:`CPU_BACKWARD_CHUNK` (4) frames at
a time (``ceil(T*B / 16)`` when that is more: :data:`CPU_MAX_BACKWARD_CHUNKS`) and sums the kernel gradients (a
``jax.custom_vjp`` around the convolution; the forward convolution stays one call). XLA's CPU gradient convolutions
slow down with the batch: on the 2-core dev box the backward of a ``radar``-sized conv (25x25, 64 -> 256, k3) ran at
97 GFLOP/s on 40 frames in one call and 132-152 in chunks of 1-4, that of a hoisted ``moving_mnist`` input conv (160
frames) at 62-122 against 150-190, while the forward conv runs at ~200 either way. ``moving_mnist`` training measured
6079 -> 5240 ms (median, one process), ``radar`` 938 -> 880 (a loaded machine), ``small`` level; compile time grows by
~15 %. Chunking the per-step recurrent convolutions too was ~2 % faster still, but XLA then kept every step's partial
kernel gradients alive (``moving_mnist`` temporaries 377 -> 482 MB instead of 384), so they are not chunked. Compile
time and the compiler's memory grow with the number of chunks: ``moving_mnist``'s 160 frames in chunks of 4 compiled
in 7.2 s with the process's RSS rising ~590 MiB during compilation, in chunks of 10 (the cap of 16 chunks) in 5.4 s
and ~390 MiB (plain autodiff: 4.3 s, ~290 MiB) at the same step time (4800 ms). On GPUs ``"auto"`` means None (plain
``lax`` autodiff; cuDNN wants the whole batch). The custom VJP is reverse-mode only: pass ``backward_chunk=None`` for
forward-mode AD (``jax.jvp``, ``jax.jacfwd``); second-order reverse mode works.

Kernel gradients of 3x3 convolutions as one matrix product (same switch: on the CPU, whenever ``backward_chunk`` is
not None): XLA's CPU kernel-gradient convolution runs 3x3 kernels at 60-90 GFLOP/s whatever the channel counts,
against ~270 for 5x5 kernels and ~310 for the forward conv (2-vCPU Intel Xeon, jaxlib 0.10.2). For a 2-D 3x3,
stride-1 convolution with >= :data:`IM2COL_MIN_IN_CHANNELS` input and >= :data:`IM2COL_MIN_OUT_CHANNELS` output
channels -- the input and the recurrent convolutions alike -- the kernel gradient is computed instead from the 9
shifted views of the input, stacked (N, *S', 9, C), contracted with the output gradient in one ``dot_general``, on
:data:`IM2COL_FRAMES` frames at a time; each chunk's patches are made to depend on the previous chunk's result, so
that XLA builds one chunk's patches at a time instead of hoisting them all (``radar``'s temporaries: 264 MB
unchained, 131 MB chained, 127 MB with XLA's own gradient). Measured per conv (25x25, 64 -> 256, 8 frames): 89 ->
182 GFLOP/s; 16 -> 128 channels 59 -> 116; whole ``radar`` training step 497 -> 363 ms (fresh processes, medians of
3), with 4 MB more temporaries and 50-70 MiB more RSS increase. Below those channel counts the product is no faster
(16 -> 64: 0.92x, 1 -> 64: 0.93x), nor for 5x5 kernels, whose patches are 25 times the input (0.70x), so those keep
XLA's gradient.

Float64: JAX computes in float32 unless ``jax_enable_x64`` is set. A ``Runner(..., dtype="float64")``
therefore calls ``jax.config.update("jax_enable_x64", True)`` -- a process-wide side effect, done
only when float64 is requested. float32 runners keep working after it (their arrays carry an
explicit float32 dtype).

Precision: float32 convolutions use ``lax.Precision.HIGHEST`` by default, so that GPUs do not
silently use TF32 (JAX's default on Ampere and newer), which would break float32 parity; pass
``precision="default"`` to let XLA choose the fastest path.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import flax
import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
from flax import nnx
from jax import lax

from . import api
from .spec import HARD_SIGMOID_DIVISOR, HARD_SIGMOID_KERAS2_SLOPE, LayerSpec, StackSpec
from .weights import Weights, make_weights

__all__ = [
    "CPU_BACKWARD_CHUNK",
    "CPU_MAX_BACKWARD_CHUNKS",
    "DEFAULT_BACKWARD_CHUNK",
    "DEFAULT_PRECISION",
    "DEFAULT_UNROLL",
    "IM2COL_FRAMES",
    "IM2COL_MIN_IN_CHANNELS",
    "IM2COL_MIN_OUT_CHANNELS",
    "ConvLSTM",
    "ConvLSTMLayer",
    "Runner",
    "conv_nd",
    "convlstm_apply",
    "im2col_pays",
    "layer_apply",
    "layer_step",
    "params_from_weights",
    "resolve_backward_chunk",
    "versions",
]

#: Time-loop strategy used when none is given: ``"full"`` = fully unrolled ``lax.scan``.
DEFAULT_UNROLL: bool | int | str = "full"
#: Convolution precision used when none is given (see the module docstring).
DEFAULT_PRECISION = "highest"
#: Frames per gradient convolution of a hoisted input conv on the CPU when ``backward_chunk="auto"`` (module docstring).
CPU_BACKWARD_CHUNK = 4
#: With ``"auto"`` on the CPU, at most this many chunks per input convolution: longer inputs get larger chunks
#: (``ceil(frames / 16)``), as compile time and compile memory grow with the number of chunks.
CPU_MAX_BACKWARD_CHUNKS = 16
#: Backward-chunk setting used when none is given: :data:`CPU_BACKWARD_CHUNK` on CPU, None elsewhere.
DEFAULT_BACKWARD_CHUNK = "auto"
#: Kernel gradients as one matrix product (module docstring) for 2-D 3x3 stride-1 convolutions with at least this
#: many input channels and this many output channels, ...
IM2COL_MIN_IN_CHANNELS = 16
IM2COL_MIN_OUT_CHANNELS = 128
#: ... on this many frames at a time.
IM2COL_FRAMES = 8

#: Per-layer parameter pytree: canonical short name -> array.
LayerParams = Mapping[str, jax.Array]
#: Per-layer (h, c) pair, each (B, *S', F).
State = tuple[jax.Array, jax.Array]
#: Loop strategy: ``True``/``"full"`` (full unroll), ``False`` (= 1) or an int >= 1 steps per iteration.
Unroll = bool | int | str
#: Backward chunking of the input convs: ``"auto"``, None (off) or an int >= 1 frames per gradient convolution;
#: an int also turns on the im2col kernel gradients of wide 3x3 convolutions (module docstring).
BackwardChunk = int | str | None

_PRECISIONS = {
    "default": lax.Precision.DEFAULT,
    "high": lax.Precision.HIGH,
    "highest": lax.Precision.HIGHEST,
}
_SPATIAL_LETTERS = "DHW"


# ---------------------------------------------------------------------------------------------
# Element-wise functions (the formulas of implementations.spec)
# ---------------------------------------------------------------------------------------------

_ACTIVATIONS = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "linear": lambda x: x,
}
_RECURRENT_ACTIVATIONS = {
    "sigmoid": jax.nn.sigmoid,
    # Keras 3: relu6(x + 3) / 6 == clip(x / 6 + 0.5, 0, 1)
    "hard_sigmoid": lambda x: jnp.clip(x / HARD_SIGMOID_DIVISOR + 0.5, 0.0, 1.0),
    # Keras 2 / tf.keras
    "hard_sigmoid_keras2": lambda x: jnp.clip(HARD_SIGMOID_KERAS2_SLOPE * x + 0.5, 0.0, 1.0),
}


# ---------------------------------------------------------------------------------------------
# Functional core
# ---------------------------------------------------------------------------------------------

def _check_unroll(unroll: Any) -> int | str:
    """Normalise a loop strategy to ``"full"`` or an int >= 1 (never a bool: ``True == 1``)."""
    if isinstance(unroll, (bool, np.bool_)):
        return "full" if unroll else 1
    if isinstance(unroll, str) and unroll == "full":
        return "full"
    if isinstance(unroll, (int, np.integer)) and unroll >= 1:
        return int(unroll)
    raise api.InputError(f"unroll: expected True/False, 'full' or an int >= 1, found {unroll!r}")


def _precision(precision: str | lax.Precision | None) -> lax.Precision | None:
    if precision is None or isinstance(precision, lax.Precision):
        return precision
    if precision not in _PRECISIONS:
        raise api.InputError(f"precision: expected one of {sorted(_PRECISIONS)}, found {precision!r}")
    return _PRECISIONS[precision]


def _dimension_numbers(rank: int) -> tuple[str, str, str]:
    """Channels-last dimension numbers for any spatial rank: ('NHWC', 'HWIO', 'NHWC') for rank 2."""
    spatial = _SPATIAL_LETTERS[-rank:]
    return f"N{spatial}C", f"{spatial}IO", f"N{spatial}C"


def resolve_backward_chunk(
    chunk: BackwardChunk, platform: str | None = None, frames: int | None = None
) -> int | None:
    """Normalise a backward-chunk setting to an int >= 1 or None (no chunking).

    ``"auto"`` is None off the CPU platform (``platform``, default ``jax.default_backend()``; GPU convolution
    kernels want the whole batch). On the CPU it is :data:`CPU_BACKWARD_CHUNK` frames, or, for a convolution
    over ``frames`` images, ``max(CPU_BACKWARD_CHUNK, ceil(frames / CPU_MAX_BACKWARD_CHUNKS))``.
    """
    if chunk is None:
        return None
    if isinstance(chunk, str) and chunk == "auto":
        if (platform or jax.default_backend()) != "cpu":
            return None
        return CPU_BACKWARD_CHUNK if frames is None else max(CPU_BACKWARD_CHUNK, -(-frames // CPU_MAX_BACKWARD_CHUNKS))
    if isinstance(chunk, (int, np.integer)) and not isinstance(chunk, (bool, np.bool_)) and chunk >= 1:
        return int(chunk)
    raise api.InputError(f"backward_chunk: expected 'auto', None or an int >= 1, found {chunk!r}")


def _conv(
    x: jax.Array,
    kernel: jax.Array,
    strides: tuple[int, ...],
    dilation: tuple[int, ...],
    padding: tuple[tuple[int, int], ...],
    precision: lax.Precision | None,
) -> jax.Array:
    return lax.conv_general_dilated(
        x,
        kernel,
        window_strides=strides,
        padding=padding,
        rhs_dilation=dilation,
        dimension_numbers=_dimension_numbers(kernel.ndim - 2),
        precision=precision,
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5, 6, 7))
def _conv_cpu_backward(
    x: jax.Array,
    kernel: jax.Array,
    strides: tuple[int, ...],
    dilation: tuple[int, ...],
    padding: tuple[tuple[int, int], ...],
    precision: lax.Precision | None,
    chunk: int,
    im2col: bool,
) -> jax.Array:
    """:func:`_conv` with the CPU backward pass of the module docstring. ``im2col`` False: the input- and
    kernel-gradient convolutions run on ``chunk`` images at a time (see :data:`CPU_BACKWARD_CHUNK`). True (stride 1
    only): the input gradient is XLA's, the kernel gradient :func:`_kernel_grad_im2col` on ``chunk`` frames at a
    time. The forward convolution is one call either way."""
    return _conv(x, kernel, strides, dilation, padding, precision)


def _conv_cpu_fwd(
    x: jax.Array,
    kernel: jax.Array,
    strides: tuple[int, ...],
    dilation: tuple[int, ...],
    padding: tuple[tuple[int, int], ...],
    precision: lax.Precision | None,
    chunk: int,
    im2col: bool,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    return _conv(x, kernel, strides, dilation, padding, precision), (x, kernel)


def _conv_cpu_bwd(
    strides: tuple[int, ...],
    dilation: tuple[int, ...],
    padding: tuple[tuple[int, int], ...],
    precision: lax.Precision | None,
    chunk: int,
    im2col: bool,
    residuals: tuple[jax.Array, jax.Array],
    grad: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    x, kernel = residuals

    def conv(a: jax.Array, k: jax.Array) -> jax.Array:
        return _conv(a, k, strides, dilation, padding, precision)

    if im2col:
        grad_x = jax.vjp(lambda a: conv(a, kernel), x)[1](grad)[0]
        grad_k = _kernel_grad_im2col(x, grad, kernel.shape, dilation, padding, precision, chunk)
        return grad_x, grad_k.astype(kernel.dtype)
    # Kernel-gradient partial sums are accumulated in at least float32 (bfloat16 has 8 significand bits).
    acc_dtype = jnp.promote_types(kernel.dtype, jnp.float32)
    grad_x, grad_k = [], jnp.zeros(kernel.shape, acc_dtype)
    for start in range(0, x.shape[0], chunk):
        _, vjp = jax.vjp(conv, x[start : start + chunk], kernel)
        gx, gk = vjp(grad[start : start + chunk])
        grad_x.append(gx)
        grad_k = grad_k + gk.astype(acc_dtype)
    return jnp.concatenate(grad_x, axis=0), grad_k.astype(kernel.dtype)


_conv_cpu_backward.defvjp(_conv_cpu_fwd, _conv_cpu_bwd)


def im2col_pays(kernel_shape: Sequence[int], strides: Sequence[int]) -> bool:
    """Whether the kernel gradient of a convolution with this kernel (*k, C_in, C_out) runs faster as one matrix
    product on XLA's CPU backend (module docstring): 2-D, 3x3, stride 1, >= IM2COL_MIN_IN_CHANNELS in and
    >= IM2COL_MIN_OUT_CHANNELS out."""
    return (
        len(kernel_shape) == 4
        and tuple(kernel_shape[:2]) == (3, 3)
        and all(s == 1 for s in strides)
        and kernel_shape[2] >= IM2COL_MIN_IN_CHANNELS
        and kernel_shape[3] >= IM2COL_MIN_OUT_CHANNELS
    )


def _kernel_grad_im2col(
    x: jax.Array,
    grad: jax.Array,
    kernel_shape: Sequence[int],
    dilation: tuple[int, ...],
    padding: tuple[tuple[int, int], ...],
    precision: lax.Precision | None,
    frames: int,
) -> jax.Array:
    """Gradient of a stride-1 :func:`_conv` with respect to its kernel (*k, C_in, C_out), from the input ``x``
    (N, *S, C_in) and the output gradient ``grad`` (N, *S', C_out): per chunk of ``frames`` images, the
    prod(k) shifted views of the padded input stacked to (n, *S', prod(k), C_in) and contracted with the gradient
    over (n, *S'); partial sums in at least float32. Each chunk's input is tied to the previous partial sum (a
    zero-valued scalar dependency) so that XLA makes one chunk's patches at a time; a NaN or inf in that scalar,
    which makes the kernel gradient non-finite anyway, turns the whole gradient into NaN."""
    rank = len(kernel_shape) - 2
    acc_dtype = jnp.promote_types(grad.dtype, jnp.float32)
    out_spatial = grad.shape[1:-1]
    contract = tuple(range(rank + 1))
    total = None
    for start in range(0, x.shape[0], frames):
        chunk = x[start : start + frames]
        # Depend on the gradient (first chunk) or on the previous partial sum: XLA may not hoist this chunk's
        # patches into the forward pass, nor build every chunk's patches before the first product.
        anchor = grad.reshape(-1)[0] if total is None else total.reshape(-1)[0]
        chunk = chunk + (anchor * 0).astype(chunk.dtype)
        padded = jnp.pad(chunk, ((0, 0), *padding, (0, 0)))
        views = []
        for offsets in itertools.product(*(range(k) for k in kernel_shape[:rank])):
            begin = [o * d for o, d in zip(offsets, dilation)]
            end = [b + s for b, s in zip(begin, out_spatial)]
            views.append(lax.slice(padded, (0, *begin, 0), (chunk.shape[0], *end, chunk.shape[-1])))
        patches = jnp.stack(views, axis=-2)
        part = lax.dot_general(
            patches, grad[start : start + frames], ((contract, contract), ((), ())), precision=precision,
            preferred_element_type=acc_dtype,
        )
        total = part if total is None else total + part
    return total.reshape(kernel_shape)


def conv_nd(
    x: jax.Array,
    kernel: jax.Array,
    strides: Sequence[int],
    dilation: Sequence[int],
    padding: Sequence[tuple[int, int]],
    precision: str | lax.Precision | None = DEFAULT_PRECISION,
    backward_chunk: int | None = None,
    im2col: bool = False,
) -> jax.Array:
    """Cross-correlation of ``x`` (N, *S, C_in) with ``kernel`` (*k, C_in, C_out) -> (N, *S', C_out).

    ``padding``: explicit (low, high) per spatial axis; ``dilation`` is the kernel (rhs) dilation.
    ``im2col``: when :func:`im2col_pays` for this convolution, its kernel gradient is one matrix product per
    :data:`IM2COL_FRAMES` frames (a ``jax.custom_vjp``: reverse mode only; see the module docstring), and
    ``backward_chunk`` is not used. Otherwise ``backward_chunk``: an int n runs the gradient convolutions on n images
    at a time when N > n (a ``jax.custom_vjp``: reverse mode only, see :data:`CPU_BACKWARD_CHUNK`); None: plain
    ``lax`` autodiff.
    """
    strides, dilation = tuple(strides), tuple(dilation)
    padding = tuple(tuple(p) for p in padding)
    args = (strides, dilation, padding, _precision(precision))
    if im2col and im2col_pays(kernel.shape, strides):
        return _conv_cpu_backward(x, kernel, *args, IM2COL_FRAMES, True)
    if backward_chunk is not None and x.shape[0] > backward_chunk:
        return _conv_cpu_backward(x, kernel, *args, backward_chunk, False)
    return _conv(x, kernel, *args)


def layer_step(
    layer: LayerSpec,
    params: LayerParams,
    zx: jax.Array,
    h: jax.Array | None,
    c: jax.Array | None,
    precision: str | lax.Precision | None = DEFAULT_PRECISION,
    im2col: bool = False,
) -> State:
    """One time step given the input-conv pre-activation ``zx`` (B, *S', 4F), bias included.

    ``h``, ``c``: previous state (B, *S', F), or both None for a zero state (the recurrent conv and
    the i/f peephole terms are then exactly 0 and skipped). ``im2col``: see :func:`conv_nd` (the recurrent
    convolution's kernel gradient). Returns ``(h_t, c_t)``, each (B, *S', F).
    """
    act = _ACTIVATIONS[layer.activation]
    rec = _RECURRENT_ACTIVATIONS[layer.recurrent_activation]
    ones = (1,) * layer.rank
    z = zx
    if h is not None:
        z = z + conv_nd(
            h, params["recurrent_kernel"], ones, ones, layer.recurrent_padding(), precision, im2col=im2col
        )
    zi, zf, zc, zo = jnp.split(z, 4, axis=-1)
    if layer.peephole is not None and c is not None:
        zi = zi + params["peephole_i"] * c
        zf = zf + params["peephole_f"] * c
    i_t = rec(zi)
    c_t = i_t * act(zc) if c is None else rec(zf) * c + i_t * act(zc)
    if layer.peephole is not None:
        zo = zo + params["peephole_o"] * c_t
    o_t = rec(zo)
    h_t = o_t * act(c_t)
    return h_t, c_t


def layer_apply(
    layer: LayerSpec,
    params: LayerParams,
    frames: jax.Array,
    state: State | None = None,
    *,
    unroll: Unroll = DEFAULT_UNROLL,
    precision: str | lax.Precision | None = DEFAULT_PRECISION,
    backward_chunk: BackwardChunk = DEFAULT_BACKWARD_CHUNK,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Run one layer over TIME-MAJOR ``frames`` (T, B, *S, C) in the given order.

    ``state``: initial ``(h0, c0)``, each (B, *S', F); zeros when None. The input convolution runs
    once over all T*B frames (reshaped to (T*B, *S, C)); ``lax.scan`` (with ``unroll``) runs the
    recurrent part. ``backward_chunk`` (see the module docstring) applies to the input convolution's gradient;
    when it resolves to an int (the CPU), 3x3 convolutions wide enough for :func:`im2col_pays`, input and
    recurrent, take their kernel gradients as matrix products instead.
    Returns ``(sequence (T, B, *S', F), h_T, c_T)``.
    """
    t, b, *spatial, c_in = frames.shape
    chunk = resolve_backward_chunk(backward_chunk, frames=t * b)
    im2col = chunk is not None
    zx = conv_nd(
        frames.reshape(t * b, *spatial, c_in),
        params["kernel"],
        layer.strides,
        layer.dilation_rate,
        layer.input_padding(spatial),
        precision,
        chunk,
        im2col=im2col,
    )
    if layer.use_bias:
        zx = zx + params["bias"]
    zx = zx.reshape(t, b, *zx.shape[1:])
    first = None
    if state is None:
        # From a zero state the first step needs no recurrent conv: run it before the scan.
        state = layer_step(layer, params, zx[0], None, None, precision, im2col)
        first, zx = state[0], zx[1:]
        if t == 1:
            return first[None], state[0], state[1]

    def step(carry: State, zx_t: jax.Array) -> tuple[State, jax.Array]:
        h_t, c_t = layer_step(layer, params, zx_t, carry[0], carry[1], precision, im2col)
        return (h_t, c_t), h_t

    strategy = _check_unroll(unroll)
    (h, c), seq = lax.scan(step, tuple(state), zx, unroll=True if strategy == "full" else strategy)
    if first is not None:
        seq = jnp.concatenate([first[None], seq], axis=0)
    return seq, h, c


def convlstm_apply(
    spec: StackSpec,
    params: Sequence[LayerParams],
    x: jax.Array,
    initial_state: Sequence[State] | None = None,
    *,
    go_backwards: bool = False,
    unroll: Unroll = DEFAULT_UNROLL,
    precision: str | lax.Precision | None = DEFAULT_PRECISION,
    backward_chunk: BackwardChunk = DEFAULT_BACKWARD_CHUNK,
) -> tuple[jax.Array, list[jax.Array], list[jax.Array]]:
    """Run the stack on ``x`` (B, T, *S, C). Pure and jit-able (``spec`` and the options are static).

    ``params[i]``: layer i's arrays by short name. ``initial_state[i]``: ``(h0, c0)``, each
    (B, *S'_i, F_i), zeros when None. ``go_backwards`` (Keras semantics): every layer processes
    t = T-1 ... 0 and emits its sequence in processing order; the next layer reads it as given.
    Returns ``(sequence (B, T, *S', F_last), [h_i (B, *S'_i, F_i)], [c_i])``.
    """
    seq = jnp.moveaxis(x, 1, 0)  # time-major inside: scan runs over the leading axis
    hs, cs = [], []
    for i, layer in enumerate(spec.layers):
        if go_backwards:
            seq = jnp.flip(seq, axis=0)
        state = None if initial_state is None else initial_state[i]
        seq, h, c = layer_apply(
            layer, params[i], seq, state, unroll=unroll, precision=precision, backward_chunk=backward_chunk
        )
        hs.append(h)
        cs.append(c)
    return jnp.moveaxis(seq, 0, 1), hs, cs


def params_from_weights(weights: Weights, dtype: Any = None) -> list[dict[str, np.ndarray]]:
    """Canonical weights -> the core's parameter pytree (NumPy, cast to ``dtype`` when given)."""
    out = []
    for i in range(len(weights.spec.layers)):
        layer = weights.layer(i)
        out.append({k: (v if dtype is None else np.asarray(v, dtype=dtype)) for k, v in layer.items()})
    return out


# ---------------------------------------------------------------------------------------------
# Flax NNX module
# ---------------------------------------------------------------------------------------------

class ConvLSTMLayer(nnx.Module):
    """One layer's weights as ``nnx.Param`` attributes named canonically (``kernel``, ``bias`` ...)."""

    def __init__(self, layer: LayerSpec, arrays: Mapping[str, Any]) -> None:
        self.layer = layer
        self.names = tuple(sorted(arrays))
        for name in self.names:
            setattr(self, name, nnx.Param(jnp.asarray(arrays[name])))

    def params(self) -> dict[str, jax.Array]:
        """Short name -> array (the functional core's per-layer pytree)."""
        return {name: getattr(self, name)[...] for name in self.names}


class ConvLSTM(nnx.Module):
    """A ConvLSTM stack as a Flax NNX module; ``__call__`` runs :func:`convlstm_apply`.

    ``params``: one mapping per layer, canonical short name -> array (see :func:`params_from_weights`;
    arrays are taken as given, so cast float64 NumPy arrays yourself unless x64 is enabled).
    ``unroll`` / ``precision`` / ``backward_chunk``: see the module docstring; they are static (part of the
    graphdef).
    """

    def __init__(
        self,
        spec: StackSpec,
        params: Sequence[Mapping[str, Any]],
        *,
        unroll: Unroll = DEFAULT_UNROLL,
        precision: str = DEFAULT_PRECISION,
        backward_chunk: BackwardChunk = DEFAULT_BACKWARD_CHUNK,
    ) -> None:
        if len(params) != len(spec.layers):
            raise api.InputError(f"params: expected {len(spec.layers)} layer(s), found {len(params)}")
        _precision(precision)
        self.spec = spec
        self.unroll = _check_unroll(unroll)
        self.precision = precision
        resolve_backward_chunk(backward_chunk)  # validate now; "auto" is resolved at trace time
        self.backward_chunk = backward_chunk
        self.layers = nnx.List([ConvLSTMLayer(layer, p) for layer, p in zip(spec.layers, params)])

    @classmethod
    def from_weights(
        cls,
        weights: Weights,
        *,
        dtype: Any = None,
        device: jax.Device | None = None,
        unroll: Unroll = DEFAULT_UNROLL,
        precision: str = DEFAULT_PRECISION,
        backward_chunk: BackwardChunk = DEFAULT_BACKWARD_CHUNK,
    ) -> ConvLSTM:
        """Build from canonical weights, cast to ``dtype`` (default: the weights' own) on ``device``."""
        params = params_from_weights(weights, dtype)
        if device is not None:
            params = jax.device_put(params, device)
        return cls(weights.spec, params, unroll=unroll, precision=precision, backward_chunk=backward_chunk)

    def params(self) -> list[dict[str, jax.Array]]:
        """The parameter pytree the functional core takes: one dict per layer."""
        return [layer.params() for layer in self.layers]

    def to_weights(self, meta_extra: dict[str, Any] | None = None) -> Weights:
        """Canonical :class:`Weights` (NumPy copies of the current parameters)."""
        arrays = {
            f"layers/{i}/{name}": np.array(value) for i, p in enumerate(self.params()) for name, value in p.items()
        }
        return make_weights(self.spec, arrays, meta_extra)

    def __call__(
        self,
        x: jax.Array,
        initial_state: Sequence[State] | None = None,
        *,
        go_backwards: bool = False,
    ) -> tuple[jax.Array, list[jax.Array], list[jax.Array]]:
        """``x`` (B, T, *S, C) -> ``(sequence (B, T, *S', F), [h_i], [c_i])``; see :func:`convlstm_apply`."""
        return convlstm_apply(
            self.spec,
            self.params(),
            x,
            initial_state,
            go_backwards=go_backwards,
            unroll=self.unroll,
            precision=self.precision,
            backward_chunk=self.backward_chunk,
        )


# ---------------------------------------------------------------------------------------------
# Jitted entry points (module graphdef static, its state traced)
# ---------------------------------------------------------------------------------------------

@functools.partial(jax.jit, static_argnames=("graphdef", "return_sequences", "go_backwards"))
def _forward_jit(
    graphdef: Any,
    state: Any,
    x: jax.Array,
    initial_state: Any,
    return_sequences: bool,
    go_backwards: bool,
) -> tuple[jax.Array, list[jax.Array], list[jax.Array]]:
    model = nnx.merge(graphdef, state)
    seq, hs, cs = model(x, initial_state, go_backwards=go_backwards)
    return api.select_output(seq, return_sequences), hs, cs


def _probe_loss(seq: jax.Array, hs: list[jax.Array], cs: list[jax.Array], probe: Any) -> jax.Array:
    gy, gh, gc = probe
    total = jnp.sum(seq * gy)
    for v, g in zip(hs, gh):
        total = total + jnp.sum(v * g)
    for v, g in zip(cs, gc):
        total = total + jnp.sum(v * g)
    return total


@functools.partial(jax.jit, static_argnames=("graphdef", "go_backwards"))
def _value_and_grad_jit(
    graphdef: Any,
    state: Any,
    x: jax.Array,
    initial_state: Any,
    probe: Any,
    go_backwards: bool,
) -> tuple[jax.Array, tuple[Any, jax.Array]]:
    def loss(state: Any, x: jax.Array) -> jax.Array:
        model = nnx.merge(graphdef, state)
        seq, hs, cs = model(x, initial_state, go_backwards=go_backwards)
        return _probe_loss(seq, hs, cs, probe)

    return jax.value_and_grad(loss, argnums=(0, 1))(state, x)


# ---------------------------------------------------------------------------------------------
# Runner
# ---------------------------------------------------------------------------------------------

def _resolve_device(device: Any) -> jax.Device:
    """None -> ``jax.devices()[0]`` (the accelerator when present); accepts a jax Device or
    'cpu', 'cpu:0', 'cuda', 'cuda:1', 'gpu:0', 'rocm:0', 'tpu:0'."""
    if device is None:
        return jax.devices()[0]
    if isinstance(device, jax.Device):
        return device
    if not isinstance(device, str):
        raise api.InputError(f"device: expected None, a jax Device or a string like 'cuda:0', found {device!r}")
    name, _, index = device.strip().lower().partition(":")
    platform = {"cuda": "gpu", "rocm": "gpu"}.get(name, name)
    try:
        idx = int(index) if index else 0
        return jax.devices(platform)[idx]
    except (RuntimeError, ValueError, IndexError) as exc:
        raise api.InputError(f"device: {device!r} is not available to JAX ({exc})") from None


def _device_name(device: jax.Device) -> str:
    platform = device.platform
    if platform == "gpu":
        version = str(getattr(getattr(device, "client", None), "platform_version", "")).lower()
        platform = "rocm" if "rocm" in version else "cuda"
    return f"{platform}:{device.id}"


class Runner(api.Runner):
    """The JAX/Flax NNX runner: NumPy in/out, computation jit-compiled on one JAX device.

    ``dtype="float64"`` enables ``jax_enable_x64`` process-wide (see the module docstring).
    ``device``: None (``jax.devices()[0]``), a jax Device, or a string such as ``"cuda:0"``.
    ``unroll``: the time-loop strategy (default :data:`DEFAULT_UNROLL`, full unroll).
    ``precision``: float32 convolution precision, ``"highest"`` (default), ``"high"`` or ``"default"``.
    ``backward_chunk``: frames per gradient convolution of each hoisted input convolution; ``"auto"`` (default)
    resolves against ``device`` (:func:`resolve_backward_chunk`: :data:`CPU_BACKWARD_CHUNK` frames, or more for long
    inputs, on a CPU; None elsewhere).
    """

    framework = "jax"

    def __init__(
        self,
        weights: Weights,
        *,
        dtype: str = "float32",
        device: Any = None,
        unroll: Unroll | None = None,
        precision: str = DEFAULT_PRECISION,
        backward_chunk: BackwardChunk = DEFAULT_BACKWARD_CHUNK,
    ) -> None:
        super().__init__(weights, dtype=dtype, device=device)
        self._np_dtype = np.dtype(self.dtype)
        self._ensure_x64()
        self._device = _resolve_device(device)
        self.unroll = _check_unroll(DEFAULT_UNROLL if unroll is None else unroll)
        self.precision = precision
        platform = self._device.platform
        # "auto" stays "auto" (resolved per input size at trace time) where the device is on the default backend,
        # which is what the trace-time resolution sees; otherwise it is resolved for the device now.
        resolve_backward_chunk(backward_chunk)  # validate
        if not (isinstance(backward_chunk, str) and platform == jax.default_backend()):
            backward_chunk = resolve_backward_chunk(backward_chunk, platform)
        self.backward_chunk = backward_chunk
        self.model = ConvLSTM.from_weights(
            weights,
            dtype=self._np_dtype,
            device=self._device,
            unroll=self.unroll,
            precision=precision,
            backward_chunk=self.backward_chunk,
        )
        self._graphdef, self._state = nnx.split(self.model)

    def _ensure_x64(self) -> None:
        if self._np_dtype == np.float64 and not jax.config.jax_enable_x64:
            jax.config.update("jax_enable_x64", True)

    @property
    def device(self) -> str:
        """e.g. ``"cpu:0"`` or ``"cuda:0"``."""
        return _device_name(self._device)

    @property
    def jax_device(self) -> jax.Device:
        return self._device

    def _put(self, tree: Any) -> Any:
        return jax.device_put(tree, self._device)

    def _prepare(
        self, x: np.ndarray, initial_state: Sequence[tuple[np.ndarray, np.ndarray]] | None
    ) -> tuple[Any, Any]:
        """Checked frames and initial state, on the runner's device."""
        self._ensure_x64()
        x, states = api.check_input(self.weights, x, self.dtype)
        init = api.check_initial_state(self.weights, initial_state, x.shape[0], states, self.dtype)
        return self._put(x), (None if init is None else self._put(init))

    @staticmethod
    def _to_numpy(tree: Any) -> Any:
        return jax.tree_util.tree_map(np.array, jax.device_get(tree))

    def forward(
        self,
        x: np.ndarray,
        *,
        initial_state: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
        return_sequences: bool = True,
        go_backwards: bool = False,
    ) -> api.ForwardResult:
        """``x`` (B, T, *S, C) -> outputs (B, T, *S', F) (or (B, *S', F)), final h/c per layer."""
        xd, init = self._prepare(x, initial_state)
        out = _forward_jit(self._graphdef, self._state, xd, init, bool(return_sequences), bool(go_backwards))
        seq, hs, cs = self._to_numpy(out)
        return api.ForwardResult(seq, list(hs), list(cs))

    def value_and_grad(
        self,
        x: np.ndarray,
        probe: api.ProbeLike,
        *,
        initial_state: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
        go_backwards: bool = False,
    ) -> api.GradResult:
        """The probe's loss on the full output sequence and final states, and its gradients.

        ``probe``: a :class:`~implementations.api.LossProbe` or an array of the output sequence's shape
        (see :func:`~implementations.api.check_probe`). Gradients: canonical weight keys with the
        weights' shapes, plus ``"input"`` (B, T, *S, C), NumPy in the runner's dtype.
        """
        xd, init = self._prepare(x, initial_state)
        checked = api.check_probe(self.weights.spec, probe, xd.shape, self.dtype)
        probe_d = self._put((checked.gy, checked.gh, checked.gc))
        loss, (grad_state, grad_x) = _value_and_grad_jit(
            self._graphdef, self._state, xd, init, probe_d, bool(go_backwards)
        )
        grad_params = nnx.merge(self._graphdef, grad_state).params()
        loss, grad_params, grad_x = self._to_numpy((loss, grad_params, grad_x))
        grads = {f"layers/{i}/{name}": g for i, p in enumerate(grad_params) for name, g in p.items()}
        grads["input"] = grad_x
        return api.GradResult(float(loss), grads)

    def export_weights(self) -> Weights:
        """The weights held on the device, as canonical :class:`Weights` in the runner's dtype.

        Bit-identical to the weights given when their dtype is the runner's; ``meta_extra`` is kept.
        """
        return self.model.to_weights(self.weights.meta_extra)


def versions() -> dict[str, str]:
    """Versions and platform for reports: jax, jaxlib, flax, backend platform, device kind."""
    device = jax.devices()[0]
    return {
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax.__version__,
        "backend": jax.default_backend(),
        "device_kind": str(device.device_kind),
        "device_count": str(jax.device_count()),
    }
