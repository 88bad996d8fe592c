"""The time loop of one layer, fast in eager mode, and its hand-written gradient.

Each layer runs its input convolution over all T frames as one call on ``(T*B, C, *S)`` before the loop, so only the
recurrent convolution and the gate maths run per step; the first step from a zero state skips the recurrent
convolution and the peephole terms. A first layer that reads no input (a forecaster's, ``LoopConfig.no_input``)
starts each step's gates from its broadcast bias (:func:`bias_gates`) instead. Input convolution and loop are one
``torch.autograd.Function`` (:class:`_Recurrence`) whose backward is written by hand; :func:`_recurrence_autograd` is
the same loop in plain differentiable ops, for torch.compile, double backward and ``torch.func``.

For 2-D and 3-D frames every tensor of the loop is in channels-last memory format (``torch.channels_last``; logical
shapes stay channels-first), because element-wise kernels on operands of mixed memory layouts are several times
slower than on same-layout ones. Hidden states are written into one time-major buffer in that memory order, so the
output sequences of 2-D/3-D layers are not contiguous in the default format (use ``.reshape``, not ``.view``).

This module knows no activation by name: the layer (:mod:`.model`) puts the element-wise functions and their
derivatives into the :class:`LoopConfig`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

#: ``(x, out=None) -> f(x)``, written into ``out`` when given.
Activation = Callable[..., Tensor]
#: ``(grad, y, out=None) -> grad * f'(x)`` as a function of the output ``y = f(x)``, written into ``out`` when given.
ActivationGrad = Callable[..., Tensor]

CONV: dict[int, Callable[..., Tensor]] = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
#: Memory format of the loop's tensors per spatial rank: channels-last, the layout of oneDNN's and cuDNN's fast
#: convolutions (a channels-first operand is reordered at every call). 1-D keeps the default format.
MEMORY_FORMATS: dict[int, torch.memory_format] = {2: torch.channels_last, 3: torch.channels_last_3d}


class LoopConfig(NamedTuple):
    """What the time loop needs besides tensors (static per layer and call)."""

    steps: int
    batch: int
    reverse: bool
    activation: Activation
    recurrent_activation: Activation
    activation_grad: ActivationGrad
    recurrent_activation_grad: ActivationGrad
    padding: tuple[int, ...]  # the recurrent conv's symmetric padding
    pre_pad: tuple[int, ...] | None  # F.pad argument for asymmetric recurrent padding, or None
    channels_last: bool
    peephole: str | None
    saving: bool  # whether a backward may follow: grad mode on and some input requires grad
    input_conv: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]  # its stride, padding, dilation
    no_input: bool = False  # a first layer that reads no input: gates start from the bias (:func:`bias_gates`)


# ---------------------------------------------------------------------------------------------
# Buffers and views in the loop's memory order
# ---------------------------------------------------------------------------------------------

def empty_steps(n: int, b: int, c: int, spatial: Sequence[int], like: Tensor, channels_last: bool) -> Tensor:
    """An uninitialised ``(n, B, C, *S)`` buffer; channels-last: memory ``(n, B, *S, C)``, so every ``buf[k]`` and
    every ``buf[j:k].reshape(-1, C, *S)`` is a dense channels-last batch."""
    if not channels_last:
        return like.new_empty((n, b, c, *spatial))
    return like.new_empty((n, b, *spatial, c)).movedim(-1, 2)


def _split_channels(t: Tensor, n: int, channels_last: bool) -> tuple[Tensor, ...]:
    """``(B, n*F, *S)`` -> n tensors ``(B, F, *S)`` (views), for the autograd loop: the views are those of
    ``t.chunk(n, 1)``, but autograd's backward of these view ops (an unbind's is a stack) writes the gradient in the
    channels-last order, which keeps it dense in the loop's layout. Without autograd (:class:`_Recurrence`)
    ``chunk`` gives the same views in one op."""
    if not channels_last:
        return t.chunk(n, dim=1)
    blocks = t.movedim(1, -1).unflatten(-1, (n, -1)).unbind(-2)  # each (B, *S, F)
    return tuple(block.movedim(-1, 1) for block in blocks)


# ---------------------------------------------------------------------------------------------
# Convolutions and peepholes
# ---------------------------------------------------------------------------------------------

def input_conv(frames: Tensor, kernel: Tensor, bias: Tensor | None, cfg: LoopConfig) -> Tensor:
    """``(T*B, C, *S)`` -> ``(T*B, 4F, *S')``: the input convolution plus bias, with ``cfg.input_conv``'s stride,
    padding and dilation (operands from :meth:`.model.ConvLSTMLayer._input_conv_operands`)."""
    stride, padding, dilation = cfg.input_conv
    return CONV[kernel.ndim - 2](frames, kernel, bias, stride=stride, padding=padding, dilation=dilation)


def bias_gates(frames: Tensor, kernel: Tensor, bias: Tensor | None, cfg: LoopConfig) -> Tensor:
    """``(T*B, 0, *S')`` -> ``(T*B, 4F, *S')``: what replaces :func:`input_conv` in a layer with no input
    (``cfg.no_input``): the bias broadcast over every step and position, or zeros. ``frames`` is an empty tensor that
    carries only the shape; ``kernel`` the empty input kernel ``(4F, 0, *k)``. The result has its own memory in the
    loop's format, because :class:`_Recurrence` writes into it; the copy is differentiable (the autograd loop)."""
    n, spatial, f4 = frames.shape[0], frames.shape[2:], kernel.shape[0]
    fmt = MEMORY_FORMATS[len(spatial)] if cfg.channels_last else torch.contiguous_format
    out = torch.empty((n, f4, *spatial), dtype=kernel.dtype, device=kernel.device, memory_format=fmt)
    if bias is None:
        return out.zero_()
    return out.copy_(bias.view(1, f4, *(1,) * len(spatial)).expand(out.shape))


def _recurrent_conv(h: Tensor, kernel: Tensor, cfg: LoopConfig) -> Tensor:
    """``(B, F, *S')`` -> ``(B, 4F, *S')``: stride 1, 'same', dilation 1."""
    if cfg.pre_pad is not None:
        h = F.pad(h, cfg.pre_pad)
    return CONV[kernel.ndim - 2](h, kernel, None, padding=cfg.padding)


def _recurrent_conv_backward(dz: Tensor, h: Tensor, kernel: Tensor, cfg: LoopConfig, mask: list[bool]) -> Tensor:
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


def _peephole_views(peepholes: Sequence[Tensor | None], cfg: LoopConfig, like: Tensor) -> list[Tensor] | None:
    """Peephole weights shaped to broadcast against ``(B, F, *S')`` in the loop's memory format, or None."""
    if cfg.peephole is None:
        return None
    rank = like.ndim - 2
    if cfg.peephole == "channel":
        return [p.view(p.shape[0], *(1,) * rank) for p in peepholes]  # type: ignore[union-attr]
    fmt = MEMORY_FORMATS[rank] if cfg.channels_last else torch.contiguous_format
    return [p.unsqueeze(0).contiguous(memory_format=fmt) for p in peepholes]  # type: ignore[union-attr]


def _peephole_grad(product: Tensor, kind: str) -> Tensor:
    """Sum ``(B, F, *S')`` over the axes a peephole is broadcast along: ``(F,)`` or ``(F, *S')``."""
    if kind == "channel":
        return product.sum(dim=(0, *range(2, product.ndim)))
    return product.sum(dim=0)


def _accumulate(total: Tensor | None, value: Tensor) -> Tensor:
    return value if total is None else total + value


# ---------------------------------------------------------------------------------------------
# The loop with a hand-written backward (eager mode)
# ---------------------------------------------------------------------------------------------

class _Recurrence(torch.autograd.Function):
    """One layer, input convolution and time loop: frames in, hidden states out.

    Forward inputs: ``frames`` ``(T*B, C, *S)`` (time-major), the input kernel ``(4F, C, *k)`` and bias ``(4F,)`` or
    None (operands as prepared by :meth:`.model.ConvLSTMLayer._input_conv_operands`), the recurrent kernel,
    ``h0``/``c0`` ``(B, F, *S')`` or None, the three peepholes or None, a :class:`LoopConfig`. Returns the hidden
    states ``(T, B, F, *S')`` in processing order (a view of a ``(T+1, ...)`` buffer whose first slot holds h0 as the
    first recurrent conv's input) and ``c_T``. With ``cfg.no_input`` the frames ``(T*B, 0, *S')`` and the input kernel
    are empty and :func:`bias_gates` replaces the input convolution.

    Why by hand: autograd's backward of the loop would run one small recurrent-kernel gradient convolution per step
    and many separately dispatched element-wise kernels; here the kernel gradient is one convolution over all T steps
    at once (batch T*B), and only the activated gates, cell states and hidden states are saved (6F channels per step).

    Memory: one ``(T, B, 4F, *S')`` buffer serves three purposes in turn, so that no second buffer of that size
    exists: the input convolution writes the gate pre-activations of all T frames into it; each step overwrites its
    frame's pre-activations with the activated gates; the backward overwrites each step's activated gates with their
    gradients once it has read them, and the whole buffer is then the input convolution's output gradient. If the
    graph is retained for a second backward (:func:`_keeps_graph`), the backward works on a copy.
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
        cfg: LoopConfig,
    ) -> tuple[Tensor, Tensor]:
        t, b, cl = cfg.steps, cfg.batch, cfg.channels_last
        zx = (bias_gates if cfg.no_input else input_conv)(frames, in_kernel, bias, cfg)
        if cl and not zx.is_contiguous(memory_format=MEMORY_FORMATS[zx.ndim - 2]):
            zx = zx.contiguous(memory_format=MEMORY_FORMATS[zx.ndim - 2])
        f4, spatial = zx.shape[1], zx.shape[2:]
        f = f4 // 4
        act, rec = cfg.activation, cfg.recurrent_activation
        peep = _peephole_views((p_i, p_f, p_o), cfg, zx)
        gates = zx.view(t, b, f4, *spatial)  # frame order; pre-activations, then activated gates (see above)
        hs = empty_steps(t + 1, b, f, spatial, zx, cl)
        if h0 is not None:
            hs[0].copy_(h0)
        # Cell states of every step in one buffer; without gradients two slots (a step reads only the previous one).
        slots = t if cfg.saving else min(t, 2)
        cells = empty_steps(slots, b, f, spatial, zx, cl)
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
                rec(a, out=a)  # i, f and o at once
                ag.copy_(g)
            else:
                act(ag, out=ag)
                rec(ai if c is None else torch.addcmul(ai, peep[0], c), out=ai)
                rec(af if c is None else torch.addcmul(af, peep[1], c), out=af)
            c_new = cells[k % slots]
            torch.mul(ai, ag, out=c_new)
            if c is not None:
                c_new.addcmul_(af, c)
            c = c_new
            if peep is not None:
                rec(torch.addcmul(ao, peep[2], c), out=ao)
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
        cfg: LoopConfig = ctx.cfg
        frames, in_kernel, kernel, hs, c0, p_i, p_f, p_o, gates, cells = ctx.saved_tensors
        peep = _peephole_views((p_i, p_f, p_o), cfg, gates[0])
        # Each step's gate gradients overwrite its activated gates (frame order), which nothing reads afterwards.
        dz = gates.clone() if _keeps_graph() else gates
        dh_rec, dc, g_peep = _backward_steps(cfg, dz, g_seq, g_c, hs, cells, c0, kernel, peep, ctx.has_h0)
        g_kernel = None
        if ctx.needs_input_grad[3]:
            g_kernel = _recurrent_kernel_grad(cfg, dz, hs, kernel, ctx.has_h0)
        g_h0 = dh_rec if ctx.has_h0 else None
        g_c0 = dc if ctx.has_c0 else None
        g_frames = g_in_kernel = g_bias = None
        mask = list(ctx.needs_input_grad[:3])
        if cfg.no_input:  # the gates' input term is the bias alone: its gradient sums dz; the empty ones are empty
            g_frames = torch.zeros_like(frames) if mask[0] else None
            g_in_kernel = torch.zeros_like(in_kernel) if mask[1] else None
            if mask[2] and ctx.has_bias:
                g_bias = dz.sum(dim=(0, 1, *range(3, dz.ndim)))
        elif any(mask):
            t, b = cfg.steps, cfg.batch
            rank = kernel.ndim - 2
            stride, padding, dilation = cfg.input_conv
            g_frames, g_in_kernel, g_bias = torch.ops.aten.convolution_backward(
                dz.reshape(t * b, *dz.shape[2:]), frames, in_kernel, [dz.shape[2]] if ctx.has_bias else None,
                stride, padding, dilation, False, (0,) * rank, 1, [mask[0], mask[1], mask[2] and ctx.has_bias],
            )
        return g_frames, g_in_kernel, g_bias, g_kernel, g_h0, g_c0, *g_peep, None


def _backward_steps(
    cfg: LoopConfig,
    dz: Tensor,
    g_seq: Tensor,
    g_c: Tensor | None,
    hs: Tensor,
    cells: Tensor,
    c0: Tensor | None,
    kernel: Tensor,
    peep: list[Tensor] | None,
    has_h0: bool,
) -> tuple[Tensor | None, Tensor | None, list[Tensor | None]]:
    """The backward through the steps, last to first: each step's gate pre-activation gradients overwrite its
    activated gates in ``dz`` (frame order). Returns the gradients w.r.t. h0 (None without it) and c0 (None when the
    first step starts from zeros), and the three peepholes' (None without peepholes)."""
    t = cfg.steps
    act, act_grad, rec_grad = cfg.activation, cfg.activation_grad, cfg.recurrent_activation_grad
    g_peep: list[Tensor | None] = [None, None, None]
    scratch = torch.empty_like(dz[0]) if peep is None else None
    # Autograd may hand in gradients in the default layout (a loss against a contiguous target, zeros for unused
    # outputs): each is brought into the loop's layout once (:func:`_step_grad`), so that every element-wise kernel
    # below runs on dense, same-layout operands.
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
        if scratch is not None:
            # Gradients w.r.t. the activated gates into ``scratch``, then the recurrent activation's derivative over
            # all 4F channels in one dense call (a call per gate view, with F-element inner runs in channels-last,
            # costs several times more); its g block is then overwritten.
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
            assert peep is not None and cfg.peephole is not None
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
        if k > 0 or has_h0:
            dh_rec = _recurrent_conv_backward(dzk, hs[k], kernel, cfg, [True, False])
    return dh_rec, dc, g_peep


def _recurrent_kernel_grad(cfg: LoopConfig, dz: Tensor, hs: Tensor, kernel: Tensor, has_h0: bool) -> Tensor | None:
    """The recurrent kernel's gradient as one convolution over every step that ran the recurrent conv (batch
    ``(steps) * B``), pairing each step's gate gradients in ``dz`` (frame order) with the hidden state it read."""
    t, b = cfg.steps, cfg.batch
    first = 0 if has_h0 else 1  # the first processed step without h0 has no recurrent conv
    if t <= first:
        return None
    n = (t - first) * b
    if cfg.reverse:  # dz is in frame order: pair it with the hidden states in that order
        dz_in = dz[: t - first].reshape(n, *dz.shape[2:])
        h_in = hs[first:t].flip(0).reshape(n, *hs.shape[2:])
    else:
        dz_in = dz[first:t].reshape(n, *dz.shape[2:])
        h_in = hs[first:t].reshape(n, *hs.shape[2:])
    return _recurrent_conv_backward(dz_in, h_in, kernel, cfg, [False, True])


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


# ---------------------------------------------------------------------------------------------
# The same loop in differentiable ops (torch.compile, double backward, torch.func)
# ---------------------------------------------------------------------------------------------

def _recurrence_autograd(
    zx: Tensor,
    kernel: Tensor,
    h0: Tensor | None,
    c0: Tensor | None,
    peepholes: tuple[Tensor | None, Tensor | None, Tensor | None],
    cfg: LoopConfig,
) -> tuple[Tensor, Tensor]:
    """:class:`_Recurrence`'s forward in plain differentiable ops, for torch.compile: dynamo cannot trace ``out=``
    writes into strided views (it would fall back to eager for the whole model), and inductor derives and fuses the
    backward itself. Returns the hidden states ``(B, T, F, *S')`` in processing order and ``c_T``."""
    t, b, cl = cfg.steps, cfg.batch, cfg.channels_last
    act, rec = cfg.activation, cfg.recurrent_activation
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
