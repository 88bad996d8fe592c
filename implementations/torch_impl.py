"""PyTorch implementation of the ConvLSTM stack (:mod:`implementations.spec`).

Inside, everything is channels-first: sequences ``(B, T, C, *S)``, states ``(B, F, *S')``, conv
kernels ``(4F, C_in, *k)`` (PyTorch's layout), 'full' peepholes ``(F, *S')``, 'channel' peepholes
``(F,)``. The :class:`Runner` converts at the boundary from and to the canonical channels-last
NumPy layout of :mod:`implementations.api` and :mod:`implementations.weights`.

Speed: each layer runs its input convolution over all T frames as one call on ``(T*B, C, *S)`` before the time
loop, so only the recurrent convolution and the gate maths run per step; the first step from a zero state skips the
recurrent convolution and the peephole terms. Each layer's input convolution and time loop are one
``torch.autograd.Function`` (:class:`_Recurrence`) with a hand-written backward: it saves only the activated gates,
cell states and hidden states, keeps the input convolution's output, the activated gates and their gradients in one
time-major buffer (each overwriting the last in place), and computes the recurrent kernel's gradient as one
convolution over all steps instead of one per step. For 2-D and 3-D frames the tensors live in channels-last memory
format (``torch.channels_last``; logical shapes stay channels-first), which oneDNN and cuDNN convolve without a
reorder at each call; hidden states are written into one time-major buffer in that memory order, so the output
sequences of 2-D/3-D layers are not contiguous in the default format (use ``.reshape``, not ``.view``).

This is the only module of the package that imports torch.
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import api
from .spec import (
    HARD_SIGMOID_DIVISOR,
    HARD_SIGMOID_KERAS2_SLOPE,
    HARD_SIGMOID_SLOPES,
    PEEPHOLE_GATES,
    LayerSpec,
    SpecError,
    StackSpec,
)
from .weights import Weights, make_weights

__all__ = [
    "ConvLSTM",
    "ConvLSTMLayer",
    "Runner",
    "canonical_to_torch",
    "resolve_device",
    "torch_to_canonical",
    "versions",
]

Tensor = torch.Tensor
State = tuple[Tensor, Tensor]

_CONV: dict[int, Callable[..., Tensor]] = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_MEMORY_FORMATS: dict[int, torch.memory_format] = {2: torch.channels_last, 3: torch.channels_last_3d}


# ---------------------------------------------------------------------------------------------
# Element-wise functions: the formulas of spec.NUMPY_ACTIVATIONS / NUMPY_RECURRENT_ACTIVATIONS.
# ---------------------------------------------------------------------------------------------

def _linear(x: Tensor) -> Tensor:
    return x


def _hard_sigmoid(x: Tensor) -> Tensor:
    # Keras 3: relu6(x + 3) / 6 == clip(x / 6 + 0.5, 0, 1)
    return torch.clamp(x / HARD_SIGMOID_DIVISOR + 0.5, 0.0, 1.0)


def _hard_sigmoid_keras2(x: Tensor) -> Tensor:
    return torch.clamp(HARD_SIGMOID_KERAS2_SLOPE * x + 0.5, 0.0, 1.0)


_IDENTITY_TANH_DTYPES = (torch.float32, torch.float64)
#: The identity pays off only on large strided views with short contiguous runs (see :func:`_tanh`).
_IDENTITY_TANH_MAX_RUN = 32
_IDENTITY_TANH_MIN_NUMEL = 16384


def _use_identity_tanh(x: Tensor) -> bool:
    """Whether :func:`_tanh` computes ``tanh(x)`` as ``2 sigmoid(2x) - 1``: on CPU, in float32/float64, eagerly,
    for a tensor that is not dense in any memory format, whose stride-1 axis is shorter than
    ``_IDENTITY_TANH_MAX_RUN`` and that has at least ``_IDENTITY_TANH_MIN_NUMEL`` elements."""
    if x.device.type != "cpu" or x.dtype not in _IDENTITY_TANH_DTYPES or torch.compiler.is_compiling():
        return False
    if x.numel() < _IDENTITY_TANH_MIN_NUMEL or x.is_contiguous():
        return False
    fmt = _MEMORY_FORMATS.get(x.ndim - 2)
    if fmt is not None and x.is_contiguous(memory_format=fmt):
        return False
    run = next((size for size, stride in zip(x.shape, x.stride()) if stride == 1), 1)
    return run < _IDENTITY_TANH_MAX_RUN


def _tanh(x: Tensor, out: Tensor | None = None) -> Tensor:
    """``tanh(x)``; for large strided views with short contiguous runs (:func:`_use_identity_tanh`) computed as
    ``2 sigmoid(2x) - 1``.

    Why: torch's CPU tanh kernel is fast on dense tensors but slow on a gate block of a channels-last gate tensor
    when F is small (runs of F contiguous elements, then a jump of 4F). Measured on a 2-vCPU Intel Xeon (AVX-512),
    float32, per call:

    * the g-gate view of `small` (B 4, F 16, 32x32): tanh 88 us, the identity 40 us (the figures that introduced the
      identity on a 2-core Zen 5, 87-156 us against 31 us for a (4, 16, 32, 32) tensor, match this case);
    * the same with F 64 (`radar`, B 8, 25x25): tanh 171 us, the identity 231 us;
    * dense (B 4, F 16, 32x32), the cell state: tanh 15 us, the identity 38 us; (8, 64, 25, 25): 57 vs 137 us;
    * small views (512 to 8192 elements): tanh 6.6-24.5 us, the identity 10.4-25.1 us.

    The identity adds <= 2e-7 absolute error in float32 (forward tolerance 1e-5). Half-precision dtypes (where
    ``sigmoid(2x)`` rounded near 0.5 would lose tanh's small values), GPUs and torch.compile (which generates its own
    vectorised tanh) always use torch.tanh.
    """
    if not _use_identity_tanh(x):
        return torch.tanh(x) if out is None else torch.tanh(x, out=out)
    s = torch.sigmoid(x * 2.0)
    return torch.add(s.new_full((), -1.0), s, alpha=2.0, out=out)


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": _tanh,
    "relu": torch.relu,
    "linear": _linear,
}
RECURRENT_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "sigmoid": torch.sigmoid,
    "hard_sigmoid": _hard_sigmoid,
    "hard_sigmoid_keras2": _hard_sigmoid_keras2,
}


# Derivatives as functions of the output ``y = f(x)``: ``(grad, y) -> grad * f'(x)``; ``out``, when given, receives
# the result (a view into the gate-gradient buffer of the hand-written backward).

def _tanh_grad(g: Tensor, y: Tensor, out: Tensor | None = None) -> Tensor:
    if out is None:
        return torch.ops.aten.tanh_backward(g, y)
    return torch.ops.aten.tanh_backward.grad_input(g, y, grad_input=out)


def _sigmoid_grad(g: Tensor, y: Tensor, out: Tensor | None = None) -> Tensor:
    if out is None:
        return torch.ops.aten.sigmoid_backward(g, y)
    return torch.ops.aten.sigmoid_backward.grad_input(g, y, grad_input=out)


def _relu_grad(g: Tensor, y: Tensor, out: Tensor | None = None) -> Tensor:
    return _store(torch.where(y > 0, g, 0.0), out)


def _linear_grad(g: Tensor, y: Tensor, out: Tensor | None = None) -> Tensor:
    return _store(g, out)


def _clip_grad(slope: float) -> Callable[..., Tensor]:
    """Derivative of ``clip(slope * x + 0.5, 0, 1)``: ``slope`` where the output is strictly inside (0, 1)."""

    def grad(g: Tensor, y: Tensor, out: Tensor | None = None) -> Tensor:
        return _store(torch.where((y > 0) & (y < 1), g * slope, 0.0), out)

    return grad


def _store(value: Tensor, out: Tensor | None) -> Tensor:
    if out is None:
        return value
    return out.copy_(value)


ACTIVATION_GRADS: dict[str, Callable[..., Tensor]] = {"tanh": _tanh_grad, "relu": _relu_grad, "linear": _linear_grad}
RECURRENT_ACTIVATION_GRADS: dict[str, Callable[..., Tensor]] = {
    "sigmoid": _sigmoid_grad,
    "hard_sigmoid": _clip_grad(HARD_SIGMOID_SLOPES["hard_sigmoid"]),
    "hard_sigmoid_keras2": _clip_grad(HARD_SIGMOID_SLOPES["hard_sigmoid_keras2"]),
}


def _apply(fn: Callable[[Tensor], Tensor], x: Tensor, out: Tensor) -> None:
    """``out[...] = fn(x)``, written in place where the function has an out= form."""
    if fn is _tanh or fn is torch.sigmoid:
        fn(x, out=out)
    else:
        out.copy_(fn(x))


# ---------------------------------------------------------------------------------------------
# Padding and layout helpers
# ---------------------------------------------------------------------------------------------

def _split_padding(padding: Sequence[tuple[int, int]]) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """Split per-axis (low, high) padding into what the conv call pads and what F.pad must add first.

    Returns ``(conv_padding, pre_pad)``: symmetric padding goes to the conv call (``pre_pad`` None);
    asymmetric padding (TF/XLA 'same' with an odd total: the extra at the end) is done by
    ``F.pad(x, pre_pad)`` and the conv gets zero padding.
    """
    if all(lo == hi for lo, hi in padding):
        return tuple(lo for lo, _ in padding), None
    pre_pad: list[int] = []
    for lo, hi in reversed(tuple(padding)):  # F.pad lists the last axis first
        pre_pad += [lo, hi]
    return (0,) * len(padding), tuple(pre_pad)


def _to_channels_first(t: Tensor, lead: int) -> Tensor:
    """``(*lead axes, *S, C)`` -> ``(*lead axes, C, *S)``, contiguous."""
    n = t.ndim
    return t.permute(*range(lead), n - 1, *range(lead, n - 1)).contiguous()


def _to_channels_last(t: Tensor, lead: int) -> Tensor:
    """``(*lead axes, C, *S)`` -> ``(*lead axes, *S, C)``, contiguous."""
    n = t.ndim
    return t.permute(*range(lead), *range(lead + 1, n), lead).contiguous()


# Channels-last tensors keep their logical channels-first shape. Mixed-layout element-wise ops run up to 20x
# slower than same-layout ones (a (8, 64, 25, 25) multiply: 0.05 ms vs 0.96 ms), so every tensor of the time
# loop is channels-last, and gates are split through the memory order.

def _split_channels(t: Tensor, n: int, channels_last: bool) -> tuple[Tensor, ...]:
    """``(B, n*F, *S)`` -> n tensors ``(B, F, *S)`` (views), for the autograd loop: the views are the same as
    ``t.chunk(n, 1)``'s, but autograd's backward of these view ops (an unbind's is a stack) writes the gradient in
    the channels-last order, which the README's issue-7 table measured as faster. Without autograd
    (:class:`_Recurrence`) ``chunk`` gives the same views in one op instead of ~11."""
    if not channels_last:
        return t.chunk(n, dim=1)
    blocks = t.movedim(1, -1).unflatten(-1, (n, -1)).unbind(-2)  # each (B, *S, F)
    return tuple(block.movedim(-1, 1) for block in blocks)


def _empty_steps(n: int, b: int, c: int, spatial: Sequence[int], like: Tensor, channels_last: bool) -> Tensor:
    """An uninitialised ``(n, B, C, *S)`` buffer; channels-last: memory ``(n, B, *S, C)``, so every ``buf[k]`` and
    every ``buf[j:k].reshape(-1, C, *S)`` is a dense channels-last batch."""
    if not channels_last:
        return like.new_empty((n, b, c, *spatial))
    return like.new_empty((n, b, *spatial, c)).movedim(-1, 2)


def _time_major_frames(x: Tensor, channels_last: bool) -> Tensor:
    """``(B, T, C, *S)`` -> ``(T*B, C, *S)``, frames time-major (a view when ``x`` is a time-major buffer from
    :func:`_empty_steps`, one copy otherwise)."""
    b, t, c = x.shape[:3]
    if not channels_last:
        return x.transpose(0, 1).reshape(t * b, *x.shape[2:])
    return x.transpose(0, 1).movedim(2, -1).reshape(t * b, *x.shape[3:], c).movedim(-1, 1)


def canonical_to_torch(name: str, array: np.ndarray) -> np.ndarray:
    """A canonical weight array in the module's layout (a transposed copy where the layouts differ).

    ``kernel`` / ``recurrent_kernel``: ``(*k, C_in, 4F)`` -> ``(4F, C_in, *k)``; ``bias`` ``(4F,)``
    and 'channel' peepholes ``(F,)`` unchanged; 'full' peepholes ``(*S', F)`` -> ``(F, *S')``.
    ``name`` is the short name (``kernel``, ``peephole_i`` ...) or a full key (``layers/0/kernel``).
    """
    short = name.rsplit("/", 1)[-1]
    if short in ("kernel", "recurrent_kernel"):
        rank = array.ndim - 2
        return np.ascontiguousarray(np.transpose(array, (rank + 1, rank, *range(rank))))
    if short.startswith("peephole_") and array.ndim > 1:
        return np.ascontiguousarray(np.moveaxis(array, -1, 0))
    return np.ascontiguousarray(array)


def torch_to_canonical(name: str, array: np.ndarray) -> np.ndarray:
    """Inverse of :func:`canonical_to_torch`: the module's layout -> the canonical layout."""
    short = name.rsplit("/", 1)[-1]
    if short in ("kernel", "recurrent_kernel"):
        rank = array.ndim - 2
        return np.ascontiguousarray(np.transpose(array, (*range(2, rank + 2), 1, 0)))
    if short.startswith("peephole_") and array.ndim > 1:
        return np.ascontiguousarray(np.moveaxis(array, 0, -1))
    return np.ascontiguousarray(array)


# ---------------------------------------------------------------------------------------------
# The time loop, with a hand-written backward
# ---------------------------------------------------------------------------------------------

class _LoopConfig(NamedTuple):
    """What the time loop needs besides tensors (static per layer and call)."""

    steps: int
    batch: int
    reverse: bool
    activation: str
    recurrent_activation: str
    padding: tuple[int, ...]  # the recurrent conv's symmetric padding
    pre_pad: tuple[int, ...] | None  # F.pad argument for asymmetric recurrent padding, or None
    channels_last: bool
    peephole: str | None
    saving: bool  # whether a backward may follow: grad mode on and some input requires grad
    input_conv: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]  # its stride, padding, dilation


