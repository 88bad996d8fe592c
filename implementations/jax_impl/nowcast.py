"""The encoder-forecaster nowcasting model (docs/model.md) in JAX, on the stack core of :mod:`.model`.

* :func:`encoder_forecaster_apply` -- pure and jit-able: space-to-depth, the encoder (:func:`~.model.convlstm_apply`
  from zero states), the forecaster started from the encoder's final ``(h, c)`` per layer (:func:`~.model.layer_apply`
  per layer, its layer 0 with no input), the 1x1 head over the concatenated forecaster h's of all ``T_out`` steps
  as one contraction after the loop, depth-to-space and the output activation. :func:`model_loss` is the loss.
* Parameters: ``{"encoder": [layer dicts], "forecaster": [layer dicts], "head": {"kernel", "bias"}}``, the layer
  dicts exactly the stack core's; :func:`model_params_from_weights` / :func:`model_params_to_arrays` convert from/to
  the canonical v2 names (``encoder/layers/0/kernel`` ... ``head/bias``).
* :class:`EncoderForecaster` -- a Flax NNX module (two :class:`~.model.ConvLSTM` stacks and the head).
* :class:`ModelRunner` -- NumPy in/out, jitted ``forward`` and ``value_and_grad`` on one device, float32/float64,
  with the stack runner's options (``unroll``, ``precision``, ``backward_chunk``) and x64 handling.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from .. import api
from ..model_spec import ModelSpec
from ..model_weights import ModelWeights, make_model_weights
from .loop import DEFAULT_BACKWARD_CHUNK, BackwardChunk, resolve_backward_chunk
from .model import (
    DEFAULT_PRECISION,
    DEFAULT_UNROLL,
    ConvLSTM,
    Unroll,
    check_unroll,
    convlstm_apply,
    lax_precision,
    layer_apply,
    params_from_weights,
)
from .runner import resolve_device, resolve_precision

__all__ = [
    "EncoderForecaster",
    "ModelRunner",
    "depth_to_space",
    "encoder_forecaster_apply",
    "model_loss",
    "model_params_from_weights",
    "model_params_to_arrays",
    "space_to_depth",
]

STACKS = ("encoder", "forecaster")


# ---------------------------------------------------------------------------------------------
# Pure functions
# ---------------------------------------------------------------------------------------------

def space_to_depth(x: jax.Array, p: int) -> jax.Array:
    """``(..., H, W, C)`` -> ``(..., H/p, W/p, p*p*C)``; pixel ``(i*p+dy, j*p+dx, c)`` -> ``(i, j, (dy*p+dx)*C+c)``
    (TensorFlow's order, as :func:`implementations.model_spec.space_to_depth`)."""
    *lead, h, w, c = x.shape
    n = len(lead)
    y = x.reshape(*lead, h // p, p, w // p, p, c)  # (..., i, dy, j, dx, c)
    return jnp.moveaxis(y, n + 1, n + 2).reshape(*lead, h // p, w // p, p * p * c)


def depth_to_space(x: jax.Array, p: int) -> jax.Array:
    """``(..., h, w, p*p*C)`` -> ``(..., h*p, w*p, C)``: the exact inverse of :func:`space_to_depth`."""
    *lead, h, w, d = x.shape
    n = len(lead)
    y = x.reshape(*lead, h, w, p, p, d // (p * p))  # (..., i, j, dy, dx, c)
    return jnp.moveaxis(y, n + 2, n + 1).reshape(*lead, h * p, w * p, d // (p * p))


def encoder_forecaster_apply(
    params: Mapping[str, Any],
    x: jax.Array,
    spec: ModelSpec,
    *,
    unroll: Unroll = DEFAULT_UNROLL,
    precision: str | lax.Precision | None = DEFAULT_PRECISION,
    backward_chunk: BackwardChunk = DEFAULT_BACKWARD_CHUNK,
) -> tuple[jax.Array, jax.Array, list[jax.Array], list[jax.Array]]:
    """Run the model on frames ``x`` (B, T_in, H, W, C). Pure and jit-able (``spec`` and the options static).

    Returns ``(logits, predictions, [h_k], [c_k])``: logits and predictions ``(B, T_out, H, W, C)``, the final
    state of every forecaster layer ``(B, H/p, W/p, F_k)``. The forecaster runs layer by layer over all steps
    (layer k reads layer k-1's whole h sequence), which equals the step-by-step order of docs/model.md.
    """
    options = {"unroll": unroll, "precision": precision, "backward_chunk": backward_chunk}
    p = spec.patch_size
    _, enc_h, enc_c = convlstm_apply(spec.encoder, params["encoder"], space_to_depth(x, p), **options)
    seq, hs, cs, seqs = None, [], [], []
    for k, layer in enumerate(spec.forecaster.layers):
        seq, h, c = layer_apply(
            layer, params["forecaster"][k], seq, (enc_h[k], enc_c[k]), steps=spec.t_out, **options
        )
        seqs.append(seq)  # (T_out, B, H/p, W/p, F_k)
        hs.append(h)
        cs.append(c)
    cat = jnp.concatenate(seqs, axis=-1)  # (T_out, B, H/p, W/p, sum F), layer 0 first
    kernel = params["head"]["kernel"][0, 0]  # (sum F, p*p*C)
    z = jnp.einsum("tbijf,fo->tbijo", cat, kernel, precision=lax_precision(precision)) + params["head"]["bias"]
    logits = depth_to_space(jnp.moveaxis(z, 0, 1), p)
    predictions = jax.nn.sigmoid(logits) if spec.output_activation == "sigmoid" else logits
    return logits, predictions, hs, cs


def model_loss(output_activation: str, logits: jax.Array, targets: jax.Array) -> jax.Array:
    """The mean loss: BCE from the logits for ``sigmoid`` (``mean(softplus(z) - y*z)``, stable for any z), MSE for
    ``linear`` (predictions are the logits)."""
    if output_activation == "sigmoid":
        return jnp.mean(jax.nn.softplus(logits) - targets * logits)
    return jnp.mean(jnp.square(logits - targets))


# ---------------------------------------------------------------------------------------------
# Parameters <-> the canonical v2 arrays
# ---------------------------------------------------------------------------------------------

def model_params_from_weights(weights: ModelWeights, dtype: Any = None) -> dict[str, Any]:
    """Canonical v2 weights -> the parameter pytree of :func:`encoder_forecaster_apply` (NumPy, cast to ``dtype``
    when given)."""
    cast = (lambda v: v) if dtype is None else (lambda v: np.asarray(v, dtype=dtype))
    return {
        "encoder": params_from_weights(weights.encoder, dtype),
        "forecaster": params_from_weights(weights.forecaster, dtype),
        "head": {"kernel": cast(weights.head_kernel), "bias": cast(weights.head_bias)},
    }


def model_params_to_arrays(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The parameter pytree (or a gradient of it) -> canonical v2 name -> NumPy array."""
    arrays = {
        f"{name}/layers/{i}/{key}": np.array(value)
        for name in STACKS
        for i, layer in enumerate(params[name])
        for key, value in layer.items()
    }
    arrays.update({f"head/{key}": np.array(value) for key, value in params["head"].items()})
    return arrays


# ---------------------------------------------------------------------------------------------
# Flax NNX module
# ---------------------------------------------------------------------------------------------

class EncoderForecaster(nnx.Module):
    """The model as a Flax NNX module: ``encoder`` and ``forecaster`` :class:`~.model.ConvLSTM` stacks and the head
    (``head_kernel``, ``head_bias`` params); ``__call__`` runs :func:`encoder_forecaster_apply`.

    ``params``: the pytree of :func:`model_params_from_weights` (arrays taken as given). The options are static.
    """

    def __init__(
        self,
        spec: ModelSpec,
        params: Mapping[str, Any],
        *,
        unroll: Unroll = DEFAULT_UNROLL,
        precision: str = DEFAULT_PRECISION,
        backward_chunk: BackwardChunk = DEFAULT_BACKWARD_CHUNK,
    ) -> None:
        options = {"unroll": unroll, "precision": precision, "backward_chunk": backward_chunk}
        self.spec = spec
        self.encoder = ConvLSTM(spec.encoder, params["encoder"], **options)
        self.forecaster = ConvLSTM(spec.forecaster, params["forecaster"], **options)
        self.head_kernel = nnx.Param(jnp.asarray(params["head"]["kernel"]))
        self.head_bias = nnx.Param(jnp.asarray(params["head"]["bias"]))

    @classmethod
    def from_weights(
        cls,
        weights: ModelWeights,
        *,
        dtype: Any = None,
        device: jax.Device | None = None,
        unroll: Unroll = DEFAULT_UNROLL,
        precision: str = DEFAULT_PRECISION,
        backward_chunk: BackwardChunk = DEFAULT_BACKWARD_CHUNK,
    ) -> EncoderForecaster:
        """Build from canonical v2 weights, cast to ``dtype`` (default: the weights' own) on ``device``."""
        params = model_params_from_weights(weights, dtype)
        if device is not None:
            params = jax.device_put(params, device)
        return cls(weights.spec, params, unroll=unroll, precision=precision, backward_chunk=backward_chunk)

    def params(self) -> dict[str, Any]:
        """The parameter pytree :func:`encoder_forecaster_apply` takes."""
        return {
            "encoder": self.encoder.params(),
            "forecaster": self.forecaster.params(),
            "head": {"kernel": self.head_kernel[...], "bias": self.head_bias[...]},
        }

    def to_weights(self, meta_extra: dict[str, Any] | None = None) -> ModelWeights:
        """Canonical :class:`ModelWeights` (NumPy copies of the current parameters)."""
        return make_model_weights(self.spec, model_params_to_arrays(self.params()), meta_extra)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array, list[jax.Array], list[jax.Array]]:
        """``x`` (B, T_in, H, W, C) -> ``(logits, predictions, [h_k], [c_k])``; see :func:`encoder_forecaster_apply`."""
        return encoder_forecaster_apply(
            self.params(),
            x,
            self.spec,
            unroll=self.encoder.unroll,
            precision=self.encoder.precision,
            backward_chunk=self.encoder.backward_chunk,
        )


# ---------------------------------------------------------------------------------------------
# Runner
# ---------------------------------------------------------------------------------------------

@functools.partial(jax.jit, static_argnames=("graphdef",))
def _forward_jit(graphdef: Any, state: Any, x: jax.Array) -> Any:
    return nnx.merge(graphdef, state)(x)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _value_and_grad_jit(graphdef: Any, state: Any, x: jax.Array, y: jax.Array) -> Any:
    def loss(state: Any, x: jax.Array) -> jax.Array:
        model = nnx.merge(graphdef, state)
        return model_loss(model.spec.output_activation, model(x)[0], y)

    return jax.value_and_grad(loss, argnums=(0, 1))(state, x)


class ModelRunner:
    """The encoder-forecaster on one JAX device: NumPy in/out, jit-compiled.

    ``dtype``: ``"float32"`` or ``"float64"`` (which enables ``jax_enable_x64`` process-wide, as the stack
    :class:`~.runner.Runner` does). ``device``, ``unroll``, ``precision``, ``backward_chunk``: as for the stack
    runner (:func:`~.runner.resolve_device`, :data:`~.model.DEFAULT_UNROLL`, :func:`~.runner.resolve_precision`,
    :func:`~.loop.resolve_backward_chunk`).
    """

    framework = "jax"

    def __init__(
        self,
        weights: ModelWeights,
        *,
        dtype: str = "float32",
        device: Any = None,
        unroll: Unroll | None = None,
        precision: str | None = None,
        backward_chunk: BackwardChunk = DEFAULT_BACKWARD_CHUNK,
    ) -> None:
        if not isinstance(weights, ModelWeights):
            raise api.InputError(f"weights: expected ModelWeights, found {type(weights).__name__}")
        self.weights = weights
        self.spec = weights.spec
        self.dtype = api.check_dtype(dtype)
        self._np_dtype = np.dtype(self.dtype)
        self._ensure_x64()
        try:
            self._candidate = resolve_device(device)
        except (ValueError, NotImplementedError) as exc:
            raise api.InputError(f"device: {device!r} is not available to JAX ({exc})") from None
        self._device = self._candidate.handle
        self.unroll = check_unroll(DEFAULT_UNROLL if unroll is None else unroll)
        self.precision = resolve_precision(self.dtype, precision)
        # As the stack runner: "auto" stays "auto" (resolved per input size at trace time) on the default backend.
        resolve_backward_chunk(backward_chunk)  # validate
        if not (isinstance(backward_chunk, str) and self._device.platform == jax.default_backend()):
            backward_chunk = resolve_backward_chunk(backward_chunk, self._device.platform)
        self.backward_chunk = backward_chunk
        self.model = EncoderForecaster.from_weights(
            weights, dtype=self._np_dtype, device=self._device, unroll=self.unroll, precision=self.precision,
            backward_chunk=self.backward_chunk,
        )
        self._graphdef, self._state = nnx.split(self.model)

    @property
    def device_candidate(self) -> api.DeviceCandidate:
        return self._candidate

    @property
    def device(self) -> str:
        """``"cpu"`` or ``"gpu:N"``."""
        return self._candidate.id

    def _ensure_x64(self) -> None:
        if self._np_dtype == np.float64 and not jax.config.jax_enable_x64:
            jax.config.update("jax_enable_x64", True)

    def _frames(self, x: Any, name: str, want: Sequence[int]) -> jax.Array:
        if not isinstance(x, np.ndarray) or isinstance(x, np.ma.MaskedArray) or x.dtype.kind != "f":
            raise api.InputError(f"{name}: expected a floating NumPy array, found {type(x).__name__}")
        if x.ndim != 5 or tuple(x.shape[1:]) != tuple(want[1:]) or x.shape[0] < 1:
            raise api.InputError(f"{name}: expected shape (B, {', '.join(map(str, want[1:]))}), found {x.shape}")
        self._ensure_x64()
        return jax.device_put(np.asarray(x, self._np_dtype), self._device)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray]]:
        """``x`` (B, T_in, H, W, C) -> ``(logits, predictions, [h_k], [c_k])`` as NumPy arrays."""
        xd = self._frames(x, "x", self.spec.input_shape(1))
        logits, preds, hs, cs = jax.device_get(_forward_jit(self._graphdef, self._state, xd))
        return np.array(logits), np.array(preds), [np.array(h) for h in hs], [np.array(c) for c in cs]

    def value_and_grad(self, x: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        """The mean loss against targets ``y`` (B, T_out, H, W, C) and its gradients keyed by the canonical v2
        array names plus ``"input"`` (the frames')."""
        xd = self._frames(x, "x", self.spec.input_shape(1))
        yd = self._frames(y, "y", self.spec.output_shape(x.shape[0]))
        if y.shape[0] != x.shape[0]:
            raise api.InputError(f"y: expected batch {x.shape[0]} like x, found {y.shape[0]}")
        loss, (grad_state, grad_x) = _value_and_grad_jit(self._graphdef, self._state, xd, yd)
        grads = model_params_to_arrays(jax.device_get(nnx.merge(self._graphdef, grad_state).params()))
        grads["input"] = np.array(jax.device_get(grad_x))
        return float(loss), grads

    def export_weights(self) -> ModelWeights:
        """The weights held on the device as canonical :class:`ModelWeights` in the runner's dtype (bit-identical
        to the weights given when their dtype is the runner's; ``meta_extra`` kept)."""
        return self.model.to_weights(self.weights.meta_extra)
