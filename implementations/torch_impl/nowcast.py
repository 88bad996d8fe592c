"""The encoder-forecaster nowcasting model (``docs/model.md``, :mod:`implementations.model_spec`) in PyTorch.

:class:`EncoderForecaster` is an ``nn.Module`` made of two :class:`~.model.ConvLSTM` stacks and a 1x1 head: the
frames are patched (space-to-depth), the encoder reads them from zero states, the forecaster (whose layer 0 reads no
input, :attr:`.model.ConvLSTMLayer.no_input`) continues from the encoder's final ``(h, c)`` per layer, and the head
maps every step's concatenated forecaster h's to the patched logits, depth-to-spaced back to frames. The stacks run
channels-first inside (their own layout); frames, logits and states are channels-last at the module's boundary, as
in the reference.

:class:`ModelRunner` wraps the module for the parity tests: NumPy in and out, float32 or float64, on a device chosen
by :func:`.runner.resolve_device`, gradients keyed by the canonical names of the v2 weight file
(:mod:`implementations.model_weights`) plus ``"input"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import api
from ..model_spec import ModelSpec
from ..model_weights import ModelWeights, make_model_weights
from ..spec import SpecError
from .model import ConvLSTM, Tensor, canonical_to_torch, torch_to_canonical
from .runner import precision, resolve_device

STACKS = ("encoder", "forecaster")


def space_to_depth(x: Tensor, p: int) -> Tensor:
    """Frames ``(B, T, H, W, C)`` -> patched frames channels-first ``(B, T, p*p*C, H/p, W/p)``.

    Pixel ``(i*p + dy, j*p + dx, c)`` goes to patch ``(i, j)`` at depth ``(dy*p + dx)*C + c`` (TensorFlow's order,
    :func:`implementations.model_spec.space_to_depth`); the move to channels-first is folded into the same permute.
    """
    b, t, h, w, c = x.shape
    if h % p or w % p:
        raise SpecError(f"space_to_depth: frame size H={h}, W={w} must both be divisible by patch_size {p}")
    y = x.reshape(b, t, h // p, p, w // p, p, c)  # (B, T, i, dy, j, dx, c)
    return y.permute(0, 1, 3, 5, 6, 2, 4).reshape(b, t, p * p * c, h // p, w // p)  # (B, T, (dy, dx, c), i, j)


def depth_to_space(z: Tensor, p: int) -> Tensor:
    """Patched channels-first ``(B, T, p*p*C, h, w)`` -> frames ``(B, T, h*p, w*p, C)``: the exact inverse of
    :func:`space_to_depth`."""
    b, t, d, h, w = z.shape
    c = d // (p * p)
    y = z.reshape(b, t, p, p, c, h, w)  # (B, T, dy, dx, c, i, j)
    return y.permute(0, 1, 5, 2, 6, 3, 4).reshape(b, t, h * p, w * p, c)  # (B, T, i, dy, j, dx, c)


class EncoderForecaster(nn.Module):
    """The encoder-forecaster network of a :class:`~implementations.model_spec.ModelSpec`.

    Submodules ``encoder`` and ``forecaster`` (:class:`~.model.ConvLSTM`, each at the patched frame size), and the
    head's parameters ``head_kernel`` ``(p*p*C, sum F, 1, 1)`` and ``head_bias`` ``(p*p*C,)`` (PyTorch's layout).
    Build it from canonical weights with :meth:`from_weights`; :meth:`export_weights` gives them back.
    """

    def __init__(
        self, spec: ModelSpec, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> None:
        super().__init__()
        self.spec = spec
        spatials = [spec.patched_size] * spec.num_layers  # stride 1, 'same': every state has the patched size
        self.encoder = ConvLSTM(spec.encoder, state_spatials=spatials, dtype=dtype, device=device)
        self.forecaster = ConvLSTM(spec.forecaster, state_spatials=spatials, dtype=dtype, device=device)
        factory: dict[str, Any] = {"dtype": dtype, "device": device}
        self.head_kernel = nn.Parameter(torch.empty(spec.patch_channels, spec.head_channels, 1, 1, **factory))
        self.head_bias = nn.Parameter(torch.zeros(spec.patch_channels, **factory))
        nn.init.xavier_uniform_(self.head_kernel)
        self.meta_extra: dict[str, Any] = {}

    # -- weights ------------------------------------------------------------------------------

    @classmethod
    def from_weights(
        cls, weights: ModelWeights, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> EncoderForecaster:
        """A module holding canonical ``weights`` (cast to ``dtype``; default: the weights' dtype)."""
        if dtype is None:
            dtype = getattr(torch, weights.dtype.name)
        module = cls(weights.spec, dtype=dtype, device=device)
        module.load_canonical(weights.arrays)
        module.meta_extra = dict(weights.meta_extra)
        return module

    def canonical_parameters(self) -> dict[str, nn.Parameter]:
        """Canonical v2 key (``encoder/layers/{i}/kernel`` ..., ``head/kernel``) -> parameter (module layout)."""
        out: dict[str, nn.Parameter] = {}
        for name in STACKS:
            stack: ConvLSTM = getattr(self, name)
            out.update({f"{name}/{key}": p for key, p in stack.canonical_parameters().items()})
        out["head/kernel"] = self.head_kernel
        out["head/bias"] = self.head_bias
        return out

    def load_canonical(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Copy canonical v2 arrays into the parameters (each stack through :meth:`ConvLSTM.load_canonical`)."""
        keys = set(self.canonical_parameters())
        missing, extra = sorted(keys - set(arrays)), sorted(set(arrays) - keys)
        if missing or extra:
            raise SpecError(f"load_canonical: missing keys {missing}, unexpected keys {extra}")
        for name in STACKS:
            prefix = f"{name}/"
            getattr(self, name).load_canonical({k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)})
        with torch.no_grad():
            for key, p in (("head/kernel", self.head_kernel), ("head/bias", self.head_bias)):
                value = torch.from_numpy(canonical_to_torch(key, np.asarray(arrays[key])))
                if tuple(value.shape) != tuple(p.shape):
                    raise SpecError(f"{key}: expected shape {self.spec.weight_shapes()[key]}, "
                                    f"found {tuple(np.shape(arrays[key]))}")
                p.copy_(value)

    def export_canonical(self) -> dict[str, np.ndarray]:
        """The parameters as canonical NumPy arrays (keys and layouts of the v2 weight file)."""
        # .copy(): on CPU .numpy() shares the parameter's memory.
        return {
            key: torch_to_canonical(key, p.detach().cpu().numpy().copy())
            for key, p in self.canonical_parameters().items()
        }

    def export_weights(self) -> ModelWeights:
        """The current weights as validated :class:`ModelWeights` (the module's dtype; unknown meta fields kept)."""
        return make_model_weights(self.spec, self.export_canonical(), self.meta_extra)

    def use_autograd_loop(self, enabled: bool = True) -> EncoderForecaster:
        """Both stacks' time loops in plain differentiable ops (or the hand-written backward): see
        :meth:`ConvLSTM.use_autograd_loop`. Returns the module."""
        self.encoder.use_autograd_loop(enabled)
        self.forecaster.use_autograd_loop(enabled)
        return self

    # -- the model ----------------------------------------------------------------------------

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """Run the model on frames ``x`` ``(B, T_in, H, W, C)``.

        Returns ``(logits (B, T_out, H, W, C), [h_k], [c_k])``: the final state of every forecaster layer k,
        ``(B, H/p, W/p, F_k)`` (channels-last views of the stacks' channels-first states).
        """
        spec = self.spec
        p = spec.patch_size
        _, enc_h, enc_c = self.encoder(space_to_depth(x, p))
        b = x.shape[0]
        # The forecaster's layer 0 reads no input: an empty sequence gives it the number of steps and the sizes.
        seq = x.new_empty((b, spec.t_out, 0, *spec.patched_size))
        sequences: list[Tensor] = []
        hs: list[Tensor] = []
        cs: list[Tensor] = []
        for layer, h0, c0 in zip(self.forecaster.layers, enc_h, enc_c):
            seq, h, c = layer(seq, (h0, c0))
            sequences.append(seq)
            hs.append(h)
            cs.append(c)
        # The head over every step at once: one 1x1 conv on (B*T_out, sum F, h, w), layer 0's channels first.
        cat = torch.cat(sequences, dim=2)
        z = F.conv2d(cat.reshape(b * spec.t_out, *cat.shape[2:]), self.head_kernel, self.head_bias)
        logits = depth_to_space(z.reshape(b, spec.t_out, *z.shape[1:]), p)
        return logits, [h.permute(0, 2, 3, 1) for h in hs], [c.permute(0, 2, 3, 1) for c in cs]

    def predictions(self, logits: Tensor) -> Tensor:
        """The output activation: ``sigmoid(logits)`` or the logits themselves (``linear``)."""
        return torch.sigmoid(logits) if self.spec.output_activation == "sigmoid" else logits

    def loss_from_logits(self, logits: Tensor, y: Tensor) -> Tensor:
        """Mean loss over every value: BCE from the logits (``softplus(z) - y*z``, stable) or MSE (``linear``)."""
        if self.spec.output_activation == "sigmoid":
            return F.binary_cross_entropy_with_logits(logits, y)
        return F.mse_loss(logits, y)

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        """The model's mean loss on frames ``x`` ``(B, T_in, H, W, C)`` and targets ``y`` ``(B, T_out, H, W, C)``."""
        return self.loss_from_logits(self(x)[0], y)


def _check_frames(x: Any, name: str, want: tuple[int, ...], dtype: str) -> np.ndarray:
    """``x`` as a C-contiguous ``dtype`` array of shape ``(B, *want[1:])`` (:class:`~implementations.api.InputError`
    otherwise)."""
    if not isinstance(x, np.ndarray) or isinstance(x, np.ma.MaskedArray):
        raise api.InputError(f"{name}: expected a plain NumPy array, found {type(x).__name__}")
    if x.dtype.kind != "f":
        raise api.InputError(f"{name}: expected a floating dtype, found {x.dtype}")
    if x.ndim != len(want) or tuple(x.shape[1:]) != tuple(want[1:]) or x.shape[0] < 1:
        raise api.InputError(f"{name}: expected shape (B, {', '.join(map(str, want[1:]))}) with B >= 1, "
                             f"found {x.shape}")
    return np.ascontiguousarray(x, dtype=dtype)


class ModelRunner:
    """:class:`EncoderForecaster` behind a NumPy interface, for parity tests and benchmarks.

    ``dtype``: ``"float32"`` or ``"float64"``, the module's and the results' dtype. ``device``: see
    :func:`.runner.resolve_device`. ``allow_tf32``: as for :class:`.runner.Runner` (off: parity needs full fp32).
    """

    framework = "torch"

    def __init__(
        self, weights: ModelWeights, *, dtype: str = "float32", device: str | None = None, allow_tf32: bool = False
    ) -> None:
        self.weights = weights
        self.dtype = api.check_dtype(dtype)
        self._candidate = resolve_device(device)
        self._device: torch.device = self._candidate.handle
        self.allow_tf32 = bool(allow_tf32)
        self.module = EncoderForecaster.from_weights(weights, dtype=getattr(torch, self.dtype), device=self._device)

    @property
    def device_candidate(self) -> api.DeviceCandidate:
        return self._candidate

    def _tensor(self, array: np.ndarray) -> Tensor:
        return torch.from_numpy(array).to(self._device)

    def _inputs(self, x: Any, y: Any = None) -> tuple[np.ndarray, np.ndarray | None]:
        spec = self.module.spec
        xs = _check_frames(x, "frames", spec.input_shape(1), self.dtype)
        if y is None:
            return xs, None
        ys = _check_frames(y, "targets", spec.output_shape(xs.shape[0]), self.dtype)
        if ys.shape[0] != xs.shape[0]:
            raise api.InputError(f"targets: expected batch {xs.shape[0]} like the frames, found {ys.shape[0]}")
        return xs, ys

    @staticmethod
    def _numpy(t: Tensor) -> np.ndarray:
        return t.detach().cpu().numpy().copy()

    def forward(self, x: Any) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray]]:
        """``(logits, predictions, [h_k], [c_k])`` as NumPy in the runner dtype, channels-last."""
        xs, _ = self._inputs(x)
        with torch.no_grad(), precision(self._device, self.allow_tf32):
            logits, hs, cs = self.module(self._tensor(xs))
            predictions = self.module.predictions(logits)
            return (self._numpy(logits), self._numpy(predictions), [self._numpy(h) for h in hs],
                    [self._numpy(c) for c in cs])

    def value_and_grad(self, x: Any, y: Any) -> tuple[float, dict[str, np.ndarray]]:
        """The mean loss and its gradient w.r.t. every canonical weight array (v2 keys, canonical layouts) and
        ``"input"`` (the frames), NumPy in the runner dtype."""
        xs, ys = self._inputs(x, y)
        params = self.module.canonical_parameters()
        with torch.enable_grad(), precision(self._device, self.allow_tf32):
            xt = self._tensor(xs).requires_grad_(True)
            loss = self.module.loss(xt, self._tensor(ys))
            grads = torch.autograd.grad(loss, [*params.values(), xt], allow_unused=True)
        out: dict[str, np.ndarray] = {}
        for (key, p), g in zip(params.items(), grads):
            # Unused only for an empty kernel or a recurrent kernel no step reads.
            g = torch.zeros_like(p) if g is None else g
            out[key] = torch_to_canonical(key, g.detach().cpu().numpy())
        out["input"] = self._numpy(grads[-1])
        return float(loss.detach().cpu()), out

    def export_weights(self) -> ModelWeights:
        """The module's current weights as canonical :class:`ModelWeights` in the runner dtype."""
        return self.module.export_weights()