def _input_conv(frames: Tensor, kernel: Tensor, bias: Tensor | None, cfg: _LoopConfig) -> Tensor:
    """``(T*B, C, *S)`` -> ``(T*B, 4F, *S')``: the input convolution plus bias, with ``cfg.input_conv``'s stride,
    padding and dilation (operands from :meth:`ConvLSTMLayer._input_conv_operands`)."""
    stride, padding, dilation = cfg.input_conv
    return _CONV[kernel.ndim - 2](frames, kernel, bias, stride=stride, padding=padding, dilation=dilation)


def _recurrent_conv(h: Tensor, kernel: Tensor, cfg: _LoopConfig) -> Tensor:
    """``(B, F, *S')`` -> ``(B, 4F, *S')``: stride 1, 'same', dilation 1."""
    if cfg.pre_pad is not None:
        h = F.pad(h, cfg.pre_pad)
    return _CONV[kernel.ndim - 2](h, kernel, None, padding=cfg.padding)


def _recurrent_conv_backward(dz: Tensor, h: Tensor, kernel: Tensor, cfg: _LoopConfig, mask: list[bool]) -> Tensor:
    """Gradient of :func:`_recurrent_conv` w.r.t. its input (``mask [True, False]``) or kernel (``[False, True]``),
    given ``dz`` ``(N, 4F, *S')`` and the forward input ``h`` ``(N, F, *S')``."""
    rank = kernel.ndim - 2
    hp = h if cfg.pre_pad is None else F.pad(h, cfg.pre_pad)
    g_in, g_w, _ = torch.ops.aten.convolution_backward(
        dz, hp, kernel, None, (1,) * rank, cfg.padding, (1,) * rank, False, (0,) * rank, 1, [*mask, False]
    )
    if not mask[0]:
        return g_w
    if cfg.pre_pad is None:
        return g_in
    # Undo F.pad: slice the padded margins off every spatial axis (pre_pad lists the last axis first).
    for axis in range(rank):
        lo, hi = cfg.pre_pad[2 * (rank - 1 - axis)], cfg.pre_pad[2 * (rank - 1 - axis) + 1]
        g_in = g_in.narrow(2 + axis, lo, g_in.shape[2 + axis] - lo - hi)
    return g_in


