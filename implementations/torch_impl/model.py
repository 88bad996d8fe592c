"""The native PyTorch model: :class:`ConvLSTMLayer` and :class:`ConvLSTM` ``nn.Module`` s, channels-first.

Inside, sequences are ``(B, T, C, *S)``, states ``(B, F, *S')``, conv kernels ``(4F, C_in, *k)`` (PyTorch's layout),
'full' peepholes ``(F, *S')``, 'channel' peepholes ``(F,)``. Also here: the element-wise activations (and the
derivatives the hand-written backward of :mod:`.loop` uses), the layout helpers, and the conversion of weight arrays
between the canonical channels-last layout of :mod:`implementations.weights` and the module's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..spec import (
    HARD_SIGMOID_DIVISOR,
    HARD_SIGMOID_KERAS2_SLOPE,
    HARD_SIGMOID_SLOPES,
    PEEPHOLE_GATES,
    LayerSpec,
    SpecError,
    StackSpec,
)
from ..weights import Weights
from .loop import MEMORY_FORMATS, LoopConfig, _Recurrence, _recurrence_autograd, bias_gates, input_conv

Tensor = torch.Tensor
State = tuple[Tensor, Tensor]


# ---------------------------------------------------------------------------------------------
# Element-wise functions: the formulas of spec.NUMPY_ACTIVATIONS / NUMPY_RECURRENT_ACTIVATIONS, each
# ``(x, out=None) -> f(x)``, written into ``out`` when given (the time loop writes in place).
# ---------------------------------------------------------------------------------------------

def _store(value: Tensor, out: Tensor | None) -> Tensor:
    if out is None:
        return value
    return out.copy_(value)


def _linear(x: Tensor, out: Tensor | None = None) -> Tensor:
    return _store(x, out)


def _relu(x: Tensor, out: Tensor | None = None) -> Tensor:
    return _store(torch.relu(x), out)


def _sigmoid(x: Tensor, out: Tensor | None = None) -> Tensor:
    return torch.sigmoid(x) if out is None else torch.sigmoid(x, out=out)


def _hard_sigmoid(x: Tensor, out: Tensor | None = None) -> Tensor:
    # Keras 3: relu6(x + 3) / 6 == clip(x / 6 + 0.5, 0, 1)
    return _store(torch.clamp(x / HARD_SIGMOID_DIVISOR + 0.5, 0.0, 1.0), out)


def _hard_sigmoid_keras2(x: Tensor, out: Tensor | None = None) -> Tensor:
    return _store(torch.clamp(HARD_SIGMOID_KERAS2_SLOPE * x + 0.5, 0.0, 1.0), out)


_IDENTITY_TANH_DTYPES = (torch.float32, torch.float64)
#: The identity is faster than torch's CPU tanh only on strided views whose contiguous runs are shorter than this
#: (a gate block of a channels-last gate tensor with few filters); on longer runs torch's tanh wins.
_IDENTITY_TANH_MAX_RUN = 32
#: ... and only on tensors at least this large: on small ones the extra kernel launch costs more than it saves.
_IDENTITY_TANH_MIN_NUMEL = 16384


def _use_identity_tanh(x: Tensor) -> bool:
    """Whether :func:`_tanh` computes ``tanh(x)`` as ``2 sigmoid(2x) - 1``: on CPU, in float32/float64, eagerly,
    for a tensor that is not dense in any memory format, whose stride-1 axis is shorter than
    ``_IDENTITY_TANH_MAX_RUN`` and that has at least ``_IDENTITY_TANH_MIN_NUMEL`` elements."""
    if x.device.type != "cpu" or x.dtype not in _IDENTITY_TANH_DTYPES or torch.compiler.is_compiling():
        return False
    if x.numel() < _IDENTITY_TANH_MIN_NUMEL or x.is_contiguous():
        return False
    fmt = MEMORY_FORMATS.get(x.ndim - 2)
    if fmt is not None and x.is_contiguous(memory_format=fmt):
        return False
    run = next((size for size, stride in zip(x.shape, x.stride()) if stride == 1), 1)
    return run < _IDENTITY_TANH_MAX_RUN


def _tanh(x: Tensor, out: Tensor | None = None) -> Tensor:
    """``tanh(x)``; for large strided views with short contiguous runs (:func:`_use_identity_tanh`) computed as
    ``2 sigmoid(2x) - 1``, because torch's CPU tanh kernel is slow on such views (a gate block of a channels-last
    gate tensor: runs of F contiguous elements, then a jump of 4F) while its sigmoid is not.

    The identity adds <= 2e-7 absolute error in float32, well within the forward tolerance. Half-precision dtypes
    (where ``sigmoid(2x)`` rounded near 0.5 would lose tanh's small values), GPUs and torch.compile (which generates
    its own vectorised tanh) always use torch.tanh.
    """
    if not _use_identity_tanh(x):
        return torch.tanh(x) if out is None else torch.tanh(x, out=out)
    s = torch.sigmoid(x * 2.0)
    return torch.add(s.new_full((), -1.0), s, alpha=2.0, out=out)


ACTIVATIONS: dict[str, Callable[..., Tensor]] = {"tanh": _tanh, "relu": _relu, "linear": _linear}
RECURRENT_ACTIVATIONS: dict[str, Callable[..., Tensor]] = {
    "sigmoid": _sigmoid,
    "hard_sigmoid": _hard_sigmoid,
    "hard_sigmoid_keras2": _hard_sigmoid_keras2,
}


# Derivatives as functions of the output ``y = f(x)``: ``(grad, y, out=None) -> grad * f'(x)``; ``out``, when given,
# receives the result (a view into the gate-gradient buffer of the hand-written backward).

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


ACTIVATION_GRADS: dict[str, Callable[..., Tensor]] = {"tanh": _tanh_grad, "relu": _relu_grad, "linear": _linear_grad}
RECURRENT_ACTIVATION_GRADS: dict[str, Callable[..., Tensor]] = {
    "sigmoid": _sigmoid_grad,
    "hard_sigmoid": _clip_grad(HARD_SIGMOID_SLOPES["hard_sigmoid"]),
    "hard_sigmoid_keras2": _clip_grad(HARD_SIGMOID_SLOPES["hard_sigmoid_keras2"]),
}


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


def _time_major_frames(x: Tensor, channels_last: bool) -> Tensor:
    """``(B, T, C, *S)`` -> ``(T*B, C, *S)``, frames time-major (a view when ``x`` is a time-major buffer from
    :func:`.loop.empty_steps`, one copy otherwise)."""
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
# The modules
# ---------------------------------------------------------------------------------------------

class ConvLSTMLayer(nn.Module):
    """One ConvLSTM layer (equations in :mod:`implementations.spec`), channels-first.

    Parameters: ``kernel`` ``(4F, C_in, *k)``, ``recurrent_kernel`` ``(4F, F, *k)``, ``bias``
    ``(4F,)`` or None, ``peephole_{i,f,o}`` ``(F,)`` ('channel') or ``(F, *S')`` ('full') or None.
    Gate blocks along the 4F axis in the order i, f, c, o. A 'full' peephole needs
    ``state_spatial`` (S') at construction. With ``in_channels == 0`` (the first layer of a ``no_input`` stack,
    :attr:`no_input`) the layer reads no input: ``kernel`` is empty ``(4F, 0, *k)`` and the gates are
    ``conv(h_{t-1}, R) + b``.
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
        self.no_input = self.in_channels == 0
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
        peephole_shape = self._peephole_shape(state_spatial)
        for g in PEEPHOLE_GATES:
            if peephole_shape is None:
                self.register_parameter(f"peephole_{g}", None)
            else:
                setattr(self, f"peephole_{g}", nn.Parameter(torch.empty(peephole_shape, **factory)))
        # False: the time loop is :class:`.loop._Recurrence` (hand-written backward, the fast eager path). True: plain
        # differentiable ops (double backward, forward-mode AD, torch.func); torch.compile always takes the latter.
        self.autograd_loop = False
        self._rec_padding, self._rec_pre_pad = _split_padding(spec.recurrent_padding())
        # Channels-last for 2-D/3-D (:data:`.loop.MEMORY_FORMATS`); tensors keep their logical channels-first shape.
        self._memory_format = MEMORY_FORMATS.get(self.rank)
        self._channels_last = self._memory_format is not None
        self.reset_parameters()

    def _peephole_shape(self, state_spatial: Sequence[int] | None) -> tuple[int, ...] | None:
        """The peepholes' shape: None without peepholes, ``(F,)`` for 'channel', ``(F, *S')`` for 'full'."""
        spec = self.spec
        if spec.peephole is None:
            return None
        if spec.peephole == "channel":
            return (spec.filters,)
        if state_spatial is None:
            raise SpecError("a 'full' peephole needs the state's spatial shape (state_spatial)")
        if len(state_spatial) != self.rank:
            raise SpecError(f"state_spatial: expected {self.rank} axes, found {tuple(state_spatial)}")
        return (spec.filters, *(int(n) for n in state_spatial))

    def reset_parameters(self) -> None:
        """Keras-like defaults: glorot-uniform kernel, orthogonal recurrent kernel, forget bias 1, zero peepholes."""
        with torch.no_grad():
            if not self.no_input:  # an empty kernel has nothing to initialise
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
        dilation from the spec, plus the bias): asymmetric padding applied to the frames, and on the CPU a single
        input channel padded to two, both differentiably."""
        padding, pre_pad = _split_padding(self.spec.input_padding(frames.shape[2:]))
        if pre_pad is not None:
            frames = F.pad(frames, pre_pad)
        kernel = self.kernel
        if self.in_channels == 1 and self.rank in (2, 3) and frames.device.type == "cpu":
            # oneDNN has no fast path for a single input channel, hence a zero channel on frames and kernel: it adds
            # only zero products (another algorithm runs, so rounding may differ within the float32 tolerances); the
            # padded kernel's gradient reaches the real one through F.pad.
            extra = (0, 0) * self.rank + (0, 1)
            frames = F.pad(frames, extra)
            kernel = F.pad(kernel, extra)
            if self._memory_format is not None:
                frames = frames.contiguous(memory_format=self._memory_format)
        return frames, kernel, padding

    def _no_input_operands(self, x: Tensor) -> tuple[Tensor, Tensor, tuple[int, ...]]:
        """The operands that stand in for :meth:`_input_conv_operands` in a layer with no input: an empty
        ``(T*B, 0, *S')`` tensor that carries the shape :func:`.loop.bias_gates` fills, the empty kernel, no
        padding. ``x`` must be an empty ``(B, T, 0, *S)`` sequence: it gives only the number of steps and sizes."""
        b, t = x.shape[:2]
        if x.ndim != self.rank + 3 or x.shape[2] != 0:
            raise SpecError(
                f"a layer with no input expects an empty sequence (B, T, 0, *S) for its shape, found {tuple(x.shape)}"
            )
        spatial = self.spec.output_spatial(tuple(x.shape[3:]))
        return x.new_empty((t * b, 0, *spatial)), self.kernel, (0,) * self.rank

    def forward(self, x: Tensor, state: State | None = None, reverse: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """Run the layer over a sequence.

        ``x``: ``(B, T, C_in, *S)``; ``state``: ``(h0, c0)`` each ``(B, F, *S')`` or None (zeros).
        ``reverse``: process t = T-1 ... 0 (Keras ``go_backwards``); the output sequence is in
        processing order. Returns ``(sequence (B, T, F, *S'), h_T (B, F, *S'), c_T (B, F, *S'))``. A layer with no
        input (:attr:`no_input`) takes an empty ``x`` ``(B, T, 0, *S)``: its T steps start from the bias. In eager mode
        the sequence is a view of a time-major buffer (memory ``(T, B, F, *S')``, channels-last for 2-D/3-D); with
        :attr:`autograd_loop` or under torch.compile it is batch-major (each frame channels-last for 2-D/3-D).
        """
        b, t = x.shape[:2]
        if self.no_input:
            frames, in_kernel, in_padding = self._no_input_operands(x)
        else:
            frames, in_kernel, in_padding = self._input_conv_operands(_time_major_frames(x, self._channels_last))
        h0, c0 = (None, None) if state is None else state
        if self._memory_format is not None and c0 is not None:
            h0 = h0.contiguous(memory_format=self._memory_format)
            c0 = c0.contiguous(memory_format=self._memory_format)
        peepholes = (self.peephole_i, self.peephole_f, self.peephole_o)
        inputs = (frames, in_kernel, self.bias, self.recurrent_kernel, h0, c0, *peepholes)
        spec = self.spec
        cfg = LoopConfig(
            steps=t,
            batch=b,
            reverse=bool(reverse),
            activation=ACTIVATIONS[spec.activation],
            recurrent_activation=RECURRENT_ACTIVATIONS[spec.recurrent_activation],
            activation_grad=ACTIVATION_GRADS[spec.activation],
            recurrent_activation_grad=RECURRENT_ACTIVATION_GRADS[spec.recurrent_activation],
            padding=self._rec_padding,
            pre_pad=self._rec_pre_pad,
            channels_last=self._channels_last,
            peephole=spec.peephole,
            saving=torch.is_grad_enabled() and any(v is not None and v.requires_grad for v in inputs),
            input_conv=(tuple(spec.strides), tuple(in_padding), tuple(spec.dilation_rate)),
            no_input=self.no_input,
        )
        if self.autograd_loop or torch.compiler.is_compiling():
            zx = (bias_gates if self.no_input else input_conv)(frames, in_kernel, self.bias, cfg)
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
        A ``no_input`` stack takes an empty ``x`` ``(B, T, 0, *S)``, which gives only T and the sizes.
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
