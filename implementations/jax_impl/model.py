"""ConvLSTM in JAX: the pure functional core and the Flax NNX modules over it.

* Functional core -- :func:`convlstm_apply` / :func:`layer_apply` / :func:`layer_step`. Parameters are a pytree: one
  dict per layer keyed by the canonical short names (``kernel`` (*k, C_in, 4F), ``recurrent_kernel`` (*k, F, 4F),
  ``bias`` (4F,), ``peephole_{i,f,o}`` (F,) or (*S', F)), i.e. exactly the arrays of
  :meth:`Weights.layer <implementations.weights.Weights.layer>`; kernels are HWIO and used as stored. Convolutions
  use explicit TF/XLA 'same' padding from :meth:`LayerSpec.input_padding` / :meth:`LayerSpec.recurrent_padding`.
  Each layer's input convolution is hoisted out of the time loop (one convolution over all T*B frames); only the
  recurrent convolution runs inside ``jax.lax.scan``. From a zero initial state the first step runs before the scan
  without the recurrent convolution (its input is exactly 0). On the CPU the convolutions' backward pass is the one
  of :mod:`.loop`. A ``no_input`` stack's first layer (the encoder-forecaster's forecaster, :mod:`.nowcast`) takes
  no frames and runs a given number of steps from a given state, its gates' input part being the bias alone.
* :class:`ConvLSTM` -- a ``flax.nnx.Module`` holding the weights as ``nnx.Param`` s.

Loop strategy: the single knob is ``unroll`` (given to ``jax.lax.scan``): ``True`` or ``"full"`` unrolls the time loop
completely, an int ``n >= 1`` keeps a while loop whose body holds ``n`` steps (``1`` or ``False`` = fully rolled). It
is normalised to ``"full"`` or an int, because ``True == 1`` (and hashes alike) would otherwise make jit's cache
confuse full unrolling with a rolled loop. The default is ``"full"`` (:data:`DEFAULT_UNROLL`): on the CPU,
backpropagating through a rolled XLA while loop is many times slower than through the unrolled program, and the
forward pass is no slower unrolled; compile time grows with T, so pass ``unroll=1`` (or a small int) for long
sequences.

Float64: JAX computes in float32 unless ``jax_enable_x64`` is set (the runner sets it when float64 is requested).
Precision: float32 convolutions use ``lax.Precision.HIGHEST`` by default, so that GPUs do not silently use TF32.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from .. import api
from ..spec import HARD_SIGMOID_DIVISOR, HARD_SIGMOID_KERAS2_SLOPE, LayerSpec, StackSpec
from ..weights import Weights, make_weights
from .loop import DEFAULT_BACKWARD_CHUNK, BackwardChunk, conv_cpu_backward, resolve_backward_chunk

__all__ = [
    "DEFAULT_PRECISION",
    "DEFAULT_UNROLL",
    "PRECISIONS",
    "ConvLSTM",
    "ConvLSTMLayer",
    "check_unroll",
    "conv_nd",
    "convlstm_apply",
    "lax_precision",
    "layer_apply",
    "layer_step",
    "params_from_weights",
]

#: Time-loop strategy used when none is given: ``"full"`` = fully unrolled ``lax.scan`` (module docstring).
DEFAULT_UNROLL: bool | int | str = "full"
#: Convolution precision used when none is given: full float32 (no TF32 on GPUs), as float32 parity needs.
DEFAULT_PRECISION = "highest"
#: Precision names accepted wherever a precision is given.
PRECISIONS = {
    "default": lax.Precision.DEFAULT,
    "high": lax.Precision.HIGH,
    "highest": lax.Precision.HIGHEST,
}

#: Per-layer parameter pytree: canonical short name -> array.
LayerParams = Mapping[str, jax.Array]
#: Per-layer (h, c) pair, each (B, *S', F).
State = tuple[jax.Array, jax.Array]
#: Loop strategy: ``True``/``"full"`` (full unroll), ``False`` (= 1) or an int >= 1 steps per iteration.
Unroll = bool | int | str

# The element-wise functions of implementations.spec.
_ACTIVATIONS = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "linear": lambda x: x,
}
_RECURRENT_ACTIVATIONS = {
    "sigmoid": jax.nn.sigmoid,
    # Keras 3: relu6(x + 3) / 6 == clip(x / 6 + 0.5, 0, 1)
    "hard_sigmoid": lambda x: jnp.clip(x / HARD_SIGMOID_DIVISOR + 0.5, 0.0, 1.0),
    # Keras 2 / tf.keras
    "hard_sigmoid_keras2": lambda x: jnp.clip(HARD_SIGMOID_KERAS2_SLOPE * x + 0.5, 0.0, 1.0),
}


def check_unroll(unroll: Any) -> int | str:
    """Normalise a loop strategy to ``"full"`` or an int >= 1 (never a bool: ``True == 1``)."""
    if isinstance(unroll, (bool, np.bool_)):
        return "full" if unroll else 1
    if isinstance(unroll, str) and unroll == "full":
        return "full"
    if isinstance(unroll, (int, np.integer)) and unroll >= 1:
        return int(unroll)
    raise api.InputError(f"unroll: expected True/False, 'full' or an int >= 1, found {unroll!r}")


def lax_precision(precision: str | lax.Precision | None) -> lax.Precision | None:
    """A precision name (:data:`PRECISIONS`), a ``lax.Precision`` or None -> what ``lax`` takes."""
    if precision is None or isinstance(precision, lax.Precision):
        return precision
    if precision not in PRECISIONS:
        raise api.InputError(f"precision: expected one of {sorted(PRECISIONS)}, found {precision!r}")
    return PRECISIONS[precision]


def conv_nd(
    x: jax.Array,
    kernel: jax.Array,
    strides: Sequence[int],
    dilation: Sequence[int],
    padding: Sequence[tuple[int, int]],
    precision: str | lax.Precision | None = DEFAULT_PRECISION,
    backward_chunk: int | None = None,
    im2col: bool = False,
) -> jax.Array:
    """Cross-correlation of ``x`` (N, *S, C_in) with ``kernel`` (*k, C_in, C_out) -> (N, *S', C_out).

    ``padding``: explicit (low, high) per spatial axis; ``dilation`` is the kernel (rhs) dilation.
    ``im2col``: when :func:`~.loop.im2col_pays` for this convolution, its kernel gradient is one matrix product per
    :data:`~.loop.IM2COL_FRAMES` frames, and ``backward_chunk`` is not used. Otherwise ``backward_chunk``: an int n
    runs the gradient convolutions on n images at a time when N > n; None: plain ``lax`` autodiff. Both are a
    ``jax.custom_vjp`` (reverse mode only, see :mod:`.loop`).
    """
    padding = tuple(tuple(p) for p in padding)
    return conv_cpu_backward(
        x, kernel, tuple(strides), tuple(dilation), padding, lax_precision(precision), backward_chunk, im2col
    )


def layer_step(
    layer: LayerSpec,
    params: LayerParams,
    zx: jax.Array,
    h: jax.Array | None,
    c: jax.Array | None,
    precision: str | lax.Precision | None = DEFAULT_PRECISION,
    im2col: bool = False,
) -> State:
    """One time step given the input-conv pre-activation ``zx`` (B, *S', 4F), bias included.

    ``h``, ``c``: previous state (B, *S', F), or both None for a zero state (the recurrent conv and
    the i/f peephole terms are then exactly 0 and skipped). ``im2col``: see :func:`conv_nd` (the recurrent
    convolution's kernel gradient). Returns ``(h_t, c_t)``, each (B, *S', F).
    """
    act = _ACTIVATIONS[layer.activation]
    rec = _RECURRENT_ACTIVATIONS[layer.recurrent_activation]
    ones = (1,) * layer.rank
    z = zx
    if h is not None:
        z = z + conv_nd(
            h, params["recurrent_kernel"], ones, ones, layer.recurrent_padding(), precision, im2col=im2col
        )
    zi, zf, zc, zo = jnp.split(z, 4, axis=-1)
    if layer.peephole is not None and c is not None:
        zi = zi + params["peephole_i"] * c
        zf = zf + params["peephole_f"] * c
    i_t = rec(zi)
    c_t = i_t * act(zc) if c is None else rec(zf) * c + i_t * act(zc)
    if layer.peephole is not None:
        zo = zo + params["peephole_o"] * c_t
    o_t = rec(zo)
    h_t = o_t * act(c_t)
    return h_t, c_t


def _no_input_preactivation(layer: LayerSpec, params: LayerParams, state: State | None, steps: int | None) -> jax.Array:
    """The input part of the gates of a layer with no input, ``(steps, B, *S', 4F)``: the bias (or 0) at every step.

    The input-convolution term is absent (its kernel is empty), so only the recurrent convolution of
    :func:`layer_step` and the bias remain. The state fixes the batch and spatial shape, hence it is required.
    """
    if state is None:
        raise api.InputError("a layer with no input needs an initial state (h0, c0): it fixes the batch and size")
    if isinstance(steps, (bool, np.bool_)) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise api.InputError(f"steps: expected an int >= 1 for a layer with no input, found {steps!r}")
    h0 = state[0]
    shape = (int(steps), *h0.shape[:-1], 4 * layer.filters)
    if layer.use_bias:
        return jnp.broadcast_to(params["bias"].astype(h0.dtype), shape)
    return jnp.zeros(shape, h0.dtype)


def layer_apply(
    layer: LayerSpec,
    params: LayerParams,
    frames: jax.Array | None,
    state: State | None = None,
    *,
    unroll: Unroll = DEFAULT_UNROLL,
    precision: str | lax.Precision | None = DEFAULT_PRECISION,
    backward_chunk: BackwardChunk = DEFAULT_BACKWARD_CHUNK,
    steps: int | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Run one layer over TIME-MAJOR ``frames`` (T, B, *S, C) in the given order.

    ``frames=None`` runs a layer with no input (a ``no_input`` stack's first layer, the forecaster's layer 0) for
    ``steps`` steps from ``state`` (required): its gates are ``conv(h_{t-1}, R) + b`` (:func:`_no_input_preactivation`);
    the rest of the step is the same code, so ordinary layers' programs are unchanged.

    ``state``: initial ``(h0, c0)``, each (B, *S', F); zeros when None. The input convolution runs
    once over all T*B frames (reshaped to (T*B, *S, C)); ``lax.scan`` (with ``unroll``) runs the
    recurrent part. ``backward_chunk`` (:mod:`.loop`) applies to the input convolution's gradient;
    when it resolves to an int (the CPU), 3x3 convolutions wide enough for :func:`~.loop.im2col_pays`, input and
    recurrent, take their kernel gradients as matrix products instead.
    Returns ``(sequence (T, B, *S', F), h_T, c_T)``.
    """
    if frames is None:
        zx = _no_input_preactivation(layer, params, state, steps)
        t = zx.shape[0]
        im2col = resolve_backward_chunk(backward_chunk, frames=t * zx.shape[1]) is not None
    else:
        t, b, *spatial, c_in = frames.shape
        chunk = resolve_backward_chunk(backward_chunk, frames=t * b)
        im2col = chunk is not None
        zx = conv_nd(
            frames.reshape(t * b, *spatial, c_in),
            params["kernel"],
            layer.strides,
            layer.dilation_rate,
            layer.input_padding(spatial),
            precision,
            chunk,
            im2col=im2col,
        )
        if layer.use_bias:
            zx = zx + params["bias"]
        zx = zx.reshape(t, b, *zx.shape[1:])
    first = None
    if state is None:
        # From a zero state the first step needs no recurrent conv: run it before the scan.
        state = layer_step(layer, params, zx[0], None, None, precision, im2col)
        first, zx = state[0], zx[1:]
        if t == 1:
            return first[None], state[0], state[1]

    def step(carry: State, zx_t: jax.Array) -> tuple[State, jax.Array]:
        h_t, c_t = layer_step(layer, params, zx_t, carry[0], carry[1], precision, im2col)
        return (h_t, c_t), h_t

    strategy = check_unroll(unroll)
    (h, c), seq = lax.scan(step, tuple(state), zx, unroll=True if strategy == "full" else strategy)
    if first is not None:
        seq = jnp.concatenate([first[None], seq], axis=0)
    return seq, h, c


def convlstm_apply(
    spec: StackSpec,
    params: Sequence[LayerParams],
    x: jax.Array | None,
    initial_state: Sequence[State] | None = None,
    *,
    go_backwards: bool = False,
    unroll: Unroll = DEFAULT_UNROLL,
    precision: str | lax.Precision | None = DEFAULT_PRECISION,
    backward_chunk: BackwardChunk = DEFAULT_BACKWARD_CHUNK,
    steps: int | None = None,
) -> tuple[jax.Array, list[jax.Array], list[jax.Array]]:
    """Run the stack on ``x`` (B, T, *S, C). Pure and jit-able (``spec`` and the options are static).

    ``params[i]``: layer i's arrays by short name. ``initial_state[i]``: ``(h0, c0)``, each
    (B, *S'_i, F_i), zeros when None. ``go_backwards`` (Keras semantics): every layer processes
    t = T-1 ... 0 and emits its sequence in processing order; the next layer reads it as given.
    A ``spec.no_input`` stack takes ``x=None``, ``steps`` and an ``initial_state``: its first layer reads no input
    (:func:`layer_apply`) and runs ``steps`` steps (``go_backwards`` then applies from layer 1 on).
    Returns ``(sequence (B, T, *S', F_last), [h_i (B, *S'_i, F_i)], [c_i])``.
    """
    if spec.no_input != (x is None):
        raise api.InputError(
            "x: a stack with no input (no_input=True) takes x=None and steps" if spec.no_input
            else "x: expected frames (B, T, *S, C), found None (only a no_input stack runs without input)"
        )
    seq = None if x is None else jnp.moveaxis(x, 1, 0)  # time-major inside: scan runs over the leading axis
    hs, cs = [], []
    for i, layer in enumerate(spec.layers):
        if go_backwards and seq is not None:
            seq = jnp.flip(seq, axis=0)
        state = None if initial_state is None else initial_state[i]
        seq, h, c = layer_apply(
            layer, params[i], seq, state, unroll=unroll, precision=precision, backward_chunk=backward_chunk,
            steps=steps,
        )
        hs.append(h)
        cs.append(c)
    return jnp.moveaxis(seq, 0, 1), hs, cs


def params_from_weights(weights: Weights, dtype: Any = None) -> list[dict[str, np.ndarray]]:
    """Canonical weights -> the core's parameter pytree (NumPy, cast to ``dtype`` when given)."""
    out = []
    for i in range(len(weights.spec.layers)):
        layer = weights.layer(i)
        out.append({k: (v if dtype is None else np.asarray(v, dtype=dtype)) for k, v in layer.items()})
    return out


# ---------------------------------------------------------------------------------------------
# Flax NNX modules
# ---------------------------------------------------------------------------------------------

class ConvLSTMLayer(nnx.Module):
    """One layer's weights as ``nnx.Param`` attributes named canonically (``kernel``, ``bias`` ...)."""

    def __init__(self, layer: LayerSpec, arrays: Mapping[str, Any]) -> None:
        self.layer = layer
        self.names = tuple(sorted(arrays))
        for name in self.names:
            setattr(self, name, nnx.Param(jnp.asarray(arrays[name])))

    def params(self) -> dict[str, jax.Array]:
        """Short name -> array (the functional core's per-layer pytree)."""
        return {name: getattr(self, name)[...] for name in self.names}


class ConvLSTM(nnx.Module):
    """A ConvLSTM stack as a Flax NNX module; ``__call__`` runs :func:`convlstm_apply`.

    ``params``: one mapping per layer, canonical short name -> array (see :func:`params_from_weights`;
    arrays are taken as given, so cast float64 NumPy arrays yourself unless x64 is enabled).
    ``unroll`` / ``precision`` / ``backward_chunk``: see :func:`convlstm_apply`; they are static (part of the
    graphdef).
    """

    def __init__(
        self,
        spec: StackSpec,
        params: Sequence[Mapping[str, Any]],
        *,
        unroll: Unroll = DEFAULT_UNROLL,
        precision: str = DEFAULT_PRECISION,
        backward_chunk: BackwardChunk = DEFAULT_BACKWARD_CHUNK,
    ) -> None:
        if len(params) != len(spec.layers):
            raise api.InputError(f"params: expected {len(spec.layers)} layer(s), found {len(params)}")
        lax_precision(precision)
        self.spec = spec
        self.unroll = check_unroll(unroll)
        self.precision = precision
        resolve_backward_chunk(backward_chunk)  # validate now; "auto" is resolved at trace time
        self.backward_chunk = backward_chunk
        self.layers = nnx.List([ConvLSTMLayer(layer, p) for layer, p in zip(spec.layers, params)])

    @classmethod
    def from_weights(
        cls,
        weights: Weights,
        *,
        dtype: Any = None,
        device: jax.Device | None = None,
        unroll: Unroll = DEFAULT_UNROLL,
        precision: str = DEFAULT_PRECISION,
        backward_chunk: BackwardChunk = DEFAULT_BACKWARD_CHUNK,
    ) -> ConvLSTM:
        """Build from canonical weights, cast to ``dtype`` (default: the weights' own) on ``device``."""
        params = params_from_weights(weights, dtype)
        if device is not None:
            params = jax.device_put(params, device)
        return cls(weights.spec, params, unroll=unroll, precision=precision, backward_chunk=backward_chunk)

    def params(self) -> list[dict[str, jax.Array]]:
        """The parameter pytree the functional core takes: one dict per layer."""
        return [layer.params() for layer in self.layers]

    def to_weights(self, meta_extra: dict[str, Any] | None = None) -> Weights:
        """Canonical :class:`Weights` (NumPy copies of the current parameters)."""
        arrays = {
            f"layers/{i}/{name}": np.array(value) for i, p in enumerate(self.params()) for name, value in p.items()
        }
        return make_weights(self.spec, arrays, meta_extra)

    def __call__(
        self,
        x: jax.Array | None,
        initial_state: Sequence[State] | None = None,
        *,
        go_backwards: bool = False,
        steps: int | None = None,
    ) -> tuple[jax.Array, list[jax.Array], list[jax.Array]]:
        """``x`` (B, T, *S, C) -> ``(sequence (B, T, *S', F), [h_i], [c_i])``; see :func:`convlstm_apply` (a
        ``no_input`` stack takes ``x=None``, ``steps`` and an initial state)."""
        return convlstm_apply(
            self.spec,
            self.params(),
            x,
            initial_state,
            go_backwards=go_backwards,
            unroll=self.unroll,
            precision=self.precision,
            backward_chunk=self.backward_chunk,
            steps=steps,
        )