def _peephole_views(peepholes: Sequence[Tensor | None], cfg: _LoopConfig, like: Tensor) -> list[Tensor] | None:
    """Peephole weights shaped to broadcast against ``(B, F, *S')`` in the loop's memory format, or None."""
    if cfg.peephole is None:
        return None
    rank = like.ndim - 2
    if cfg.peephole == "channel":
        return [p.view(p.shape[0], *(1,) * rank) for p in peepholes]  # type: ignore[union-attr]
    fmt = _MEMORY_FORMATS[rank] if cfg.channels_last else torch.contiguous_format
    return [p.unsqueeze(0).contiguous(memory_format=fmt) for p in peepholes]  # type: ignore[union-attr]


def _peephole_grad(product: Tensor, kind: str) -> Tensor:
    """Sum ``(B, F, *S')`` over the axes a peephole is broadcast along: ``(F,)`` or ``(F, *S')``."""
    if kind == "channel":
        return product.sum(dim=(0, *range(2, product.ndim)))
    return product.sum(dim=0)


class _Recurrence(torch.autograd.Function):
    """One layer, input convolution and time loop: frames in, hidden states out.

    Forward inputs: ``frames`` ``(T*B, C, *S)`` (time-major), the input kernel ``(4F, C, *k)`` and bias ``(4F,)`` or
    None (operands as prepared by :meth:`ConvLSTMLayer._input_conv_operands`), the recurrent kernel, ``h0``/``c0``
    ``(B, F, *S')`` or None, the three peepholes or None, a :class:`_LoopConfig`. Returns the hidden states
    ``(T, B, F, *S')`` in processing order (a view of a ``(T+1, ...)`` buffer whose first slot holds h0 as the first
    recurrent conv's input) and ``c_T``.

    Why by hand (measured on a 2-core Zen 5, float32): autograd's backward of the loop runs one small
    recurrent-kernel gradient convolution per step and ~20 separately dispatched element-wise kernels; here the
    kernel gradient is one convolution over all T steps at once (batch T*B), and only the activated gates, cell
    states and hidden states are saved (4F + 2F channels per step; the spec's model counts 7F).

    Memory: one ``(T, B, 4F, *S')`` buffer serves three purposes in turn. The input convolution writes the gate
    pre-activations of all T frames into it; each step overwrites its frame's pre-activations with the activated
    gates (nothing reads them again); the backward overwrites each step's activated gates with their gradients
    once it has read them, and the whole buffer is then the input convolution's output gradient. So no second or
    third buffer of that size exists at any time (unless the graph is retained for a second backward: then the
    backward works on a copy). Measured on a 2-vCPU Intel Xeon, float32, against separate buffers for each role
    (the previous version): live tensors of a training step (``benchmarks.live_memory``) `radar` 133 -> 113 MB,
    `moving_mnist` 336 -> 311 MB; RSS increase over the build (``benchmarks.train_rss``) `radar` ~235 -> ~166 MiB,
    `moving_mnist` ~545 -> ~427 MiB. Fewer large allocations also mean fewer page faults from glibc growing and
    trimming its heap every step: fresh processes, median ms, `small` forward 7.4 -> 5.3 and train 21.8 -> 16.1,
    `radar` forward 96 -> 86 and train 251 -> 245.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        frames: Tensor,
        in_kernel: Tensor,
        bias: Tensor | None,
        kernel: Tensor,
        h0: Tensor | None,
        c0: Tensor | None,
        p_i: Tensor | None,
        p_f: Tensor | None,
        p_o: Tensor | None,
        cfg: _LoopConfig,
    ) -> tuple[Tensor, Tensor]:
        t, b, cl = cfg.steps, cfg.batch, cfg.channels_last
        zx = _input_conv(frames, in_kernel, bias, cfg)
        if cl and not zx.is_contiguous(memory_format=_MEMORY_FORMATS[zx.ndim - 2]):
            zx = zx.contiguous(memory_format=_MEMORY_FORMATS[zx.ndim - 2])
        f4, spatial = zx.shape[1], zx.shape[2:]
        f = f4 // 4
        act, rec = ACTIVATIONS[cfg.activation], RECURRENT_ACTIVATIONS[cfg.recurrent_activation]
        peep = _peephole_views((p_i, p_f, p_o), cfg, zx)
        gates = zx.view(t, b, f4, *spatial)  # frame order; pre-activations, then activated gates (see above)
        hs = _empty_steps(t + 1, b, f, spatial, zx, cl)
        if h0 is not None:
            hs[0].copy_(h0)
        # Cell states of every step in one buffer; without gradients two slots (a step reads only the previous one).
        slots = t if cfg.saving else min(t, 2)
        cells = _empty_steps(slots, b, f, spatial, zx, cl)
        c: Tensor | None = c0
        for k in range(t):
            a = gates[t - 1 - k if cfg.reverse else k]
            if k > 0 or h0 is not None:
                a.add_(_recurrent_conv(hs[k], kernel, cfg))
            ai, af, ag, ao = a.chunk(4, 1)  # same views as _split_channels (no autograd here)
            if peep is None:
                g = act(ag)  # before the dense call below overwrites the g block's pre-activations
                if g is ag:  # the linear activation returns its input
                    g = ag.clone()
                _apply(rec, a, a)  # i, f and o at once
                ag.copy_(g)
            else:
                _apply(act, ag, ag)
                _apply(rec, ai if c is None else torch.addcmul(ai, peep[0], c), ai)
                _apply(rec, af if c is None else torch.addcmul(af, peep[1], c), af)
            c_new = cells[k % slots]
            torch.mul(ai, ag, out=c_new)
            if c is not None:
                c_new.addcmul_(af, c)
            c = c_new
            if peep is not None:
                _apply(rec, torch.addcmul(ao, peep[2], c), ao)
            torch.mul(ao, act(c), out=hs[k + 1])
        assert c is not None
        ctx.cfg = cfg
        ctx.has_h0, ctx.has_c0, ctx.has_bias = h0 is not None, c0 is not None, bias is not None
        ctx.save_for_backward(frames, in_kernel, kernel, hs, c0, p_i, p_f, p_o, gates, cells)
        return hs[1:], c

    @staticmethod
    def backward(ctx: Any, g_seq: Tensor, g_c: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        if torch.is_grad_enabled():
            raise RuntimeError(
                "the ConvLSTM time loop's hand-written backward is not differentiable (create_graph=True, double "
                "backward): call model.use_autograd_loop() first, which runs the loop in plain differentiable ops"
            )
        cfg: _LoopConfig = ctx.cfg
        t, b = cfg.steps, cfg.batch
        frames, in_kernel, kernel, hs, c0, p_i, p_f, p_o, gates, cells = ctx.saved_tensors
        act = ACTIVATIONS[cfg.activation]
        act_grad = ACTIVATION_GRADS[cfg.activation]
        rec_grad = RECURRENT_ACTIVATION_GRADS[cfg.recurrent_activation]
        peep = _peephole_views((p_i, p_f, p_o), cfg, gates[0])
        g_peep: list[Tensor | None] = [None, None, None]
        # Each step's gate gradients overwrite its activated gates (frame order), which nothing reads afterwards.
        dz = gates.clone() if _keeps_graph() else gates
        scratch = torch.empty_like(gates[0]) if peep is None else None
        # Autograd may hand in gradients in the default layout (a loss against a contiguous target, zeros for unused
        # outputs): each step's is added into the loop's layout once (:func:`_step_grad`), so that every element-wise
        # kernel below runs on dense, same-layout operands (mixed layouts cost ~8x on CPU).
        if g_c is not None and g_c.stride() != cells[-1].stride():
            g_c = torch.empty_like(cells[-1]).copy_(g_c)
        dc: Tensor | None = g_c
        dh_rec: Tensor | None = None
        for k in range(t - 1, -1, -1):
            dzk = dz[t - 1 - k if cfg.reverse else k]
            ai, af, ag, ao = dzk.chunk(4, 1)  # the activated gates until overwritten below
            c = cells[k]
            c_prev = cells[k - 1] if k > 0 else c0
            dh = _step_grad(g_seq[k], dh_rec, hs[k + 1])
            tc = act(c)
            dc_step = act_grad(dh * ao, tc)
            dc = dc_step if dc is None else dc + dc_step
            if peep is None:
                # Gradients w.r.t. the activated gates into ``scratch``, then the recurrent activation's derivative
                # over all 4F channels in one dense call (on gate views with F-element inner runs, as in
                # channels-last, each call costs several times a dense one); its g block is then overwritten.
                si, sf, sg, so = scratch.chunk(4, 1)
                torch.mul(dh, tc, out=so)
                torch.mul(dc, ag, out=si)
                if c_prev is None:
                    sf.zero_()
                else:
                    torch.mul(dc, c_prev, out=sf)
                act_grad(dc * ai, ag, out=sg)
                dc = None if c_prev is None else dc * af
                rec_grad(scratch, dzk, out=dzk)
                ag.copy_(sg)
            else:  # the o gate's gradient feeds dc (peephole), which the i and f gates' gradients need
                rec_grad(dh * tc, ao, out=ao)
                dzo = ao
                dc = torch.addcmul(dc, dzo, peep[2])
                g_peep[2] = _accumulate(g_peep[2], _peephole_grad(dzo * c, cfg.peephole))
                dc_ag, dc_ai = dc * ag, dc * ai
                rec_grad(dc_ag, ai, out=ai)
                act_grad(dc_ai, ag, out=ag)
                dzi = ai
                if c_prev is None:
                    af.zero_()
                    dc = None
                else:
                    dc_af = dc * af
                    rec_grad(dc * c_prev, af, out=af)
                    dzf = af
                    dc = torch.addcmul(torch.addcmul(dc_af, dzi, peep[0]), dzf, peep[1])
                    g_peep[0] = _accumulate(g_peep[0], _peephole_grad(dzi * c_prev, cfg.peephole))
                    g_peep[1] = _accumulate(g_peep[1], _peephole_grad(dzf * c_prev, cfg.peephole))
            if k > 0 or ctx.has_h0:
                dh_rec = _recurrent_conv_backward(dzk, hs[k], kernel, cfg, [True, False])
        g_kernel = None
        first = 0 if ctx.has_h0 else 1  # the first processed step without h0 has no recurrent conv
        if ctx.needs_input_grad[3] and t > first:
            n = (t - first) * b
            if cfg.reverse:  # dz is in frame order: pair it with the hidden states in that order
                dz_in = dz[: t - first].reshape(n, *dz.shape[2:])
                h_in = hs[first:t].flip(0).reshape(n, *hs.shape[2:])
            else:
                dz_in = dz[first:t].reshape(n, *dz.shape[2:])
                h_in = hs[first:t].reshape(n, *hs.shape[2:])
            g_kernel = _recurrent_conv_backward(dz_in, h_in, kernel, cfg, [False, True])
        g_h0 = dh_rec if ctx.has_h0 else None
        g_c0 = dc if ctx.has_c0 else None
        g_frames = g_in_kernel = g_bias = None
        mask = list(ctx.needs_input_grad[:3])
        if any(mask):
            rank = kernel.ndim - 2
            stride, padding, dilation = cfg.input_conv
            g_frames, g_in_kernel, g_bias = torch.ops.aten.convolution_backward(
                dz.reshape(t * b, *dz.shape[2:]), frames, in_kernel, [dz.shape[2]] if ctx.has_bias else None,
                stride, padding, dilation, False, (0,) * rank, 1, [mask[0], mask[1], mask[2] and ctx.has_bias],
            )
        return g_frames, g_in_kernel, g_bias, g_kernel, g_h0, g_c0, *g_peep, None


def _recurrence_autograd(
    zx: Tensor,
    kernel: Tensor,
    h0: Tensor | None,
    c0: Tensor | None,
    peepholes: tuple[Tensor | None, Tensor | None, Tensor | None],
    cfg: _LoopConfig,
) -> tuple[Tensor, Tensor]:
    """:class:`_Recurrence`'s forward in plain differentiable ops, for torch.compile: dynamo cannot trace ``out=``
    writes into strided views (it would fall back to eager for the whole model), and inductor derives and fuses the
    backward itself. Returns the hidden states ``(B, T, F, *S')`` in processing order and ``c_T``."""
    t, b, cl = cfg.steps, cfg.batch, cfg.channels_last
    act, rec = ACTIVATIONS[cfg.activation], RECURRENT_ACTIVATIONS[cfg.recurrent_activation]
    peep = _peephole_views(peepholes, cfg, zx)
    # unbind, not zx[k]: the backward of one unbind is one stack, that of T selects T zero-filled buffers summed.
    zxs = zx.view(t, b, *zx.shape[1:]).unbind(0)
    h, c = h0, c0
    hs: list[Tensor] = []
    for k in range(t):
        z = zxs[t - 1 - k if cfg.reverse else k]
        if h is not None:
            z = z + _recurrent_conv(h, kernel, cfg)
        zi, zf, zg, zo = _split_channels(z, 4, cl)
        if peep is not None and c is not None:
            zi, zf = torch.addcmul(zi, peep[0], c), torch.addcmul(zf, peep[1], c)
        c = rec(zi) * act(zg) if c is None else torch.addcmul(rec(zi) * act(zg), rec(zf), c)
        if peep is not None:
            zo = torch.addcmul(zo, peep[2], c)
        h = rec(zo) * act(c)
        hs.append(h)
    assert c is not None
    if not cl:
        return torch.stack(hs, dim=1), c
    # Batch-major, each frame channels-last dense (what the caller's loss and the next layer's input conv read).
    return torch.stack([h.movedim(1, -1) for h in hs], dim=1).movedim(-1, 2), c


def _step_grad(g_out: Tensor, dh_rec: Tensor | None, like: Tensor) -> Tensor:
    """The gradient w.r.t. one step's h: ``g_out`` (from the layer's output) plus ``dh_rec`` (through the next
    step's recurrent conv, or None), dense in ``like``'s layout."""
    if dh_rec is None:
        return g_out if g_out.stride() == like.stride() else torch.empty_like(like).copy_(g_out)
    if dh_rec.stride() == like.stride():
        return dh_rec.add_(g_out)
    return torch.add(dh_rec, g_out, out=torch.empty_like(like))


def _keeps_graph() -> bool:
    """Whether the backward now running keeps its graph (``retain_graph=True``), so that a later backward reads
    the same saved tensors again and the loop's backward must not overwrite them in place.

    Torch has no public API for this; it asks the private ``torch._C._autograd._get_current_graph_task_keep_graph``
    (True outside a backward). Fallback where torch lacks it: True, the safe answer (the backward then copies the
    saved gates before reusing their memory: correct, one copy slower). ``parity_tests/test_private_apis.py``
    fails when the private API is gone, so that an upgrade that drops it is noticed.
    """
    query = getattr(torch._C._autograd, "_get_current_graph_task_keep_graph", None)
    return True if query is None else bool(query())


def _accumulate(total: Tensor | None, value: Tensor) -> Tensor:
    return value if total is None else total + value


# ---------------------------------------------------------------------------------------------
# The module
# ---------------------------------------------------------------------------------------------

class ConvLSTMLayer(nn.Module):
    """One ConvLSTM layer (equations in :mod:`implementations.spec`), channels-first.

    Parameters: ``kernel`` ``(4F, C_in, *k)``, ``recurrent_kernel`` ``(4F, F, *k)``, ``bias``
    ``(4F,)`` or None, ``peephole_{i,f,o}`` ``(F,)`` ('channel') or ``(F, *S')`` ('full') or None.
    Gate blocks along the 4F axis in the order i, f, c, o. A 'full' peephole needs
    ``state_spatial`` (S') at construction.
    """

    def __init__(
        self,
        spec: LayerSpec,
        in_channels: int,
        *,
        state_spatial: Sequence[int] | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.rank = spec.rank
        self.in_channels = int(in_channels)
        self.filters = spec.filters
        factory: dict[str, Any] = {"dtype": dtype, "device": device}
        f4 = 4 * spec.filters
        self.kernel = nn.Parameter(torch.empty(f4, self.in_channels, *spec.kernel_size, **factory))
        self.recurrent_kernel = nn.Parameter(torch.empty(f4, spec.filters, *spec.kernel_size, **factory))
        self.bias: nn.Parameter | None
        if spec.use_bias:
            self.bias = nn.Parameter(torch.empty(f4, **factory))
        else:
            self.register_parameter("bias", None)
        if spec.peephole is None:
            peephole_shape = None
        elif spec.peephole == "channel":
            peephole_shape = (spec.filters,)
        else:
            if state_spatial is None:
                raise SpecError("a 'full' peephole needs the state's spatial shape (state_spatial)")
            if len(state_spatial) != self.rank:
                raise SpecError(f"state_spatial: expected {self.rank} axes, found {tuple(state_spatial)}")
            peephole_shape = (spec.filters, *(int(n) for n in state_spatial))
        for g in PEEPHOLE_GATES:
            if peephole_shape is None:
                self.register_parameter(f"peephole_{g}", None)
            else:
                setattr(self, f"peephole_{g}", nn.Parameter(torch.empty(peephole_shape, **factory)))
        # False: the time loop is :class:`_Recurrence` (hand-written backward, the fast eager path). True: plain
        # differentiable ops (double backward, forward-mode AD, torch.func); torch.compile always takes the latter.
        self.autograd_loop = False
        self._rec_padding, self._rec_pre_pad = _split_padding(spec.recurrent_padding())
        # oneDNN's (and cuDNN's) fast convolutions are channels-last: NCHW tensors are reordered at every call.
        # Measured on a 2-core Zen 5, float32, input conv of 'radar' (40x16x25x25 -> 256, k3): 61 GFLOP/s NCHW
        # vs 162 channels-last; recurrent convs are about equal. Tensors keep their logical NCHW shape.
        self._memory_format = _MEMORY_FORMATS.get(self.rank)
        self._channels_last = self._memory_format is not None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Keras-like defaults: glorot-uniform kernel, orthogonal recurrent kernel, forget bias 1, zero peepholes."""
        with torch.no_grad():
            nn.init.xavier_uniform_(self.kernel)
            nn.init.orthogonal_(self.recurrent_kernel)
            if self.bias is not None:
                self.bias.zero_()
                self.bias[self.filters : 2 * self.filters] = 1.0
            for g in PEEPHOLE_GATES:
                p = getattr(self, f"peephole_{g}")
                if p is not None:
                    p.zero_()

    def extra_repr(self) -> str:
        s = self.spec
        return (
            f"{self.in_channels}, {s.filters}, kernel_size={s.kernel_size}, strides={s.strides}, "
            f"padding={s.padding!r}, dilation_rate={s.dilation_rate}, use_bias={s.use_bias}, "
            f"peephole={s.peephole!r}, activation={s.activation!r}, recurrent_activation={s.recurrent_activation!r}"
        )

    def _input_conv_operands(self, frames: Tensor) -> tuple[Tensor, Tensor, tuple[int, ...]]:
        """``(frames, kernel, padding)`` for the input convolution of ``frames`` ``(N, C_in, *S)`` (stride and
        dilation from the spec, plus the bias): asymmetric padding applied to the frames, the single-channel
        workaround below applied to frames and kernel, both differentiably."""
        padding, pre_pad = _split_padding(self.spec.input_padding(frames.shape[2:]))
        if pre_pad is not None:
            frames = F.pad(frames, pre_pad)
        kernel = self.kernel
        if self.in_channels == 1 and self.rank in (2, 3) and frames.device.type == "cpu":
            # oneDNN has no fast path for a single input channel: on a 2-core Zen 5 the 'small' input conv
            # (32x1x32x32 -> 64, k3) runs at 7 GFLOP/s, and at 42 (useful FLOPs) with a second, zero channel added
            # to the frames and the kernel (5.7 -> 0.9 ms forward, 9.3 -> 3.8 ms forward+backward; 3-D 4.4 -> 1.0 ms).
            # The zero channel only adds zero products (another algorithm runs, so rounding may differ within the
            # float32 tolerances); the gradient of the padded kernel reaches the real one through F.pad.
            extra = (0, 0) * self.rank + (0, 1)
            frames = F.pad(frames, extra)
            kernel = F.pad(kernel, extra)
            if self._memory_format is not None:
                frames = frames.contiguous(memory_format=self._memory_format)
        return frames, kernel, padding

    def forward(self, x: Tensor, state: State | None = None, reverse: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """Run the layer over a sequence.

        ``x``: ``(B, T, C_in, *S)``; ``state``: ``(h0, c0)`` each ``(B, F, *S')`` or None (zeros).
        ``reverse``: process t = T-1 ... 0 (Keras ``go_backwards``); the output sequence is in
        processing order. Returns ``(sequence (B, T, F, *S'), h_T (B, F, *S'), c_T (B, F, *S'))``. In eager mode
        the sequence is a view of a time-major buffer (memory ``(T, B, F, *S')``, channels-last for 2-D/3-D); with
        :attr:`autograd_loop` or under torch.compile it is batch-major (each frame channels-last for 2-D/3-D).
        """
        b, t = x.shape[:2]
        frames, in_kernel, in_padding = self._input_conv_operands(_time_major_frames(x, self._channels_last))
        h0, c0 = (None, None) if state is None else state
        if self._memory_format is not None and c0 is not None:
            h0 = h0.contiguous(memory_format=self._memory_format)
            c0 = c0.contiguous(memory_format=self._memory_format)
        peepholes = (self.peephole_i, self.peephole_f, self.peephole_o)
        inputs = (frames, in_kernel, self.bias, self.recurrent_kernel, h0, c0, *peepholes)
        cfg = _LoopConfig(
            t,
            b,
            bool(reverse),
            self.spec.activation,
            self.spec.recurrent_activation,
            self._rec_padding,
            self._rec_pre_pad,
            self._channels_last,
            self.spec.peephole,
            torch.is_grad_enabled() and any(v is not None and v.requires_grad for v in inputs),
            (tuple(self.spec.strides), tuple(in_padding), tuple(self.spec.dilation_rate)),
        )
        if self.autograd_loop or torch.compiler.is_compiling():
            zx = _input_conv(frames, in_kernel, self.bias, cfg)
            seq, c = _recurrence_autograd(zx, self.recurrent_kernel, h0, c0, peepholes, cfg)
            return seq, seq[:, t - 1], c
        seq, c = _Recurrence.apply(*inputs, cfg)
        return seq.transpose(0, 1), seq[t - 1], c


class ConvLSTM(nn.Module):
    """A stack of :class:`ConvLSTMLayer` built from a :class:`~implementations.spec.StackSpec`.

    ``state_spatials``: per layer, the state's spatial shape S' (needed only by 'full'
    peepholes; entries may be None otherwise). Channels-first throughout. The backward of the time loop is
    hand-written and first-order only: call :meth:`use_autograd_loop` for double backward or ``torch.func``.
    """

    def __init__(
        self,
        spec: StackSpec,
        *,
        state_spatials: Sequence[Sequence[int] | None] | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.spec = spec
        if state_spatials is None:
            state_spatials = [None] * len(spec.layers)
        if len(state_spatials) != len(spec.layers):
            raise SpecError(f"state_spatials: expected {len(spec.layers)} entries, found {len(state_spatials)}")
        self.layers = nn.ModuleList(
            ConvLSTMLayer(
                layer,
                spec.layer_input_channels(i),
                state_spatial=state_spatials[i],
                dtype=dtype,
                device=device,
            )
            for i, layer in enumerate(spec.layers)
        )

    def use_autograd_loop(self, enabled: bool = True) -> ConvLSTM:
        """Run every layer's time loop in plain differentiable ops (``enabled``) or with the hand-written backward
        (the default, faster in eager mode). The former supports double backward (``create_graph=True``, e.g.
        gradient penalties), forward-mode AD and ``torch.func`` transforms. Returns the module."""
        for layer in self.layers:
            layer.autograd_loop = bool(enabled)
        return self

    @classmethod
    def from_weights(
        cls,
        weights: Weights,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> ConvLSTM:
        """A module holding canonical ``weights`` (cast to ``dtype``; default: the weights' dtype)."""
        if dtype is None:
            dtype = getattr(torch, weights.dtype.name)
        module = cls(weights.spec, state_spatials=weights.state_spatials(), dtype=dtype, device=device)
        module.load_canonical(weights.arrays)
        return module

    def canonical_parameters(self) -> dict[str, nn.Parameter]:
        """Canonical key (``layers/{i}/kernel`` ...) -> parameter (in the module's layout)."""
        out: dict[str, nn.Parameter] = {}
        for i, layer in enumerate(self.layers):
            for name in ("kernel", "recurrent_kernel", "bias", *(f"peephole_{g}" for g in PEEPHOLE_GATES)):
                p = getattr(layer, name)
                if p is not None:
                    out[f"layers/{i}/{name}"] = p
        return out

    def load_canonical(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Copy canonical arrays (keys and layouts of :mod:`implementations.weights`) into the parameters."""
        params = self.canonical_parameters()
        missing = sorted(set(params) - set(arrays))
        extra = sorted(set(arrays) - set(params))
        if missing or extra:
            raise SpecError(f"load_canonical: missing keys {missing}, unexpected keys {extra}")
        with torch.no_grad():
            for key, p in params.items():
                value = torch.from_numpy(canonical_to_torch(key, np.asarray(arrays[key])))
                if tuple(value.shape) != tuple(p.shape):
                    raise SpecError(
                        f"{key}: expected shape {tuple(torch_to_canonical(key, np.empty(p.shape)).shape)}, "
                        f"found {tuple(np.shape(arrays[key]))}"
                    )
                p.copy_(value)

    def export_canonical(self) -> dict[str, np.ndarray]:
        """The parameters as canonical NumPy arrays (keys/layouts of :mod:`implementations.weights`)."""
        # .copy(): on CPU .numpy() shares the parameter's memory, and a 1-D array needs no transpose.
        return {
            key: torch_to_canonical(key, p.detach().cpu().numpy().copy())
            for key, p in self.canonical_parameters().items()
        }

    def forward(
        self,
        x: Tensor,
        initial_state: Sequence[State] | None = None,
        go_backwards: bool = False,
    ) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """Run the stack.

        ``x``: ``(B, T, C, *S)``. ``initial_state``: one ``(h0, c0)`` per layer, each
        ``(B, F_i, *S'_i)``, or None for zeros. ``go_backwards``: every layer processes its input
        sequence from the last step to the first and emits its outputs in processing order.
        Returns ``(sequence (B, T, F, *S'), [h_i (B, F_i, *S'_i)], [c_i (B, F_i, *S'_i)])``.
        """
        seq = x
        hs: list[Tensor] = []
        cs: list[Tensor] = []
        for i, layer in enumerate(self.layers):
            state = None if initial_state is None else initial_state[i]
            seq, h, c = layer(seq, state, go_backwards)
            hs.append(h)
            cs.append(c)
        return seq, hs, cs


# ---------------------------------------------------------------------------------------------
# Runner
# ---------------------------------------------------------------------------------------------

def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The torch device for a requested name; None -> ``cuda`` when available, else ``cpu``.

    A bare ``cuda`` resolves to the current CUDA device (``cuda:0`` usually).
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise api.InputError(f"device: expected a torch device such as 'cpu' or 'cuda:0', found {device!r}") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise api.InputError(f"device: {device!r} requested but CUDA is not available to torch")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        elif dev.index >= torch.cuda.device_count():
            raise api.InputError(f"device: {device!r} requested but only {torch.cuda.device_count()} CUDA device(s)")
    return dev


@contextlib.contextmanager
def _conv_precision(device: torch.device, allow_tf32: bool) -> Iterator[None]:
    """On CUDA, run cuDNN convolutions in full fp32 (no TF32) unless ``allow_tf32``; restore after."""
    if device.type != "cuda":
        yield
        return
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        old = conv.fp32_precision
        conv.fp32_precision = "tf32" if allow_tf32 else "ieee"
        try:
            yield
        finally:
            conv.fp32_precision = old
    else:  # torch < 2.9: the legacy switch
        old_flag = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = allow_tf32
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32 = old_flag


class Runner(api.Runner):
    """The :class:`~implementations.api.Runner` contract on PyTorch (see that module's docstring).

    ``dtype``: ``"float32"`` or ``"float64"``, the module's and the results' dtype. ``device``:
    a torch device name; None -> ``"cuda"`` when available, else ``"cpu"``. ``allow_tf32``: let
    cuDNN use TF32 for float32 convolutions on CUDA (off by default: parity needs full fp32).
    ``module`` is the underlying :class:`ConvLSTM`.
    """

    framework = "torch"

    def __init__(
        self,
        weights: Weights,
        *,
        dtype: str = "float32",
        device: str | None = None,
        allow_tf32: bool = False,
    ) -> None:
        super().__init__(weights, dtype=dtype, device=device)
        self._device = resolve_device(device)
        self._torch_dtype: torch.dtype = getattr(torch, self.dtype)
        self.allow_tf32 = bool(allow_tf32)
        self.module = ConvLSTM.from_weights(weights, dtype=self._torch_dtype, device=self._device)

    @property
    def device(self) -> str:
        return str(self._device)

    # -- conversions at the boundary ----------------------------------------------------------

    def _tensor(self, array: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=self.dtype)).to(self._device)

    def _states(self, init: list[tuple[np.ndarray, np.ndarray]] | None) -> list[State] | None:
        """Checked channels-last initial states -> channels-first tensors ``(B, F, *S')``."""
        if init is None:
            return None
        return [(_to_channels_first(self._tensor(h), 1), _to_channels_first(self._tensor(c), 1)) for h, c in init]

    @staticmethod
    def _numpy(t: Tensor, lead: int) -> np.ndarray:
        """Channels-first tensor -> channels-last NumPy array."""
        return _to_channels_last(t.detach(), lead).cpu().numpy()

    # -- the contract --------------------------------------------------------------------------

    def forward(
        self,
        x: np.ndarray,
        *,
        initial_state: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
        return_sequences: bool = True,
        go_backwards: bool = False,
    ) -> api.ForwardResult:
        """``x``: ``(B, T, *S, C)``. Returns outputs ``(B, T, *S', F)`` (``(B, *S', F)`` without
        ``return_sequences``) and final states ``(B, *S'_i, F_i)``, NumPy in the runner dtype."""
        x, states = api.check_input(self.weights, x, self.dtype)
        init = api.check_initial_state(self.weights, initial_state, x.shape[0], states, self.dtype)
        with torch.no_grad(), _conv_precision(self._device, self.allow_tf32):
            xt = _to_channels_first(self._tensor(x), 2)
            seq, hs, cs = self.module(xt, self._states(init), go_backwards)
            out = api.select_output(seq, return_sequences)  # time is axis 1 in either layout
            return api.ForwardResult(
                self._numpy(out, 2 if return_sequences else 1),
                [self._numpy(h, 1) for h in hs],
                [self._numpy(c, 1) for c in cs],
            )

    def value_and_grad(
        self,
        x: np.ndarray,
        probe: api.ProbeLike,
        *,
        initial_state: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
        go_backwards: bool = False,
    ) -> api.GradResult:
        """The probe's loss on the full output sequence and final states, and its gradients.

        ``x``: ``(B, T, *S, C)``. ``probe``: a :class:`~implementations.api.LossProbe` or an array of the
        output sequence's shape (see :func:`~implementations.api.check_probe`). ``grads``: canonical
        weight key -> gradient in the weight's canonical shape, plus ``"input"`` ``(B, T, *S, C)``;
        NumPy in the runner dtype.
        """
        x, states = api.check_input(self.weights, x, self.dtype)
        init = api.check_initial_state(self.weights, initial_state, x.shape[0], states, self.dtype)
        probe = api.check_probe(self.weights.spec, probe, x.shape, self.dtype)
        params = self.module.canonical_parameters()
        with torch.enable_grad(), _conv_precision(self._device, self.allow_tf32):
            xt = self._tensor(x).requires_grad_(True)
            gy = _to_channels_first(self._tensor(probe.gy), 2)
            gh = [_to_channels_first(self._tensor(g), 1) for g in probe.gh]
            gc = [_to_channels_first(self._tensor(g), 1) for g in probe.gc]
            seq, hs, cs = self.module(_to_channels_first(xt, 2), self._states(init), go_backwards)
            loss = torch.sum(seq * gy)
            for h, g in zip(hs, gh):
                loss = loss + torch.sum(h * g)
            for c, g in zip(cs, gc):
                loss = loss + torch.sum(c * g)
            inputs = [*params.values(), xt]
            grads = torch.autograd.grad(loss, inputs, allow_unused=True)
        out: dict[str, np.ndarray] = {}
        for (key, p), g in zip(params.items(), grads):
            # Unused only when no step reads it (the recurrent kernel with T=1 from a zero state).
            g = torch.zeros_like(p) if g is None else g
            out[key] = torch_to_canonical(key, g.detach().cpu().numpy())
        g_in = grads[-1]
        out["input"] = (torch.zeros_like(xt) if g_in is None else g_in).detach().cpu().numpy()
        return api.GradResult(float(loss.detach().cpu()), out)

    def export_weights(self) -> Weights:
        """The module's current weights as canonical :class:`Weights` in the runner dtype."""
        return make_weights(self.weights.spec, self.module.export_canonical(), self.weights.meta_extra)


def versions(device: str | None = None) -> dict[str, str]:
    """Versions and device for reports: torch, CUDA/cuDNN (when built with them) and the device name."""
    out = {"torch": torch.__version__}
    if torch.version.cuda:
        out["cuda"] = str(torch.version.cuda)
    if torch.backends.cudnn.is_available():
        out["cudnn"] = str(torch.backends.cudnn.version())
    try:
        dev = resolve_device(device)
    except api.InputError:
        dev = torch.device("cpu")
    if dev.type == "cuda":
        out["device"] = f"{dev}: {torch.cuda.get_device_name(dev)}"
    else:
        out["device"] = f"{dev}: {platform.processor() or platform.machine()}"
    out["threads"] = str(torch.get_num_threads())
    return out
