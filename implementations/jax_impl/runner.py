"""The JAX :class:`Runner` (the :class:`implementations.api.Runner` contract, jit-compiled) and the backend the
benchmarks share with it: the devices JAX offers (:func:`devices`, :func:`resolve_device`), the convolution
precision for a dtype (:func:`resolve_precision`) and the package versions (:meth:`Runner.framework_versions`).

Float64: JAX computes in float32 unless ``jax_enable_x64`` is set, so a ``Runner(..., dtype="float64")`` calls
``jax.config.update("jax_enable_x64", True)``, a process-wide side effect done only when float64 is requested;
float32 runners keep working after it (their arrays carry an explicit float32 dtype).
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
from flax import nnx

from .. import api
from ..weights import Weights
from .loop import DEFAULT_BACKWARD_CHUNK, BackwardChunk, resolve_backward_chunk
from .model import DEFAULT_PRECISION, DEFAULT_UNROLL, ConvLSTM, Unroll, check_unroll, lax_precision

__all__ = ["Runner", "devices", "resolve_device", "resolve_precision"]

#: Device-name prefixes JAX or its users give accelerators, all of kind "gpu" for :func:`api.choose_device`.
_ACCELERATOR_NAMES = ("cuda", "rocm", "tpu")


# ---------------------------------------------------------------------------------------------
# The backend: devices, precision
# ---------------------------------------------------------------------------------------------

def devices(jax_module: Any = jax) -> list[api.DeviceCandidate]:
    """Every device JAX offers: its accelerators (cuda/rocm/tpu, kind ``gpu``, in JAX's order) first, then its first
    CPU. ``handle``: the jax Device. ``jax_module``: ``jax`` (a stand-in in tests)."""
    out = [
        api.DeviceCandidate("gpu", i, str(dev.device_kind), dev)
        for i, dev in enumerate(d for d in jax_module.devices() if d.platform != "cpu")
    ]
    try:
        cpus = jax_module.devices("cpu")
    except RuntimeError:  # no CPU backend
        cpus = []
    out.extend(api.DeviceCandidate("cpu", 0, api.cpu_name(), dev) for dev in cpus[:1])
    return out


def resolve_device(requested: Any = None) -> api.DeviceCandidate:
    """The device to compute on (:func:`api.choose_device` over :func:`devices`): None (the first accelerator, else
    the CPU), ``"cpu"``, ``"gpu"``/``"gpu:N"`` (also spelled ``cuda``, ``rocm`` or ``tpu``), or a jax Device.
    ValueError for a malformed name, NotImplementedError for a device JAX does not offer."""
    if isinstance(requested, jax.Device):
        for cand in devices():
            if cand.handle == requested:
                return cand
        kind = "cpu" if requested.platform == "cpu" else "gpu"
        same = [d for d in jax.devices(requested.platform) if d.platform == requested.platform]
        name = api.cpu_name() if kind == "cpu" else str(requested.device_kind)
        return api.DeviceCandidate(kind, same.index(requested) if requested in same else requested.id, name, requested)
    if requested is not None and not isinstance(requested, str):
        raise ValueError(f"device: expected None, a jax Device or a string like 'gpu:0', found {requested!r}")
    name = requested
    if name is not None:
        head, sep, tail = name.strip().lower().partition(":")
        name = ("gpu" if head in _ACCELERATOR_NAMES else head) + sep + tail
    return api.choose_device(devices(), name)


def resolve_precision(dtype: str, requested: str | None = None) -> str:
    """The convolution precision name for ``dtype`` when none is ``requested``: ``"highest"`` for float32/float64
    (no TF32 on GPUs, which float32 parity needs), ``"default"`` (XLA's fastest) for reduced-precision dtypes."""
    if requested is None:
        requested = DEFAULT_PRECISION if dtype in api.DTYPES else "default"
    lax_precision(requested)  # validate
    return requested


# ---------------------------------------------------------------------------------------------
# Jitted entry points (module graphdef static, its state traced)
# ---------------------------------------------------------------------------------------------

@functools.partial(jax.jit, static_argnames=("graphdef", "go_backwards"))
def _forward_jit(
    graphdef: Any, state: Any, x: jax.Array, initial_state: Any, go_backwards: bool
) -> tuple[jax.Array, list[jax.Array], list[jax.Array]]:
    model = nnx.merge(graphdef, state)
    return model(x, initial_state, go_backwards=go_backwards)


@functools.partial(jax.jit, static_argnames=("graphdef", "go_backwards"))
def _value_and_grad_jit(
    graphdef: Any, state: Any, x: jax.Array, initial_state: Any, probe: Any, go_backwards: bool
) -> tuple[jax.Array, tuple[Any, jax.Array]]:
    gy, gh, gc = probe

    def loss(state: Any, x: jax.Array) -> jax.Array:
        model = nnx.merge(graphdef, state)
        seq, hs, cs = model(x, initial_state, go_backwards=go_backwards)
        return api.probe_loss(seq, hs, cs, gy, gh, gc, reduce_sum=jnp.sum)

    return jax.value_and_grad(loss, argnums=(0, 1))(state, x)


# ---------------------------------------------------------------------------------------------
# Runner
# ---------------------------------------------------------------------------------------------

class Runner(api.Runner):
    """The JAX/Flax NNX runner: NumPy in/out, computation jit-compiled on one JAX device.

    ``dtype="float64"`` enables ``jax_enable_x64`` process-wide (module docstring).
    ``device``: None (the first accelerator, else the CPU), a jax Device, or a name such as ``"gpu:0"``
    (:func:`resolve_device`). ``unroll``: the time-loop strategy (default :data:`~.model.DEFAULT_UNROLL`, full
    unroll). ``precision``: convolution precision, ``"highest"``, ``"high"`` or ``"default"`` (default:
    :func:`resolve_precision`). ``backward_chunk``: frames per gradient convolution of each hoisted input
    convolution; ``"auto"`` (default) resolves against ``device`` (:func:`~.loop.resolve_backward_chunk`).
    """

    framework = "jax"

    def __init__(
        self,
        weights: Weights,
        *,
        dtype: str = "float32",
        device: Any = None,
        unroll: Unroll | None = None,
        precision: str | None = None,
        backward_chunk: BackwardChunk = DEFAULT_BACKWARD_CHUNK,
    ) -> None:
        super().__init__(weights, dtype=dtype, device=device)
        self._np_dtype = np.dtype(self.dtype)
        self._ensure_x64()
        try:
            self._candidate = resolve_device(device)
        except (ValueError, NotImplementedError) as exc:
            raise api.InputError(f"device: {device!r} is not available to JAX ({exc})") from None
        self._device = self._candidate.handle
        self.unroll = check_unroll(DEFAULT_UNROLL if unroll is None else unroll)
        self.precision = resolve_precision(self.dtype, precision)
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
            precision=self.precision,
            backward_chunk=self.backward_chunk,
        )
        self._graphdef, self._state = nnx.split(self.model)

    @classmethod
    def framework_versions(cls) -> dict[str, str]:
        """jax, jaxlib and flax versions (no device query)."""
        return {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__}

    @property
    def device_candidate(self) -> api.DeviceCandidate:
        return self._candidate

    @property
    def jax_device(self) -> jax.Device:
        return self._device

    def _ensure_x64(self) -> None:
        if self._np_dtype == np.float64 and not jax.config.jax_enable_x64:
            jax.config.update("jax_enable_x64", True)

    def _put(self, tree: Any) -> Any:
        self._ensure_x64()
        return None if tree is None else jax.device_put(tree, self._device)

    @staticmethod
    def _to_numpy(tree: Any) -> Any:
        return jax.tree_util.tree_map(np.array, jax.device_get(tree))

    def _forward(
        self, x: np.ndarray, init: list[tuple[np.ndarray, np.ndarray]] | None, go_backwards: bool
    ) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
        out = _forward_jit(self._graphdef, self._state, self._put(x), self._put(init), bool(go_backwards))
        seq, hs, cs = self._to_numpy(out)
        return seq, list(hs), list(cs)

    def _value_and_grad(
        self, x: np.ndarray, init: list[tuple[np.ndarray, np.ndarray]] | None, probe: api.LossProbe,
        go_backwards: bool,
    ) -> tuple[float, dict[str, np.ndarray]]:
        probe_d = self._put((probe.gy, probe.gh, probe.gc))
        loss, (grad_state, grad_x) = _value_and_grad_jit(
            self._graphdef, self._state, self._put(x), self._put(init), probe_d, bool(go_backwards)
        )
        grad_params = nnx.merge(self._graphdef, grad_state).params()
        loss, grad_params, grad_x = self._to_numpy((loss, grad_params, grad_x))
        grads = {f"layers/{i}/{name}": g for i, p in enumerate(grad_params) for name, g in p.items()}
        grads["input"] = grad_x
        return float(loss), grads

    def export_weights(self) -> Weights:
        """The weights held on the device, as canonical :class:`Weights` in the runner's dtype.

        Bit-identical to the weights given when their dtype is the runner's; ``meta_extra`` is kept.
        """
        return self.model.to_weights(self.weights.meta_extra)
