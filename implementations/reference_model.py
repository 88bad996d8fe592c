"""The float64 NumPy reference of the encoder-forecaster model (:mod:`implementations.model_spec`).

Literal, one step at a time, built from :mod:`implementations.reference`: the encoder is
:func:`implementations.reference.forward` on the patched frames; the forecaster calls the same per-layer code
(:func:`~implementations.reference.conv_nd`, :func:`~implementations.reference.layer_step`), except that its
layer 0 has no input-convolution term (its pre-activation from the input is the bias alone, or 0); the head is a
1x1 :func:`~implementations.reference.conv_nd`. Speed is not a goal.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from . import reference
from .api import InputError
from .model_spec import ModelSpec, depth_to_space, space_to_depth
from .model_weights import ModelWeights
from .spec import NUMPY_RECURRENT_ACTIVATIONS


@dataclasses.dataclass
class ModelResult:
    """``predictions``, ``logits``: ``(B, T_out, H, W, C)``; ``h[k]``, ``c[k]``: final state of forecaster layer k,
    ``(B, H/p, W/p, F_k)``; ``loss``: the mean loss against the targets (None without targets)."""

    predictions: np.ndarray
    logits: np.ndarray
    h: list[np.ndarray]
    c: list[np.ndarray]
    loss: float | None = None


def _check_frames(spec: ModelSpec, x: Any, name: str, want: tuple[int, ...]) -> np.ndarray:
    if not isinstance(x, np.ndarray) or isinstance(x, np.ma.MaskedArray):
        raise InputError(f"{name}: expected a plain NumPy array, found {type(x).__name__}")
    if x.dtype.kind != "f":
        raise InputError(f"{name}: expected a floating dtype, found {x.dtype}")
    if x.ndim != 5 or tuple(x.shape[1:]) != want[1:] or x.shape[0] < 1:
        raise InputError(f"{name}: expected shape (B, {', '.join(map(str, want[1:]))}) with B >= 1, found {x.shape}")
    return x.astype(np.float64)


def bce_from_logits(logits: np.ndarray, targets: np.ndarray) -> float:
    """Binary cross-entropy from logits, mean over every value: ``mean(softplus(z) - y*z)`` (stable everywhere)."""
    z = np.asarray(logits, np.float64)
    return float(np.mean(np.logaddexp(0.0, z) - np.asarray(targets, np.float64) * z))


def mse(predictions: np.ndarray, targets: np.ndarray) -> float:
    """Mean squared error over every value."""
    d = np.asarray(predictions, np.float64) - np.asarray(targets, np.float64)
    return float(np.mean(d * d))


def loss_from_logits(output_activation: str, logits: np.ndarray, targets: np.ndarray) -> float:
    """The model's loss: BCE from logits for ``sigmoid``, MSE for ``linear`` (where predictions = logits)."""
    return bce_from_logits(logits, targets) if output_activation == "sigmoid" else mse(logits, targets)


def forecaster_step(
    weights: ModelWeights, h: list[np.ndarray], c: list[np.ndarray]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """One forecaster step (float64): every layer k from its ``(h[k], c[k])``; layer 0 reads no input.

    Returns the new ``(h, c)`` lists, ``(B, H/p, W/p, F_k)`` each.
    """
    spec = weights.spec
    fc = weights.forecaster
    new_h: list[np.ndarray] = []
    new_c: list[np.ndarray] = []
    for k, layer in enumerate(spec.forecaster.layers):
        arrays = fc.layer(k)
        f4 = 4 * layer.filters
        if k == 0:  # no input: the input-convolution term is absent
            zx = np.zeros((*h[0].shape[:-1], f4))
        else:
            pad = layer.input_padding(spec.patched_size)
            zx = reference.conv_nd(new_h[k - 1], arrays["kernel"], layer.strides, layer.dilation_rate, pad)
        if layer.use_bias:
            zx = zx + arrays["bias"]
        hk, ck = reference.layer_step(layer, arrays, zx, h[k], c[k])
        new_h.append(hk)
        new_c.append(ck)
    return new_h, new_c


def head(weights: ModelWeights, h: list[np.ndarray]) -> np.ndarray:
    """The step's logits ``(B, H, W, C)``: 1x1 conv of ``concat(h[0], h[1], ...)`` + bias, then depth-to-space."""
    cat = np.concatenate(h, axis=-1)
    z = reference.conv_nd(cat, weights.head_kernel, (1, 1), (1, 1), ((0, 0), (0, 0))) + weights.head_bias
    return depth_to_space(z, weights.spec.patch_size)


def forward(weights: ModelWeights, frames: np.ndarray, targets: np.ndarray | None = None) -> ModelResult:
    """Run the model in float64. ``frames``: ``(B, T_in, H, W, C)``; ``targets``: ``(B, T_out, H, W, C)`` or None."""
    spec = weights.spec
    x = _check_frames(spec, frames, "frames", spec.input_shape(1))
    y = None if targets is None else _check_frames(spec, targets, "targets", spec.output_shape(x.shape[0]))
    if y is not None and y.shape[0] != x.shape[0]:
        raise InputError(f"targets: expected batch {x.shape[0]} like the frames, found {y.shape[0]}")
    w = weights.astype(np.float64)
    enc = reference.forward(w.encoder, space_to_depth(x, spec.patch_size), return_sequences=False)
    h = [s.copy() for s in enc.h]
    c = [s.copy() for s in enc.c]
    logits = []
    for _ in range(spec.t_out):
        h, c = forecaster_step(w, h, c)
        logits.append(head(w, h))
    z = np.stack(logits, axis=1)
    predictions = NUMPY_RECURRENT_ACTIVATIONS["sigmoid"](z) if spec.output_activation == "sigmoid" else z
    value = None if y is None else loss_from_logits(spec.output_activation, z, y)
    return ModelResult(predictions, z, h, c, value)


def loss(weights: ModelWeights, frames: np.ndarray, targets: np.ndarray) -> float:
    """The model's mean loss (BCE from logits or MSE) on the float64 reference."""
    result = forward(weights, frames, targets)
    assert result.loss is not None
    return result.loss


def directional_derivative(
    weights: ModelWeights,
    frames: np.ndarray,
    targets: np.ndarray,
    key: str,
    direction: np.ndarray,
    *,
    eps: float = 1e-5,
) -> float:
    """Central finite difference of :func:`loss` along ``direction`` in weight ``key`` (or ``"frames"``)."""

    def at(sign: float) -> float:
        if key == "frames":
            return loss(weights, frames.astype(np.float64) + sign * eps * direction, targets)
        arrays = {k: v.astype(np.float64) for k, v in weights.arrays.items()}
        if key not in arrays:
            raise InputError(f"no weight named {key!r}")
        arrays[key] = arrays[key] + sign * eps * direction
        return loss(ModelWeights(weights.spec, arrays, weights.meta_extra), frames, targets)

    return (at(1.0) - at(-1.0)) / (2 * eps)
