"""The encoder-forecaster nowcasting model (:mod:`implementations.model_spec`, docs/model.md) in Keras 3.

:class:`EncoderForecaster` is a ``keras.Model`` written with ``keras.ops`` only, so it runs on every Keras backend.
It is two :class:`~implementations.keras_impl.model.ConvLSTMStack` layers (the stack is reused, not copied): the
encoder reads the patched frames; the forecaster is a stack without input (``no_input``), started from the
encoder's final ``(h, c)`` per layer, that returns the h of all its layers concatenated; a 1x1 convolution head
then maps all ``T_out`` steps at once, and depth-to-space gives the logits.

:class:`ModelRunner` runs it from canonical :class:`~implementations.model_weights.ModelWeights` on NumPy arrays
(forward; loss and gradients keyed like the weight file), with the device, precision and per-backend tracing and
gradient helpers of :mod:`.runner` / :mod:`.loop`.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np
from keras import ops

from .. import api
from ..model_spec import ModelSpec
from ..model_weights import ModelWeights, make_model_weights
from .loop import _backend_compile, _backend_inference, _backend_value_and_grad
from .model import ConvLSTMStack, assign_named, named_numpy
from .runner import _enable_float64, precision, resolve_device

# ---------------------------------------------------------------------------------------------
# Patches, with keras.ops (the order of implementations.model_spec.space_to_depth)
# ---------------------------------------------------------------------------------------------


def space_to_depth(x: Any, p: int) -> Any:
    """``(B, T, H, W, C)`` -> ``(B, T, H/p, W/p, p*p*C)``; pixel ``(i*p+dy, j*p+dx, c)`` -> ``(i, j, (dy*p+dx)*C+c)``
    (TensorFlow's ``space_to_depth`` order, as docs/model.md defines it)."""
    t, h, w, c = x.shape[1:]
    y = ops.reshape(x, (-1, t, h // p, p, w // p, p, c))  # (B, T, i, dy, j, dx, c)
    y = ops.transpose(y, (0, 1, 2, 4, 3, 5, 6))  # (B, T, i, j, dy, dx, c)
    return ops.reshape(y, (-1, t, h // p, w // p, p * p * c))


def depth_to_space(z: Any, p: int) -> Any:
    """``(B, T, h, w, p*p*C)`` -> ``(B, T, h*p, w*p, C)``: the exact inverse of :func:`space_to_depth`."""
    t, h, w, d = z.shape[1:]
    y = ops.reshape(z, (-1, t, h, w, p, p, d // (p * p)))  # (B, T, i, j, dy, dx, c)
    y = ops.transpose(y, (0, 1, 2, 4, 3, 5, 6))  # (B, T, i, dy, j, dx, c)
    return ops.reshape(y, (-1, t, h * p, w * p, d // (p * p)))


def _mean(x: Any) -> Any:
    """The mean of every value as ``sum / count`` in x's dtype: ``ops.mean`` sums float64 in float32 on the JAX
    and torch backends (keras 3.15)."""
    return ops.divide(ops.sum(x), ops.cast(int(np.prod(x.shape)), x.dtype))


def _as_model_spec(spec: ModelSpec | Mapping[str, Any]) -> ModelSpec:
    return spec if isinstance(spec, ModelSpec) else ModelSpec.from_dict(spec)


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="convlstm_bench")
class EncoderForecaster(keras.Model):
    """The encoder-forecaster network of a :class:`~implementations.model_spec.ModelSpec`, channels-last.

    ``model(x)`` with frames ``x`` ``(B, T_in, H, W, C)`` returns ``(logits, h_0, c_0, h_1, c_1, ...)``: the logits
    ``(B, T_out, H, W, C)`` and the final state of every forecaster layer ``(B, H/p, W/p, F_k)`` (the flat order of
    :class:`ConvLSTMStack`'s ``return_state``). :meth:`predictions` applies the output activation,
    :meth:`loss_from_logits` is the model's loss (stable BCE from logits for ``sigmoid``, MSE for ``linear``).

    The weights are made at construction (every shape is fixed by the spec) with Keras' defaults, as
    :func:`~implementations.model_weights.init_model_weights` describes them (glorot-uniform head kernel, zero
    head bias); :meth:`canonical_variables` maps the v2 weight-file keys (``encoder/layers/{i}/kernel``,
    ``forecaster/...``, ``head/kernel``, ``head/bias``) to them.
    """

    def __init__(self, spec: ModelSpec | Mapping[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = _as_model_spec(spec)
        s = self.spec
        spatials = [s.patched_size] * s.num_layers  # 'same', stride 1: every state has the patched size
        self.encoder = ConvLSTMStack(
            s.encoder, peephole_spatials=spatials, return_state=True, dtype=self.dtype_policy, name="encoder"
        )
        self.forecaster = ConvLSTMStack(
            s.forecaster, peephole_spatials=spatials, return_sequences=True, return_state=True,
            return_all_layers=True, dtype=self.dtype_policy, name="forecaster",
        )
        self.encoder.build((None, s.t_in, *s.patched_size, s.patch_channels))
        self.forecaster.build(None)
        self.head_kernel = self.add_weight(
            name="head_kernel", shape=(1, 1, s.head_channels, s.patch_channels), initializer="glorot_uniform"
        )
        self.head_bias = self.add_weight(name="head_bias", shape=(s.patch_channels,), initializer="zeros")
        self.built = True

    def build(self, input_shape: Any = None) -> None:
        """Nothing to do: the weights were made by the constructor."""

    # -- computation ------------------------------------------------------------------------------

    def call(self, inputs: Any) -> Any:
        """Frames ``(B, T_in, H, W, C)`` -> ``(logits (B, T_out, H, W, C), h_0, c_0, ...)`` (see the class)."""
        s = self.spec
        if tuple(inputs.shape[1:]) != s.input_shape(1)[1:]:
            raise ValueError(f"inputs: expected shape (B, {', '.join(map(str, s.input_shape(1)[1:]))}), "
                             f"found {tuple(inputs.shape)}")
        _, *states = self.encoder(space_to_depth(inputs, s.patch_size))
        seq, *finals = self.forecaster(None, initial_state=states, steps=s.t_out)
        return (depth_to_space(self._head(seq), s.patch_size), *finals)

    def _head(self, seq: Any) -> Any:
        """The 1x1 convolution + bias over every step at once: ``(B, T_out, h, w, sum F)`` -> ``(..., p*p*C)``."""
        t, h, w, f = seq.shape[1:]
        z = ops.conv(ops.reshape(seq, (-1, h, w, f)), self.head_kernel, strides=1, padding="valid",
                     data_format="channels_last")
        return ops.reshape(ops.add(z, self.head_bias), (-1, t, h, w, z.shape[-1]))

    def predictions(self, logits: Any) -> Any:
        """The output activation: ``sigmoid(logits)``, or the logits themselves for ``linear``."""
        return ops.sigmoid(logits) if self.spec.output_activation == "sigmoid" else logits

    def loss_from_logits(self, logits: Any, targets: Any) -> Any:
        """The mean loss: ``mean(softplus(z) - y*z)`` (BCE from logits, stable for any z) or ``mean((z - y)**2)``.

        softplus is ``-log_sigmoid(-z)``: exact and float64-preserving on every backend, unlike ``ops.logaddexp``
        (float32 on JAX and torch for float64 inputs) and torch's ``softplus`` (which returns z itself above 20).
        """
        targets = ops.cast(targets, logits.dtype)
        if self.spec.output_activation == "sigmoid":
            softplus = ops.negative(ops.log_sigmoid(ops.negative(logits)))
            return _mean(ops.subtract(softplus, ops.multiply(targets, logits)))
        return _mean(ops.square(ops.subtract(logits, targets)))

    # -- weights ----------------------------------------------------------------------------------

    def canonical_variables(self) -> dict[str, Any]:
        """v2 weight-file key -> the ``keras.Variable`` holding it."""
        out = {f"encoder/{k}": v for k, v in self.encoder.canonical_variables().items()}
        out.update({f"forecaster/{k}": v for k, v in self.forecaster.canonical_variables().items()})
        out.update({"head/kernel": self.head_kernel, "head/bias": self.head_bias})
        return out

    def set_canonical_weights(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Assign v2 arrays (exactly the keys and shapes of :meth:`canonical_variables`, any float dtype)."""
        assign_named(self.canonical_variables(), arrays)

    def get_canonical_weights(self) -> dict[str, np.ndarray]:
        """v2 key -> NumPy copy of the weight, in the variables' dtype."""
        return named_numpy(self.canonical_variables())

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["spec"] = self.spec.to_meta()
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> EncoderForecaster:
        config = dict(config)
        return cls(config.pop("spec"), **config)


# ---------------------------------------------------------------------------------------------
# The runner
# ---------------------------------------------------------------------------------------------


class ModelRunner:
    """:class:`EncoderForecaster` on NumPy arrays, built from canonical :class:`ModelWeights`.

    ``dtype``: ``"float32"`` or ``"float64"`` (on JAX float64 switches on ``jax_enable_x64`` process-wide).
    ``device``, ``jit``, ``allow_tf32``: as for :class:`~implementations.keras_impl.runner.Runner` (the same
    device choice, precision context and per-backend tracing / gradient helpers). ``model`` is the Keras model.
    """

    framework = "keras"

    def __init__(
        self,
        weights: ModelWeights,
        *,
        dtype: str = "float32",
        device: str | None = None,
        jit: bool = True,
        allow_tf32: bool = False,
    ) -> None:
        if dtype not in ("float32", "float64"):
            raise api.InputError(f"dtype: expected 'float32' or 'float64', found {dtype!r}")
        self.weights = weights
        self.dtype = dtype
        if dtype == "float64":
            _enable_float64()
        self._candidate = resolve_device(device)
        self.jit = bool(jit)
        self.allow_tf32 = bool(allow_tf32)
        self._compiled: dict[tuple[Any, ...], Callable[..., Any]] = {}
        with self._scope():
            self.model = EncoderForecaster(weights.spec, dtype=dtype, name="encoder_forecaster")
            self.model.set_canonical_weights(weights.arrays)
        key_of = {id(v): k for k, v in self.model.canonical_variables().items()}
        self._keys = [key_of[id(v)] for v in self.model.trainable_variables]

    @property
    def device(self) -> str:
        """``cpu`` or ``gpu:N``."""
        return self._candidate.id

    def _scope(self) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        stack.enter_context(keras.device(self._candidate.handle))
        stack.enter_context(precision(self._candidate, self.allow_tf32))
        return stack

    def _function(self, kind: str, shape: tuple[int, ...]) -> Callable[..., Any]:
        """``forward(values, x) -> (logits, predictions, h_0, c_0, ...)`` or
        ``value_and_grad(values, x, y) -> (loss, grads of values, grad of x)``; one trace per input shape."""
        key = (kind, shape)
        if key not in self._compiled:
            model = self.model

            def outputs(values: list[Any], x: Any) -> Any:
                out, _ = model.stateless_call(values, [], x)
                return out

            def forward(values: list[Any], x: Any) -> Any:
                logits, *states = outputs(values, x)
                return (logits, model.predictions(logits), *states)

            def loss(values: list[Any], x: Any, y: Any) -> Any:
                return model.loss_from_logits(outputs(values, x)[0], y)

            if kind == "forward":
                self._compiled[key] = _backend_inference(forward, jit=self.jit)
            else:
                fn = _backend_value_and_grad(loss)
                self._compiled[key] = _backend_compile(fn) if self.jit else fn
        return self._compiled[key]

    def _check(self, x: Any, name: str, want: tuple[int, ...], batch: int | None = None) -> np.ndarray:
        """A plain floating NumPy array of shape ``(B, *want[1:])`` (B = ``batch`` when given), in the dtype."""
        if not isinstance(x, np.ndarray) or isinstance(x, np.ma.MaskedArray) or x.dtype.kind != "f":
            raise api.InputError(f"{name}: expected a plain floating NumPy array, found {type(x).__name__}")
        if x.ndim != 5 or tuple(x.shape[1:]) != want[1:] or x.shape[0] < 1 or batch not in (None, x.shape[0]):
            b = "B >= 1" if batch is None else f"B = {batch}"
            raise api.InputError(f"{name}: expected shape (B, {', '.join(map(str, want[1:]))}) with {b}, "
                                 f"found {x.shape}")
        return np.ascontiguousarray(x, dtype=self.dtype)

    def _numpy(self, t: Any) -> np.ndarray:
        """A result as NumPy; it must already be in the runner dtype (a silent downcast is a bug)."""
        out = np.asarray(ops.convert_to_numpy(t))
        if out.dtype != self.dtype:
            raise RuntimeError(f"the {keras.backend.backend()} backend returned {out.dtype}, expected {self.dtype}")
        return out

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray]]:
        """Frames ``(B, T_in, H, W, C)`` -> ``(logits, predictions, [h_k], [c_k])`` as NumPy in the runner dtype."""
        x = self._check(x, "frames", self.weights.spec.input_shape(1))
        with self._scope():
            fn = self._function("forward", tuple(x.shape))
            logits, preds, *states = fn([v.value for v in self.model.trainable_variables],
                                        ops.convert_to_tensor(x, dtype=self.dtype))
            states = [self._numpy(s) for s in states]
            return self._numpy(logits), self._numpy(preds), states[0::2], states[1::2]

    def value_and_grad(self, x: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        """The loss against targets ``y`` ``(B, T_out, H, W, C)`` and its gradient w.r.t. every v2 weight array
        (keyed as in the weight file) and ``"input"`` (the frames)."""
        spec = self.weights.spec
        x = self._check(x, "frames", spec.input_shape(1))
        y = self._check(y, "targets", spec.output_shape(1), batch=x.shape[0])
        with self._scope():
            fn = self._function("value_and_grad", tuple(x.shape))
            tensor = [ops.convert_to_tensor(a, dtype=self.dtype) for a in (x, y)]
            value, grads, gx = fn([v.value for v in self.model.trainable_variables], *tensor)
            by_key = {key: self._numpy(g) for key, g in zip(self._keys, grads)}
            out = {k: by_key[k] for k in self.weights.arrays}
            out["input"] = self._numpy(gx)
            return float(ops.convert_to_numpy(value)), out

    def export_weights(self) -> ModelWeights:
        """The model's current weights as canonical :class:`ModelWeights` in the runner dtype (bit-identical to the
        weights given when their dtype is the runner's; ``meta_extra`` is kept)."""
        arrays = self.model.get_canonical_weights()
        ordered = {k: arrays[k] for k in self.weights.arrays}
        return make_model_weights(self.weights.spec, ordered, copy.deepcopy(self.weights.meta_extra))
