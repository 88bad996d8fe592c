"""PyTorch implementation of the ConvLSTM stack (:mod:`implementations.spec`).

Inside, everything is channels-first: sequences ``(B, T, C, *S)``, states ``(B, F, *S')``, conv
kernels ``(4F, C_in, *k)`` (PyTorch's layout), 'full' peepholes ``(F, *S')``, 'channel' peepholes
``(F,)``. The :class:`Runner` converts at the boundary from and to the canonical channels-last
NumPy layout of :mod:`implementations.api` and :mod:`implementations.weights`.

Speed: each layer runs its input convolution over all T frames as one call on ``(B*T, C, *S)``
before the time loop, so only the recurrent convolution and the gate maths run per step; the
first step from a zero state skips the recurrent convolution and the peephole terms. For 2-D and 3-D
frames the tensors live in channels-last memory format (``torch.channels_last``; logical shapes stay
channels-first), which oneDNN and cuDNN convolve without a reorder at each call; gates and time steps are
split and stacked in that memory order, so the output sequences of 2-D/3-D layers are not contiguous in
the default format (use ``.reshape``, not ``.view``).

This is the only module of the package that imports torch.
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import api
from .spec import PEEPHOLE_GATES, LayerSpec, SpecError, StackSpec
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
    return torch.clamp(x / 6.0 + 0.5, 0.0, 1.0)


def _hard_sigmoid_keras2(x: Tensor) -> Tensor:
    return torch.clamp(0.2 * x + 0.5, 0.0, 1.0)


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "linear": _linear,
}
RECURRENT_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "sigmoid": torch.sigmoid,
    "hard_sigmoid": _hard_sigmoid,
    "hard_sigmoid_keras2": _hard_sigmoid_keras2,
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


# Channels-last tensors keep their logical channels-first shape; these helpers split and stack them along the
# channel or time axis through the memory order, so that autograd's backward of the split (a stack) writes
# channels-last memory directly. chunk/unbind/stack on the logical axes made the backward assemble
# channels-first tensors that every conv then copied back, and mixed-layout element-wise ops run up to 20x
# slower (a (8, 64, 25, 25) multiply: 0.05 ms vs 0.96 ms).

def _split_channels(t: Tensor, n: int, channels_last: bool) -> tuple[Tensor, ...]:
    """``(B, n*F, *S)`` -> n tensors ``(B, F, *S)`` (views)."""
    if not channels_last:
        return t.chunk(n, dim=1)
    blocks = t.movedim(1, -1).unflatten(-1, (n, -1)).unbind(-2)  # each (B, *S, F)
    return tuple(block.movedim(-1, 1) for block in blocks)


def _unbind_time(zx: Tensor, b: int, t: int, channels_last: bool) -> tuple[Tensor, ...]:
    """``(B*T, C, *S)`` (batch-major frames) -> T tensors ``(B, C, *S)`` (views)."""
    if not channels_last:
        return zx.view(b, t, *zx.shape[1:]).unbind(1)
    phys = zx.movedim(1, -1)  # (B*T, *S, C)
    return tuple(step.movedim(-1, 1) for step in phys.reshape(b, t, *phys.shape[1:]).unbind(1))


def _stack_time(steps: Sequence[Tensor], channels_last: bool) -> Tensor:
    """T tensors ``(B, F, *S)`` -> ``(B, T, F, *S)``; channels-last: every frame stays channels-last dense."""
    if not channels_last:
        return torch.stack(list(steps), dim=1)
    return torch.stack([h.movedim(1, -1) for h in steps], dim=1).movedim(-1, 2)


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
        self._conv = _CONV[self.rank]
        self._act = ACTIVATIONS[spec.activation]
        self._rec = RECURRENT_ACTIVATIONS[spec.recurrent_activation]
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

    def input_conv(self, frames: Tensor) -> Tensor:
        """Input convolution plus bias of a batch of frames: ``(N, C_in, *S)`` -> ``(N, 4F, *S')``."""
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
        return self._conv(
            frames,
            kernel,
            self.bias,
            stride=self.spec.strides,
            padding=padding,
            dilation=self.spec.dilation_rate,
        )

    def recurrent_conv(self, h: Tensor) -> Tensor:
        """Recurrent convolution (stride 1, 'same', dilation 1): ``(B, F, *S')`` -> ``(B, 4F, *S')``."""
        if self._rec_pre_pad is not None:
            h = F.pad(h, self._rec_pre_pad)
        return self._conv(h, self.recurrent_kernel, None, padding=self._rec_padding)

    def _peepholes(self) -> tuple[Tensor, Tensor, Tensor] | None:
        """Peephole weights shaped to broadcast against ``(B, F, *S')``, or None."""
        if self.peephole_i is None:
            return None
        if self.spec.peephole == "channel":
            shape = (self.filters,) + (1,) * self.rank
            return self.peephole_i.view(shape), self.peephole_f.view(shape), self.peephole_o.view(shape)
        return self.peephole_i, self.peephole_f, self.peephole_o

    def step(
        self,
        zx: Tensor,
        h: Tensor | None,
        c: Tensor | None,
        peepholes: tuple[Tensor, Tensor, Tensor] | None,
    ) -> State:
        """One time step. ``zx``: the step's input-conv pre-activation with bias ``(B, 4F, *S')``.

        ``h``, ``c``: previous state ``(B, F, *S')``, or None for a zero state (both or neither).
        ``peepholes``: from :meth:`_peepholes`. Returns ``(h_t, c_t)``, each ``(B, F, *S')``.
        """
        act, rec = self._act, self._rec
        z = zx if h is None else zx + self.recurrent_conv(h)
        zi, zf, zc, zo = _split_channels(z, 4, self._channels_last)
        if peepholes is not None and c is not None:
            zi = zi + peepholes[0] * c
            zf = zf + peepholes[1] * c
        i_t = rec(zi)
        g_t = act(zc)
        if c is None:
            c_t = i_t * g_t
        else:
            c_t = rec(zf) * c + i_t * g_t
        if peepholes is not None:
            zo = zo + peepholes[2] * c_t
        h_t = rec(zo) * act(c_t)
        return h_t, c_t

    def forward(self, x: Tensor, state: State | None = None, reverse: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """Run the layer over a sequence.

        ``x``: ``(B, T, C_in, *S)``; ``state``: ``(h0, c0)`` each ``(B, F, *S')`` or None (zeros).
        ``reverse``: process t = T-1 ... 0 (Keras ``go_backwards``); the output sequence is in
        processing order. Returns ``(sequence (B, T, F, *S'), h_T (B, F, *S'), c_T (B, F, *S'))``.
        """
        b, t = x.shape[:2]
        frames = x.reshape(b * t, *x.shape[2:])
        h, c = (None, None) if state is None else state
        if self._memory_format is not None:
            frames = frames.contiguous(memory_format=self._memory_format)
            if h is not None:
                h = h.contiguous(memory_format=self._memory_format)
        zx = self.input_conv(frames)
        # unbind, not zx[:, s]: the backward of T selects is T zero-filled (B, T, 4F, *S') tensors summed,
        # the backward of unbind one stack (in-process A/B, train step: radar eager 393 -> 362 ms,
        # small eager 41 -> 36 ms, small compiled 22.8 -> 20.2 ms).
        zx = _unbind_time(zx, b, t, self._channels_last)
        peepholes = self._peepholes()
        outputs = []
        for s in (range(t - 1, -1, -1) if reverse else range(t)):
            h, c = self.step(zx[s], h, c, peepholes)
            outputs.append(h)
        assert h is not None and c is not None
        return _stack_time(outputs, self._channels_last), h, c


class ConvLSTM(nn.Module):
    """A stack of :class:`ConvLSTMLayer` built from a :class:`~implementations.spec.StackSpec`.

    ``state_spatials``: per layer, the state's spatial shape S' (needed only by 'full'
    peepholes; entries may be None otherwise). Channels-first throughout.
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
        probe: api.LossProbe,
        *,
        initial_state: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
        go_backwards: bool = False,
    ) -> api.GradResult:
        """The probe's loss on the full output sequence and final states, and its gradients.

        ``x``: ``(B, T, *S, C)``. ``grads``: canonical weight key -> gradient in the weight's
        canonical shape, plus ``"input"`` ``(B, T, *S, C)``; NumPy in the runner dtype.
        """
        x, states = api.check_input(self.weights, x, self.dtype)
        init = api.check_initial_state(self.weights, initial_state, x.shape[0], states, self.dtype)
        want_y = self.weights.spec.output_shape(x.shape)
        want_states = [(x.shape[0], *s, layer.filters) for s, layer in zip(states, self.weights.spec.layers)]
        found = [np.shape(probe.gy), *(np.shape(g) for g in probe.gh), *(np.shape(g) for g in probe.gc)]
        if len(probe.gh) != len(states) or found != [want_y, *want_states, *want_states]:
            raise api.InputError(
                f"probe: expected gy {want_y} and gh/gc {want_states} (one per layer), found shapes {found}"
            )
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
