"""The :class:`~implementations.api.Runner` contract on Keras 3, and the backend facts the benchmarks share.

:func:`devices` lists what the active Keras backend offers (GPUs, then the CPU) as
:class:`~implementations.api.DeviceCandidate`, whose ``handle`` is the identifier to give ``keras.device``;
:func:`resolve_device` picks one with :func:`~implementations.api.choose_device`; :func:`precision` runs float32 on
a GPU in full fp32 (or TF32). :class:`Runner` traces the whole forward / value-and-gradient once per input shape
with ``tf.function`` or ``jax.jit`` (``jit=True``, the default); the torch backend runs eagerly.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np
from keras import ops

from .. import api
from ..weights import Weights, make_weights
from .loop import _backend_compile, _backend_inference, _backend_value_and_grad
from .model import ConvLSTMStack

# ---------------------------------------------------------------------------------------------
# Devices and precision
# ---------------------------------------------------------------------------------------------


def devices(backend_name: str, backend_module: Any) -> list[api.DeviceCandidate]:
    """The devices Keras' ``backend_name`` backend offers, GPUs first, then the CPU.

    ``backend_module``: the imported backend (``tensorflow``, ``jax``, ``torch``). Each handle is what
    ``keras.device`` takes on that backend: TF device names (``"GPU:0"``, ``"CPU:0"``), jax Devices, torch device
    names (``"cuda:0"``, ``"cpu"``; not ``"cpu:0"``, under which the torch backend creates non-leaf variables that
    ``train_on_batch`` cannot update).
    """
    cpu = api.cpu_name()
    if backend_name == "tensorflow":
        tf = backend_module
        physical = tf.config.list_physical_devices("GPU")
        out = []
        for i, _logical in enumerate(tf.config.list_logical_devices("GPU")):
            name = f"GPU:{i}"
            if i < len(physical):
                details = tf.config.experimental.get_device_details(physical[i]) or {}
                name = str(details.get("device_name", name))
            out.append(api.DeviceCandidate("gpu", i, name, f"GPU:{i}"))
        return [*out, api.DeviceCandidate("cpu", 0, cpu, "CPU:0")]
    if backend_name == "jax":
        jax = backend_module
        accelerators = [d for d in jax.devices() if d.platform != "cpu"]  # cuda, rocm, tpu: all "gpu" here
        try:
            cpus = jax.devices("cpu")
        except RuntimeError:
            cpus = []
        out = [api.DeviceCandidate("gpu", i, str(d.device_kind), d) for i, d in enumerate(accelerators)]
        return out + [api.DeviceCandidate("cpu", 0, cpu, d) for d in cpus[:1]]
    if backend_name == "torch":
        torch = backend_module
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        out = [api.DeviceCandidate("gpu", i, str(torch.cuda.get_device_name(i)), f"cuda:{i}") for i in range(count)]
        return [*out, api.DeviceCandidate("cpu", 0, cpu, "cpu")]
    raise NotImplementedError(f"the {backend_name!r} Keras backend is not supported")


def resolve_device(requested: str | None = None) -> api.DeviceCandidate:
    """The device of the active backend for a request (None: the first GPU, else the CPU; ``"cpu"``, ``"gpu"``,
    ``"gpu:N"``, ``"cuda:N"``), by :func:`~implementations.api.choose_device`; :class:`~implementations.api.InputError`
    for a request it cannot meet."""
    if requested is not None and not isinstance(requested, str):
        raise api.InputError(f"device: expected None or a string such as 'cpu' or 'gpu:0', found {requested!r}")
    backend = keras.backend.backend()
    try:
        return api.choose_device(devices(backend, importlib.import_module(backend)), requested)
    except (ValueError, NotImplementedError) as exc:
        raise api.InputError(f"{exc} (Keras backend {backend})") from None


@contextlib.contextmanager
def _swap(owner: Any, attr: str, value: Any) -> Iterator[None]:
    """``owner.attr = value`` inside the block, the old value restored after."""
    old = getattr(owner, attr)
    setattr(owner, attr, value)
    try:
        yield
    finally:
        setattr(owner, attr, old)


@contextlib.contextmanager
def precision(device: api.DeviceCandidate, allow_tf32: bool) -> Iterator[None]:
    """On a GPU, float32 convolutions and matrix products in full fp32 unless ``allow_tf32`` (then the backend may
    use TF32); the backend's settings are restored on exit. No-op on the CPU."""
    if device.kind == "cpu":
        yield
        return
    backend = keras.backend.backend()
    with contextlib.ExitStack() as stack:
        if backend == "tensorflow":
            import tensorflow as tf

            old = tf.config.experimental.tensor_float_32_execution_enabled()
            tf.config.experimental.enable_tensor_float_32_execution(allow_tf32)
            stack.callback(tf.config.experimental.enable_tensor_float_32_execution, old)
        elif backend == "jax":
            import jax

            stack.enter_context(jax.default_matmul_precision("default" if allow_tf32 else "highest"))
        elif backend == "torch":
            import torch

            conv = getattr(torch.backends.cudnn, "conv", None)
            if conv is not None and hasattr(conv, "fp32_precision"):  # torch >= 2.9
                stack.enter_context(_swap(conv, "fp32_precision", "tf32" if allow_tf32 else "ieee"))
            else:
                stack.enter_context(_swap(torch.backends.cudnn, "allow_tf32", allow_tf32))
            if not allow_tf32:  # torch's matmul default is full fp32 already; only a TF32 setting is overridden
                matmul = torch.backends.cuda.matmul
                attr, value = ("fp32_precision", "ieee") if hasattr(matmul, "fp32_precision") else ("allow_tf32", False)
                stack.enter_context(_swap(matmul, attr, value))
        yield


