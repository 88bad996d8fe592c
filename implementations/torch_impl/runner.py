"""The :class:`~implementations.api.Runner` on PyTorch, and the backend it shares with the benchmarks: the devices
torch offers (:func:`devices`, :func:`resolve_device`), the float32 precision of CUDA kernels (:func:`precision`)
and the package versions (:meth:`Runner.framework_versions`).

The runner converts at its boundary between the canonical channels-last NumPy layout of :mod:`implementations.api`
and the module's channels-first tensors.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from .. import api
from ..weights import Weights, make_weights
from .model import ConvLSTM, State, Tensor, _to_channels_first, _to_channels_last, torch_to_canonical

# ---------------------------------------------------------------------------------------------
# The backend: devices, precision
# ---------------------------------------------------------------------------------------------


def devices(torch_module: Any = torch) -> list[api.DeviceCandidate]:
    """The devices torch offers: its CUDA devices (ROCm builds expose theirs as cuda too), then the CPU; each
    candidate's handle is the ``torch.device``. ``torch_module``: torch, or a stand-in with the same attributes."""
    out = []
    cuda = torch_module.cuda
    if cuda.is_available():
        for i in range(cuda.device_count()):
            out.append(api.DeviceCandidate("gpu", i, str(cuda.get_device_name(i)), torch_module.device("cuda", i)))
    out.append(api.DeviceCandidate("cpu", 0, api.cpu_name(), torch_module.device("cpu")))
    return out


def resolve_device(requested: str | None = None) -> api.DeviceCandidate:
    """The device for a requested name (``None``, ``cpu``, ``gpu``/``cuda``, ``gpu:N``/``cuda:N``), chosen by
    :func:`implementations.api.choose_device` among :func:`devices`: by default the first CUDA device, else the
    CPU."""
    return api.choose_device(devices(), requested)


def _tf32_switches(allow_tf32: bool) -> list[tuple[Any, str, Any]]:
    """``(object, attribute, value)`` of the switches that let cuDNN convolutions and cuBLAS matmuls use TF32 for
    float32 (``allow_tf32``) or not."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        value = "tf32" if allow_tf32 else "ieee"
        return [(conv, "fp32_precision", value), (torch.backends.cuda.matmul, "fp32_precision", value)]
    # torch < 2.9: the legacy switches (mixing them with the fp32_precision ones is an error in later versions).
    return [(torch.backends.cudnn, "allow_tf32", allow_tf32), (torch.backends.cuda.matmul, "allow_tf32", allow_tf32)]


@contextlib.contextmanager
def precision(device: torch.device | str, allow_tf32: bool = False) -> Iterator[None]:
    """On CUDA, float32 convolutions and matmuls in full fp32 (no TF32) unless ``allow_tf32``, the previous settings
    restored on exit: parity needs full fp32, and TF32 is PyTorch's default for cuDNN convolutions. Elsewhere a
    no-op."""
    if torch.device(device).type != "cuda":
        yield
        return
    switches = _tf32_switches(allow_tf32)
    old = [getattr(obj, name) for obj, name, _ in switches]
    for obj, name, value in switches:
        setattr(obj, name, value)
    try:
        yield
    finally:
        for (obj, name, _), value in zip(switches, old):
            setattr(obj, name, value)


# ---------------------------------------------------------------------------------------------
# The runner
# ---------------------------------------------------------------------------------------------


class Runner(api.Runner):
    """The :class:`~implementations.api.Runner` contract on PyTorch (see that module's docstring).

    ``dtype``: ``"float32"`` or ``"float64"``, the module's and the results' dtype. ``device``: see
    :func:`resolve_device` (None: the first CUDA device when there is one, else the CPU). ``allow_tf32``: let float32
    convolutions and matmuls on CUDA use TF32 (off by default: parity needs full fp32; :func:`precision`).
    ``module`` is the underlying :class:`~.model.ConvLSTM`.
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
        self._candidate = resolve_device(device)
        self._device: torch.device = self._candidate.handle
        self._torch_dtype: torch.dtype = getattr(torch, self.dtype)
        self.allow_tf32 = bool(allow_tf32)
        self.module = ConvLSTM.from_weights(weights, dtype=self._torch_dtype, device=self._device)

    @property
    def device_candidate(self) -> api.DeviceCandidate:
        return self._candidate

    @classmethod
    def framework_versions(cls) -> dict[str, str]:
        """torch, and CUDA and cuDNN when torch is built with them."""
        out = {"torch": torch.__version__}
        if torch.version.cuda:
            out["cuda"] = str(torch.version.cuda)
        if torch.backends.cudnn.is_available():
            out["cudnn"] = str(torch.backends.cudnn.version())
        return out

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

    # -- the hooks of api.Runner ----------------------------------------------------------------

    def _forward(
        self, x: np.ndarray, init: list[tuple[np.ndarray, np.ndarray]] | None, go_backwards: bool
    ) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
        with torch.no_grad(), precision(self._device, self.allow_tf32):
            seq, hs, cs = self.module(_to_channels_first(self._tensor(x), 2), self._states(init), go_backwards)
            return self._numpy(seq, 2), [self._numpy(h, 1) for h in hs], [self._numpy(c, 1) for c in cs]

    def _value_and_grad(
        self,
        x: np.ndarray,
        init: list[tuple[np.ndarray, np.ndarray]] | None,
        probe: api.LossProbe,
        go_backwards: bool,
    ) -> tuple[float, dict[str, np.ndarray]]:
        params = self.module.canonical_parameters()
        with torch.enable_grad(), precision(self._device, self.allow_tf32):
            xt = self._tensor(x).requires_grad_(True)
            gy = _to_channels_first(self._tensor(probe.gy), 2)
            gh = [_to_channels_first(self._tensor(g), 1) for g in probe.gh]
            gc = [_to_channels_first(self._tensor(g), 1) for g in probe.gc]
            seq, hs, cs = self.module(_to_channels_first(xt, 2), self._states(init), go_backwards)
            loss = api.probe_loss(seq, hs, cs, gy, gh, gc, reduce_sum=torch.sum)
            grads = torch.autograd.grad(loss, [*params.values(), xt], allow_unused=True)
        out: dict[str, np.ndarray] = {}
        for (key, p), g in zip(params.items(), grads):
            # Unused only when no step reads it (the recurrent kernel with T=1 from a zero state).
            g = torch.zeros_like(p) if g is None else g
            out[key] = torch_to_canonical(key, g.detach().cpu().numpy())
        g_in = grads[-1]
        out["input"] = (torch.zeros_like(xt) if g_in is None else g_in).detach().cpu().numpy()
        return float(loss.detach().cpu()), out

    def export_weights(self) -> Weights:
        """The module's current weights as canonical :class:`Weights` in the runner dtype."""
        return make_weights(self.weights.spec, self.module.export_canonical(), self.weights.meta_extra)
