"""The fast CPU backward pass of the JAX core's convolutions (a ``jax.custom_vjp``; the forward is one call).

Two rules, both on the CPU only (``backward_chunk`` resolved to an int; ``"auto"`` is None on GPUs, where
cuDNN wants the whole batch and plain ``lax`` autodiff is used):

* Chunked gradients: the input- and kernel-gradient convolutions of a layer's hoisted input convolution
  (all T*B frames) run on :data:`CPU_BACKWARD_CHUNK` frames at a time and the kernel gradients are summed,
  because XLA's CPU gradient convolutions slow down as the batch grows. The number of chunks is capped
  (:data:`CPU_MAX_BACKWARD_CHUNKS`) since compile time and compile memory grow with it. The per-step
  recurrent convolutions are not chunked: XLA would then keep every step's partial kernel gradients alive.
* im2col kernel gradients: XLA's CPU kernel-gradient convolution is slow for 3x3 kernels, so for wide 2-D 3x3
  stride-1 convolutions (:func:`im2col_pays`, input and recurrent alike) the kernel gradient is one matrix
  product of the stacked shifted input views with the output gradient, :data:`IM2COL_FRAMES` frames at a time.
  Narrower convolutions and larger kernels (whose patches are prod(k) times the input) keep XLA's gradient.

The custom VJP is reverse-mode only: pass ``backward_chunk=None`` for forward-mode AD (``jax.jvp``,
``jax.jacfwd``); second-order reverse mode works. The measurements behind these rules are in
docs/performance.md.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .. import api

__all__ = [
    "CPU_BACKWARD_CHUNK",
    "CPU_MAX_BACKWARD_CHUNKS",
    "DEFAULT_BACKWARD_CHUNK",
    "IM2COL_FRAMES",
    "IM2COL_MIN_IN_CHANNELS",
    "IM2COL_MIN_OUT_CHANNELS",
    "BackwardChunk",
    "conv_cpu_backward",
    "im2col_pays",
    "plain_conv",
    "resolve_backward_chunk",
]

#: Frames per gradient convolution of a hoisted input conv on the CPU with ``"auto"``: XLA's CPU gradient
#: convolutions run fastest on a few images at a time.
CPU_BACKWARD_CHUNK = 4
#: With ``"auto"`` on the CPU, at most this many chunks per input convolution (longer inputs get larger chunks):
#: compile time and compile memory grow with the number of chunks.
CPU_MAX_BACKWARD_CHUNKS = 16
#: Backward-chunk setting used when none is given: resolved per platform and input size.
DEFAULT_BACKWARD_CHUNK = "auto"
#: im2col kernel gradients only from this many input channels: below it the matrix product is no faster.
IM2COL_MIN_IN_CHANNELS = 16
#: ... and from this many output channels, for the same reason.
IM2COL_MIN_OUT_CHANNELS = 128
#: Frames per im2col matrix product: bounds the patches held at once (prod(k) times the chunk's input).
IM2COL_FRAMES = 8

#: Backward chunking of the input convs: ``"auto"``, None (off) or an int >= 1 frames per gradient convolution;
#: an int also turns on the im2col kernel gradients of wide 3x3 convolutions.
BackwardChunk = int | str | None

_SPATIAL_LETTERS = "DHW"


def resolve_backward_chunk(
    chunk: BackwardChunk, platform: str | None = None, frames: int | None = None
) -> int | None:
    """Normalise a backward-chunk setting to an int >= 1 or None (no chunking).

    ``"auto"`` is None off the CPU platform (``platform``, default ``jax.default_backend()``). On the CPU it is
    :data:`CPU_BACKWARD_CHUNK` frames, or, for a convolution over ``frames`` images,
    ``max(CPU_BACKWARD_CHUNK, ceil(frames / CPU_MAX_BACKWARD_CHUNKS))``.
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


def _dimension_numbers(rank: int) -> tuple[str, str, str]:
    """Channels-last dimension numbers for any spatial rank: ('NHWC', 'HWIO', 'NHWC') for rank 2."""
    spatial = _SPATIAL_LETTERS[-rank:]
    return f"N{spatial}C", f"{spatial}IO", f"N{spatial}C"


def plain_conv(
    x: jax.Array,
    kernel: jax.Array,
    strides: tuple[int, ...],
    dilation: tuple[int, ...],
    padding: tuple[tuple[int, int], ...],
    precision: lax.Precision | None,
) -> jax.Array:
    """``lax.conv_general_dilated``, channels-last, kernel (*k, C_in, C_out), with plain autodiff."""
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
    """:func:`plain_conv` with the CPU backward pass of the module docstring. ``im2col`` False: the input- and
    kernel-gradient convolutions run on ``chunk`` images at a time. True (stride 1 only): the input gradient is
    XLA's, the kernel gradient :func:`_kernel_grad_im2col` on ``chunk`` frames at a time."""
    return plain_conv(x, kernel, strides, dilation, padding, precision)


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
    return plain_conv(x, kernel, strides, dilation, padding, precision), (x, kernel)


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
        return plain_conv(a, k, strides, dilation, padding, precision)

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
    product on XLA's CPU backend: 2-D, 3x3, stride 1, >= IM2COL_MIN_IN_CHANNELS in and >= IM2COL_MIN_OUT_CHANNELS
    out."""
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
    """Gradient of a stride-1 :func:`plain_conv` with respect to its kernel (*k, C_in, C_out), from the input ``x``
    (N, *S, C_in) and the output gradient ``grad`` (N, *S', C_out): per chunk of ``frames`` images, the
    prod(k) shifted views of the padded input stacked to (n, *S', prod(k), C_in) and contracted with the gradient
    over (n, *S'); partial sums in at least float32. Each chunk's input is tied to the previous partial sum (a
    zero-valued scalar dependency) so that XLA makes one chunk's patches at a time instead of hoisting them all; a
    NaN or inf in that scalar, which makes the kernel gradient non-finite anyway, turns the whole gradient into
    NaN."""
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


def conv_cpu_backward(
    x: jax.Array,
    kernel: jax.Array,
    strides: tuple[int, ...],
    dilation: tuple[int, ...],
    padding: tuple[tuple[int, int], ...],
    precision: lax.Precision | None,
    backward_chunk: int | None,
    im2col: bool,
) -> jax.Array:
    """The convolution with the backward pass these settings call for: the im2col kernel gradient when ``im2col``
    and :func:`im2col_pays`, else chunked gradients when ``backward_chunk`` is an int below N, else plain autodiff."""
    args = (strides, dilation, padding, precision)
    if im2col and im2col_pays(kernel.shape, strides):
        return _conv_cpu_backward(x, kernel, *args, IM2COL_FRAMES, True)
    if backward_chunk is not None and x.shape[0] > backward_chunk:
        return _conv_cpu_backward(x, kernel, *args, backward_chunk, False)
    return plain_conv(x, kernel, *args)