def _enable_float64() -> None:
    """float64 needs ``jax_enable_x64`` on the JAX backend (process-wide); nothing elsewhere."""
    if keras.backend.backend() == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)


# ---------------------------------------------------------------------------------------------
# The runner
# ---------------------------------------------------------------------------------------------


class Runner(api.Runner):
    """The :class:`~implementations.api.Runner` contract on Keras 3, whichever backend is active.

    ``dtype``: ``"float32"`` or ``"float64"`` (the layer's dtype policy; on JAX float64 switches on
    ``jax_enable_x64`` process-wide). ``device``: None (the first GPU the backend sees, else the CPU),
    or ``"cpu"``, ``"gpu"``, ``"gpu:N"`` (``"cuda:N"`` accepted). ``jit``: trace the forward and the
    value-and-gradient once per input shape (``tf.function`` / ``jax.jit``; torch runs eagerly).
    ``allow_tf32``: let float32 convolutions use TF32 on a GPU (off: parity needs full fp32).
    ``layer`` is the underlying :class:`ConvLSTMStack` (return_sequences and return_state on).
    """

    framework = "keras"

    def __init__(
        self,
        weights: Weights,
        *,
        dtype: str = "float32",
        device: str | None = None,
        jit: bool = True,
        allow_tf32: bool = False,
    ) -> None:
        super().__init__(weights, dtype=dtype, device=device)
        if self.dtype == "float64":
            _enable_float64()
        self._candidate = resolve_device(device)
        self.jit = bool(jit)
        self.allow_tf32 = bool(allow_tf32)
        self._compiled: dict[tuple[Any, ...], Callable[..., Any]] = {}
        with self._scope():
            self.layer = ConvLSTMStack(
                weights.spec,
                peephole_spatials=weights.state_spatials(),
                return_sequences=True,
                return_state=True,
                dtype=self.dtype,
                name="conv_lstm_stack",
            )
            self.layer.build((None, None, *([None] * weights.spec.rank), weights.spec.input_channels))
            self.layer.set_canonical_weights(weights.arrays)
        key_of = {id(v): k for k, v in self.layer.canonical_variables().items()}
        self._keys = [key_of[id(v)] for v in self.layer.trainable_variables]

    @property
    def device_candidate(self) -> api.DeviceCandidate:
        return self._candidate

    @classmethod
    def framework_versions(cls) -> dict[str, str]:
        """keras, the active backend's name and its version."""
        backend = keras.backend.backend()
        module = importlib.import_module(backend)
        return {"keras": keras.__version__, "keras_backend": backend, backend: str(module.__version__)}

    def _scope(self) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        stack.enter_context(keras.device(self._candidate.handle))
        stack.enter_context(precision(self._candidate, self.allow_tf32))
        return stack

    # -- traced functions -------------------------------------------------------------------------

    def _function(self, kind: str, go_backwards: bool, shape: tuple[int, ...], has_init: bool) -> Callable[..., Any]:
        """``forward(values, x, init) -> (seq, h_0, c_0, ...)`` or
        ``value_and_grad(values, x, init, probe) -> (loss, grads of values, grad of x)``.

        One function per input shape (T and S are static in the unrolled loop), so each traces once.
        """
        key = (kind, go_backwards, shape, has_init)
        if key not in self._compiled:

            def forward(values: list[Any], x: Any, init: Any) -> Any:
                outputs, _ = self.layer.stateless_call(values, [], x, initial_state=init, go_backwards=go_backwards)
                return outputs

            def loss(values: list[Any], x: Any, init: Any, probe: Any) -> Any:
                seq, *states = forward(values, x, init)
                gy, gh, gc = probe
                return api.probe_loss(seq, states[0::2], states[1::2], gy, gh, gc, reduce_sum=ops.sum)

            if kind == "forward":
                self._compiled[key] = _backend_inference(forward, jit=self.jit)
            else:
                fn = _backend_value_and_grad(loss)
                self._compiled[key] = _backend_compile(fn) if self.jit else fn
        return self._compiled[key]

    def _tensors(self, x: np.ndarray, init: list[tuple[np.ndarray, np.ndarray]] | None) -> tuple[Any, Any]:
        xt = ops.convert_to_tensor(x, dtype=self.dtype)
        if init is None:
            return xt, None
        return xt, [(ops.convert_to_tensor(h, self.dtype), ops.convert_to_tensor(c, self.dtype)) for h, c in init]

    def _numpy(self, t: Any) -> np.ndarray:
        """A result as NumPy; it must already be in the runner dtype (a silent downcast is a bug)."""
        out = np.asarray(ops.convert_to_numpy(t))
        if out.dtype != self.dtype:
            raise RuntimeError(f"the {keras.backend.backend()} backend returned {out.dtype}, expected {self.dtype}")
        return out

    # -- the hooks of api.Runner ------------------------------------------------------------------

    def _forward(
        self, x: np.ndarray, init: list[tuple[np.ndarray, np.ndarray]] | None, go_backwards: bool
    ) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
        with self._scope():
            xt, init_t = self._tensors(x, init)
            fn = self._function("forward", bool(go_backwards), tuple(x.shape), init is not None)
            seq, *states = fn([v.value for v in self.layer.trainable_variables], xt, init_t)
            seq = self._numpy(seq)
            states = [self._numpy(s) for s in states]
        return seq, states[0::2], states[1::2]

    def _value_and_grad(
        self, x: np.ndarray, init: list[tuple[np.ndarray, np.ndarray]] | None, probe: api.LossProbe,
        go_backwards: bool,
    ) -> tuple[float, dict[str, np.ndarray]]:
        with self._scope():
            xt, init_t = self._tensors(x, init)
            tensor = functools.partial(ops.convert_to_tensor, dtype=self.dtype)
            probe_t = (tensor(probe.gy), [tensor(g) for g in probe.gh], [tensor(g) for g in probe.gc])
            fn = self._function("value_and_grad", bool(go_backwards), tuple(x.shape), init is not None)
            loss, grads, gx = fn([v.value for v in self.layer.trainable_variables], xt, init_t, probe_t)
            by_key = {key: self._numpy(g) for key, g in zip(self._keys, grads)}
            out = {k: by_key[k] for k in self.weights.arrays}
            out["input"] = self._numpy(gx)
            value = float(ops.convert_to_numpy(loss))
        return value, out

    def export_weights(self) -> Weights:
        """The layer's current weights as canonical :class:`Weights` in the runner dtype.

        Bit-identical to the weights given when their dtype is the runner's; ``meta_extra`` is kept.
        """
        arrays = self.layer.get_canonical_weights()
        ordered = {k: arrays[k] for k in self.weights.arrays}
        return make_weights(self.weights.spec, ordered, copy.deepcopy(self.weights.meta_extra))
