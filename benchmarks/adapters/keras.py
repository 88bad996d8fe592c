"""Keras 3 adapter: our ``ConvLSTMStack`` on TensorFlow (``keras-tf``: ``jit_compile=False``, a tf.function graph;
``keras-tf-xla``: ``jit_compile=True``), on JAX (``keras-jax``) and on torch (``keras-torch``, eager), and the peer
``keras-builtin`` (a ``keras.layers.ConvLSTM2D`` stack, :mod:`benchmarks.peers.keras_builtin`, with Keras' default
``jit_compile="auto"``, which resolves to XLA on TensorFlow).

One train-step builder for all of them: Keras' own ``model.compile(optimizer=SGD, loss="mse", jit_compile=...)``
and ``train_on_batch``; inference is ``predict_on_batch``. Both return host NumPy values, which is the sync.
Devices, precision and versions come from the implementation (:mod:`implementations.keras_impl.runner`): the
device list of :func:`~implementations.keras_impl.runner.devices` chosen by
:func:`implementations.api.choose_device` (override: ``$BENCH_DEVICE``), float32 in full fp32 on a GPU inside
:func:`~implementations.keras_impl.runner.precision` (as in the parity tests).

The backend is chosen by setting ``KERAS_BACKEND`` before keras is first imported; that works because asv
runs every benchmark (every parameter combination) in a fresh process. :func:`import_keras` refuses to run
when keras is already loaded with another backend, so a shared process can never silently mix them up.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from typing import Any

import numpy as np

from implementations import api

from .. import common, threads

#: variant -> (Keras backend, jit_compile)
BACKENDS: dict[str, tuple[str, Any]] = {
    "keras-tf": ("tensorflow", False),
    "keras-tf-xla": ("tensorflow", True),
    "keras-jax": ("jax", True),
    "keras-torch": ("torch", False),
    "keras-builtin": ("tensorflow", "auto"),
}
VARIANTS = tuple(BACKENDS)


def import_keras(backend: str) -> Any:
    """``import keras`` on ``backend``: sets KERAS_BACKEND first; RuntimeError if keras already runs another."""
    loaded = sys.modules.get("keras")
    if loaded is not None:
        current = loaded.backend.backend()
        if current != backend:
            raise RuntimeError(
                f"keras is already imported in this process with the {current!r} backend, {backend!r} was asked "
                "for: each Keras variant needs its own process (asv gives every benchmark one)"
            )
        return loaded
    os.environ["KERAS_BACKEND"] = backend
    # the backend's thread pools before keras loads it (TensorFlow's can only be sized before its first op)
    if backend == "tensorflow":
        import tensorflow

        threads.configure_tensorflow(tensorflow)
    elif backend == "torch":
        import torch

        threads.configure_torch(torch)
    import keras

    if keras.backend.backend() != backend:  # pragma: no cover - keras ignored the variable
        raise RuntimeError(f"KERAS_BACKEND={backend} but keras runs {keras.backend.backend()!r}")
    return keras


def import_framework(variant: str) -> Any:
    """Import what ``variant`` needs (the import-only memory baseline) and select its device."""
    backend = BACKENDS[variant][0]
    keras = import_keras(backend)
    choose(backend)
    return keras


def device_candidates(backend: str, module: Any) -> list[api.DeviceCandidate]:
    """The devices of the Keras ``backend`` (``module``: the imported backend), GPUs first:
    :func:`implementations.keras_impl.runner.devices`; each handle is what ``keras.device`` takes."""
    from implementations.keras_impl import runner

    return runner.devices(backend, module)


def choose(backend: str) -> api.DeviceCandidate:
    """The device to benchmark on: the first GPU, else the CPU, unless ``$BENCH_DEVICE`` says otherwise."""
    candidates = device_candidates(backend, importlib.import_module(backend))
    return api.choose_device(candidates, os.environ.get(api.DEVICE_ENV))


class KerasModel(common.Model):
    framework = "keras"
    train_returns_outputs = False  # train_on_batch returns the loss only: outputs come from predict_on_batch

    def __init__(self, workload: Any, variant: str, dtype: str, weights: Any, x: np.ndarray, target: np.ndarray):
        if variant not in BACKENDS:
            raise ValueError(f"not a Keras variant: {variant!r}")
        backend, jit = BACKENDS[variant]
        self.variant, self.dtype, self.backend_name = variant, dtype, backend
        # Half precision the Keras way: a mixed policy (float32 variables, computation in the half type; the
        # layer casts its float32 input). A pure "bfloat16" policy cannot even initialise the weights: the
        # orthogonal initialiser's QR has no half-precision kernel on TF or torch CPUs.
        self.policy = "float32" if dtype == "float32" else f"mixed_{dtype}"
        if backend == "tensorflow":
            tf = importlib.import_module("tensorflow")
            for gpu in tf.config.list_physical_devices("GPU"):
                # Before any GPU use: let TF grow its pool instead of grabbing all memory up front.
                try:
                    tf.config.experimental.set_memory_growth(gpu, True)
                except RuntimeError:
                    pass
        keras = import_keras(backend)
        self.keras = keras
        self.backend = importlib.import_module(backend)
        from implementations.keras_impl import ConvLSTMStack, Runner, precision

        choice = choose(backend)
        self.device, self.device_kind, self.device_name = choice.id, choice.kind, choice.name
        self._handle = choice.handle
        self._versions = Runner.framework_versions()
        # float32 in full fp32 on a GPU (the parity setting); the half-precision policies keep the backend's default
        self._precision = (
            (lambda: precision(choice, allow_tf32=False)) if dtype == "float32" else contextlib.nullcontext
        )
        spec = weights.spec
        with self._scope():
            if variant == "keras-builtin":
                from ..peers import keras_builtin

                model = keras_builtin.build(weights, workload.input_shape[2:-1])
            else:
                inputs = keras.Input(shape=tuple(x.shape[1:]), batch_size=x.shape[0], dtype="float32")
                layer = ConvLSTMStack(
                    spec,
                    peephole_spatials=weights.state_spatials(),
                    return_sequences=True,
                    dtype=self.policy,
                    name="conv_lstm_stack",
                )
                model = keras.Model(inputs, layer(inputs))
                layer.set_canonical_weights(weights.arrays)
            optimizer = keras.optimizers.SGD(learning_rate=common.LEARNING_RATE)
            model.compile(optimizer=optimizer, loss="mse", jit_compile=jit)
            self.x = keras.ops.convert_to_tensor(x, dtype="float32")
            self.y = keras.ops.convert_to_tensor(target, dtype="float32")
        self.model = model
        self.jit_compile = model.jit_compile
        self._out: Any = None
        self._loss: Any = None
        self.workload_probe = common.conv_probe(workload, self.device_kind)

    def _scope(self) -> contextlib.ExitStack:
        """The chosen device and the precision of every call."""
        stack = contextlib.ExitStack()
        stack.enter_context(self.keras.device(self._handle))
        stack.enter_context(self._precision())
        return stack

    def forward(self) -> None:
        with self._scope():
            self._out = self.model.predict_on_batch(self.x)

    def train_step(self) -> None:
        with self._scope():
            self._loss = self.model.train_on_batch(self.x, self.y)

    def sync(self) -> None:
        """Nothing left to wait for: predict_on_batch / train_on_batch return host NumPy values."""

    def outputs(self) -> np.ndarray:
        return np.asarray(self._out).astype(np.float32)

    def loss(self) -> float:
        value = self._loss[0] if isinstance(self._loss, (list, tuple)) else self._loss
        return float(value)

    def first_weight(self) -> np.ndarray:
        return np.asarray(self.keras.ops.convert_to_numpy(self.model.trainable_variables[0])).astype(np.float32)

    def device_peak_bytes(self) -> int | None:
        if self.device_kind == "cpu":
            return None
        if self.backend_name == "tensorflow":
            return int(self.backend.config.experimental.get_memory_info(self._handle)["peak"])
        if self.backend_name == "jax":
            stats = self._handle.memory_stats() or {}
            return int(stats["peak_bytes_in_use"]) if "peak_bytes_in_use" in stats else None
        return int(self.backend.cuda.max_memory_allocated(self._handle))

    def peak_gflops(self) -> dict[str, float]:
        with self._precision():  # the peaks at the precision the model runs at
            return self._peak_gflops()

    def _peak_gflops(self) -> dict[str, float]:
        probe = self.workload_probe
        if self.backend_name == "tensorflow":
            jit = bool(self.jit_compile)
            return tf_peak_gflops(self.backend, self._handle, self.dtype, jit, self.device_kind, probe)
        if self.backend_name == "jax":
            from . import jax as jax_adapter

            jdtype = getattr(self.backend.numpy, self.dtype)
            return jax_adapter.peak_gflops(self.backend, self._handle, jdtype, self.device_kind, probe)
        from . import torch as torch_adapter

        torch = self.backend
        return torch_adapter.peak_gflops(
            torch, torch.device(self._handle), getattr(torch, self.dtype), self.device_kind, probe
        )

    def versions(self) -> dict[str, str]:
        return dict(self._versions)

    def options(self) -> dict[str, Any]:
        return {
            "backend": self.backend_name,
            "dtype_policy": self.policy,
            "jit_compile_requested": BACKENDS[self.variant][1],
            "jit_compile": self.jit_compile,
            "model": "keras.layers.ConvLSTM2D stack" if self.variant == "keras-builtin" else "ConvLSTMStack",
            "optimizer": f"keras.optimizers.SGD({common.LEARNING_RATE})",
            "api": "predict_on_batch / train_on_batch",
            "layout": "channels-last (B, T, H, W, C)",
        }


def tf_peak_gflops(
    tf: Any, device: str, dtype: str, jit: bool, device_kind: str, probe: common.ConvProbe
) -> dict[str, float]:
    """tf.linalg.matmul and tf.nn.convolution (NHWC) in a tf.function (XLA when ``jit``), GFLOP/s.

    Each call returns a scalar (the sum of the result) to the host, which is the sync; the sum costs O(n^2)
    against the O(n^3) matmul.
    """
    n = common.matmul_size(device_kind)
    tdtype = getattr(tf, dtype)
    rng = np.random.default_rng(0)
    with tf.device(device):
        a = tf.constant(rng.standard_normal((n, n)), dtype=tdtype)
        b = tf.constant(rng.standard_normal((n, n)), dtype=tdtype)
        xi = tf.constant(rng.standard_normal((probe.batch, *probe.spatial, probe.in_channels)), dtype=tdtype)
        w = tf.constant(rng.standard_normal((*probe.kernel, probe.in_channels, probe.out_channels)), dtype=tdtype)

    @tf.function(jit_compile=jit)
    def mm(u: Any, v: Any) -> Any:
        return tf.reduce_sum(tf.cast(tf.linalg.matmul(u, v), tf.float32))

    @tf.function(jit_compile=jit)
    def conv(u: Any, v: Any) -> Any:
        return tf.reduce_sum(tf.cast(tf.nn.convolution(u, v, padding="SAME"), tf.float32))

    def run_mm() -> None:
        with tf.device(device):
            mm(a, b).numpy()

    def run_conv() -> None:
        with tf.device(device):
            conv(xi, w).numpy()

    return {"matmul": common.best_rate(run_mm, 2.0 * n**3), "conv": common.best_rate(run_conv, probe.flops)}


def build(workload: Any, variant: str, dtype: str, weights: Any, x: np.ndarray, target: np.ndarray) -> KerasModel:
    return KerasModel(workload, variant, dtype, weights, x, target)
