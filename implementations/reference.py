"""The float64 NumPy reference: the oracle every implementation is tested against.

Short and literal: it follows the equations of :mod:`implementations.spec` line by line, one
time step at a time, with a direct N-D convolution. Speed is not a goal.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from .api import (
    ForwardResult,
    InputError,
    ProbeLike,
    check_initial_state,
    check_input,
    check_probe,
    select_output,
)
from .spec import NUMPY_ACTIVATIONS, NUMPY_RECURRENT_ACTIVATIONS, LayerSpec
from .weights import Weights


def conv_nd(
    x: np.ndarray,
    kernel: np.ndarray,
    strides: Sequence[int],
    dilation: Sequence[int],
    padding: Sequence[tuple[int, int]],
) -> np.ndarray:
    """Cross-correlation of ``x`` (B, *S, C_in) with ``kernel`` (*k, C_in, C_out), explicit padding."""
    rank = kernel.ndim - 2
    x = np.pad(x, [(0, 0), *padding, (0, 0)])
    in_sizes = x.shape[1:-1]
    ks = kernel.shape[:rank]
    out_sizes = [
        (n - (k - 1) * d - 1) // s + 1 for n, k, s, d in zip(in_sizes, ks, strides, dilation)
    ]
    out = np.zeros((x.shape[0], *out_sizes, kernel.shape[-1]), dtype=np.float64)
    for offset in itertools.product(*(range(k) for k in ks)):
        window = tuple(
            slice(o * d, o * d + (m - 1) * s + 1, s)
            for o, d, s, m in zip(offset, dilation, strides, out_sizes)
        )
        out += np.tensordot(x[(slice(None), *window)], kernel[offset], axes=([-1], [0]))
    return out


def layer_step(
    layer: LayerSpec,
    arrays: dict[str, np.ndarray],
    zx: np.ndarray,
    h: np.ndarray,
    c: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """One step given the input-conv pre-activation ``zx`` (bias included). Returns (h_t, c_t)."""
    act = NUMPY_ACTIVATIONS[layer.activation]
    rec = NUMPY_RECURRENT_ACTIVATIONS[layer.recurrent_activation]
    z = zx + conv_nd(h, arrays["recurrent_kernel"], [1] * layer.rank, [1] * layer.rank, layer.recurrent_padding())
    zi, zf, zc, zo = np.split(z, 4, axis=-1)
    if layer.peephole is not None:
        zi = zi + arrays["peephole_i"] * c
        zf = zf + arrays["peephole_f"] * c
    i_t = rec(zi)
    f_t = rec(zf)
    c_t = f_t * c + i_t * act(zc)
    if layer.peephole is not None:
        zo = zo + arrays["peephole_o"] * c_t
    o_t = rec(zo)
    h_t = o_t * act(c_t)
    return h_t, c_t


def forward(
    weights: Weights,
    x: np.ndarray,
    *,
    initial_state: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    return_sequences: bool = True,
    go_backwards: bool = False,
) -> ForwardResult:
    """Run the stack in float64. ``x``: (B, T, *S, C). See :class:`~implementations.api.ForwardResult`.

    ``go_backwards`` (Keras semantics): every layer processes t = T-1 ... 0 and its output sequence
    is in processing order; the next layer reads that sequence as given.
    """
    spec = weights.spec
    x, states = check_input(weights, x, "float64")
    init = check_initial_state(weights, initial_state, x.shape[0], states, "float64")
    w64 = weights.astype(np.float64)
    seq = x
    hs, cs = [], []
    for i, layer in enumerate(spec.layers):
        arrays = w64.layer(i)
        frames = seq[:, ::-1] if go_backwards else seq
        b, t = frames.shape[:2]
        shape = (b, *states[i], layer.filters)
        h, c = (np.zeros(shape), np.zeros(shape)) if init is None else init[i]
        outs = []
        for step in range(t):
            zx = conv_nd(
                frames[:, step],
                arrays["kernel"],
                layer.strides,
                layer.dilation_rate,
                layer.input_padding(frames.shape[2:-1]),
            )
            if layer.use_bias:
                zx = zx + arrays["bias"]
            h, c = layer_step(layer, arrays, zx, h, c)
            outs.append(h)
        seq = np.stack(outs, axis=1)
        hs.append(h)
        cs.append(c)
    return ForwardResult(select_output(seq, return_sequences), hs, cs)


def loss(
    weights: Weights,
    x: np.ndarray,
    probe: ProbeLike,
    *,
    initial_state: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    go_backwards: bool = False,
) -> float:
    """The probe's scalar loss on the float64 reference (used for finite differences).

    ``probe`` as for the runners' ``value_and_grad`` (:func:`~implementations.api.check_probe`).
    """
    result = forward(weights, x, initial_state=initial_state, go_backwards=go_backwards)
    return check_probe(weights.spec, probe, np.shape(x), "float64").value(result)


def directional_derivative(
    weights: Weights,
    x: np.ndarray,
    probe: ProbeLike,
    key: str,
    direction: np.ndarray,
    *,
    eps: float = 1e-5,
    initial_state: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    go_backwards: bool = False,
) -> float:
    """Central finite difference of the loss along ``direction`` in weight ``key`` (or ``"input"``)."""

    kwargs = {"initial_state": initial_state, "go_backwards": go_backwards}

    def at(sign: float) -> float:
        if key == "input":
            return loss(weights, x + sign * eps * direction, probe, **kwargs)
        arrays = {k: v.astype(np.float64) for k, v in weights.arrays.items()}
        if key not in arrays:
            raise InputError(f"no weight named {key!r}")
        arrays[key] = arrays[key] + sign * eps * direction
        w = Weights(weights.spec, arrays, weights.meta_extra)
        return loss(w, x, probe, **kwargs)

    return (at(1.0) - at(-1.0)) / (2 * eps)
