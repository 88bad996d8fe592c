"""The native Keras 3 model: :class:`ConvLSTMStack`, a ``keras.layers.Layer`` written with ``keras.ops`` only.

The same code runs on the TensorFlow, JAX and PyTorch backends (``KERAS_BACKEND`` picks one at import). It is
channels-last throughout: inputs ``(B, T, *S, C)``, outputs ``(B, T, *S', F)`` or ``(B, *S', F)``, states
``(B, *S', F)``. Its weights are created in the canonical layout of :mod:`implementations.weights` (the layout of
Keras' own ``ConvLSTM{1,2,3}D``): ``kernel`` ``(*k, C_in, 4F)``, ``recurrent_kernel`` ``(*k, F, 4F)``, ``bias``
``(4F,)``, peepholes ``(F,)`` ('channel') or ``(*S', F)`` ('full'); gate blocks i, f, c, o on the last axis.

The time loop itself (hoisted input convolution, step, backend-dependent forms) is in
:mod:`implementations.keras_impl.loop`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from ..spec import HARD_SIGMOID_DIVISOR, HARD_SIGMOID_KERAS2_SLOPE, PEEPHOLE_GATES, StackSpec
from . import loop

# ---------------------------------------------------------------------------------------------
# Element-wise functions: the formulas of spec.NUMPY_ACTIVATIONS / NUMPY_RECURRENT_ACTIVATIONS.
# ---------------------------------------------------------------------------------------------

@functools.cache
def _ops_tanh_downcasts_float64() -> bool:
    """Whether ``keras.ops.tanh`` returns float32 for a float64 tensor on this backend.

    It does on the JAX backend (keras 3.15): ``backend/jax/numpy.py`` casts to
    ``result_type(x.dtype, float)`` and ``backend/common/dtypes.py`` maps float64 -> float32 for every
    non-TF backend (``BIT64_TO_BIT32_DTYPE``). Probed rather than assumed, so the workaround switches
    itself off when Keras stops doing it.
    """
    return keras.backend.standardize_dtype(ops.tanh(ops.zeros((1,), dtype="float64")).dtype) != "float64"


def _tanh(x: Any) -> Any:
    """tanh that keeps the input dtype on every backend.

    Where ``ops.tanh`` would silently drop float64 to float32 (JAX backend, see
    :func:`_ops_tanh_downcasts_float64`), use the identity ``tanh(x) = 2 sigmoid(2x) - 1``:
    ``ops.sigmoid`` keeps float64, the identity is exact up to ~2 ulp of 1 (absolute), and its
    gradient is ``4 s (1 - s)``. float32, and float64 on TF and torch, take ``ops.tanh`` unchanged.
    (The other ops used here were checked for the same problem in float64 on JAX and torch:
    conv, pad, reshape, split, stack, sigmoid, relu, clip and the arithmetic operators keep float64;
    ``ops.maximum(x, 0.0)`` does NOT on torch, which is why relu is ``ops.relu``.)
    """
    if keras.backend.standardize_dtype(x.dtype) == "float64" and _ops_tanh_downcasts_float64():
        return 2.0 * ops.sigmoid(2.0 * x) - 1.0
    return ops.tanh(x)


def _linear(x: Any) -> Any:
    return x


def _hard_sigmoid(x: Any) -> Any:
    # Keras 3: relu6(x + 3) / 6 == clip(x / 6 + 0.5, 0, 1)
    return ops.clip(x / HARD_SIGMOID_DIVISOR + 0.5, 0.0, 1.0)


def _hard_sigmoid_keras2(x: Any) -> Any:
    # Keras 2 / tf.keras: clip(0.2 x + 0.5, 0, 1)
    return ops.clip(HARD_SIGMOID_KERAS2_SLOPE * x + 0.5, 0.0, 1.0)


ACTIVATIONS: dict[str, Callable[[Any], Any]] = {"tanh": _tanh, "relu": ops.relu, "linear": _linear}
RECURRENT_ACTIVATIONS: dict[str, Callable[[Any], Any]] = {
    "sigmoid": ops.sigmoid,
    "hard_sigmoid": _hard_sigmoid,
    "hard_sigmoid_keras2": _hard_sigmoid_keras2,
}


# ---------------------------------------------------------------------------------------------
# The layer
# ---------------------------------------------------------------------------------------------

@keras.saving.register_keras_serializable(package="convlstm_bench")
class UnitForgetBias(keras.initializers.Initializer):
    """Keras' ``unit_forget_bias``: a ``(4F,)`` bias that is 1 on the forget block, 0 elsewhere."""

    def __call__(self, shape: Sequence[int], dtype: Any = None) -> Any:
        f = int(shape[0]) // 4
        return ops.concatenate(
            [ops.zeros((f,), dtype=dtype), ops.ones((f,), dtype=dtype), ops.zeros((2 * f,), dtype=dtype)]
        )


def _as_spec(spec: StackSpec | Mapping[str, Any]) -> StackSpec:
    """A StackSpec from itself or its ``to_meta()`` dict (plus ``"no_input": true`` for a stack without input,
    which :meth:`ConvLSTMStack.get_config` adds since ``to_meta`` has no such field)."""
    if isinstance(spec, StackSpec):
        return spec
    return StackSpec.from_meta(spec, no_input=bool(spec.get("no_input", False)))


def assign_named(variables: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
    """Assign ``arrays`` to the Keras ``variables`` of the same names: exactly the same keys and shapes (ValueError
    naming what differs), any float dtype (cast to each variable's)."""
    if set(arrays) != set(variables):
        raise ValueError(f"expected exactly the keys {sorted(variables)}, found {sorted(arrays)}")
    for key, var in variables.items():
        value = np.asarray(arrays[key])
        if tuple(value.shape) != tuple(var.shape):
            raise ValueError(f"{key}: expected shape {tuple(var.shape)}, found {value.shape}")
        var.assign(value.astype(keras.backend.standardize_dtype(var.dtype), copy=False))


def named_numpy(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Name -> NumPy copy of each Keras variable, in the variable's dtype."""
    return {key: np.array(ops.convert_to_numpy(var)) for key, var in variables.items()}


@keras.saving.register_keras_serializable(package="convlstm_bench")
class ConvLSTMStack(keras.layers.Layer):
    """A stack of ConvLSTM layers (the equations of :mod:`implementations.spec`), channels-last.

    Args:
        spec: the :class:`~implementations.spec.StackSpec` (or its ``to_meta()`` dict).
        peephole_spatials: per layer, the state spatial shape ``S'`` of a 'full' peephole (None
            entries, or None altogether: derived from the input shape at build time).
        return_sequences: output the last layer's whole h sequence ``(B, T, *S', F)`` rather than
            its last step ``(B, *S', F)`` (the Keras default is False, as for ``ConvLSTM2D``).
        return_state: also return the final ``h, c`` of every layer: the call returns the tuple
            ``(output, h_0, c_0, h_1, c_1, ...)`` (for one layer, Keras' ``(output, h, c)``).
        go_backwards: Keras semantics: every layer processes t = T-1 ... 0 and emits its sequence in
            processing order; the next layer reads that sequence as given.
        return_all_layers: the output is the h of EVERY layer, concatenated on the channel axis (layer 0
            first; ``(..., sum F)``) rather than the last layer's (what a head over all layers reads, e.g. the
            encoder-forecaster's); all layers' states must then have the same spatial shape.
        **kwargs: ``keras.layers.Layer`` arguments (``name``, ``dtype`` ...).

    Weights are created by :meth:`build` with Keras ConvLSTM's default initialisers (glorot_uniform
    kernel, orthogonal recurrent kernel, unit-forget bias, zero peepholes) and named
    ``kernel_{i}``, ``recurrent_kernel_{i}``, ... (Keras forbids '/' in names);
    :meth:`canonical_variables` maps the canonical keys ``layers/{i}/kernel`` ... to them.

    A stack whose spec has ``no_input=True`` (the forecaster of :mod:`implementations.model_spec`) has an empty
    ``kernel_0`` ``(*k, 0, 4F)``; its layer 0 computes ``conv(h_{t-1}, R) + b`` and reads nothing: call it with
    ``inputs=None``, ``steps`` and the ``initial_state`` of every layer (they fix the batch and the state size), and
    give ``peephole_spatials`` for 'full' peepholes (there is no input shape to derive them from).
    """

    def __init__(
        self,
        spec: StackSpec | Mapping[str, Any],
        *,
        peephole_spatials: Sequence[Sequence[int] | None] | None = None,
        return_sequences: bool = False,
        return_state: bool = False,
        go_backwards: bool = False,
        return_all_layers: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.spec = _as_spec(spec)
        n = len(self.spec.layers)
        if peephole_spatials is None:
            peephole_spatials = [None] * n
        if len(peephole_spatials) != n:
            raise ValueError(f"peephole_spatials: expected {n} entries (one per layer), found {len(peephole_spatials)}")
        self.peephole_spatials: list[tuple[int, ...] | None] = [
            None if s is None else tuple(int(v) for v in s) for s in peephole_spatials
        ]
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.return_all_layers = bool(return_all_layers)
        self._params: list[dict[str, Any]] = []

    # -- weights ----------------------------------------------------------------------------------

    def build(self, input_shape: Sequence[int | None] | None = None) -> None:
        """Create the weights. ``input_shape`` ``(B, T, *S, C)`` is needed only for 'full' peepholes
        whose ``S'`` was not given as ``peephole_spatials``; other dims may be None."""
        spec = self.spec
        derived: list[tuple[int, ...] | None] = [None] * len(spec.layers)
        if input_shape is not None and not spec.no_input:
            self._check_input_shape(input_shape)
            spatial = tuple(input_shape[2:-1])
            if all(s is not None for s in spatial):
                derived = list(spec.state_spatials(spatial))
        self._params = []
        for i, layer in enumerate(spec.layers):
            f4 = 4 * layer.filters
            p = {
                "kernel": self.add_weight(
                    name=f"kernel_{i}",
                    shape=(*layer.kernel_size, spec.layer_input_channels(i), f4),
                    initializer="glorot_uniform",
                ),
                "recurrent_kernel": self.add_weight(
                    name=f"recurrent_kernel_{i}",
                    shape=(*layer.kernel_size, layer.filters, f4),
                    initializer="orthogonal",
                ),
            }
            if layer.use_bias:
                p["bias"] = self.add_weight(name=f"bias_{i}", shape=(f4,), initializer=UnitForgetBias())
            if layer.peephole is not None:
                state = self.peephole_spatials[i]
                if layer.peephole == "full":
                    if state is None:
                        state = derived[i]
                    elif derived[i] is not None and derived[i] != state:
                        raise ValueError(
                            f"layer {i}: 'full' peepholes are for a {state} state, but input shape "
                            f"{tuple(input_shape)} gives a {derived[i]} state"
                        )
                    if state is None:
                        raise ValueError(
                            f"layer {i}: a 'full' peephole needs the state's spatial shape: give "
                            "peephole_spatials or build with static spatial dims"
                        )
                    self.peephole_spatials[i] = state
                shape = layer.peephole_shape(state)
                for g in PEEPHOLE_GATES:
                    p[f"peephole_{g}"] = self.add_weight(name=f"peephole_{g}_{i}", shape=shape, initializer="zeros")
            self._params.append(p)
        got = keras.backend.standardize_dtype(self._params[0]["kernel"].dtype)
        if got != keras.backend.standardize_dtype(self.variable_dtype):
            raise ValueError(
                f"asked for {self.variable_dtype} weights, the backend made {got} "
                "(float64 on the JAX backend needs jax.config.update('jax_enable_x64', True) first)"
            )
        self.built = True

    def canonical_variables(self) -> dict[str, Any]:
        """Canonical key (``layers/{i}/kernel`` ...) -> the ``keras.Variable`` holding it."""
        return {f"layers/{i}/{name}": var for i, p in enumerate(self._params) for name, var in p.items()}

    def set_canonical_weights(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Assign canonical arrays (the keys and shapes of :meth:`canonical_variables`, any float dtype)."""
        assign_named(self.canonical_variables(), arrays)

    def get_canonical_weights(self) -> dict[str, np.ndarray]:
        """Canonical key -> NumPy copy of the weight, in the variables' dtype."""
        return named_numpy(self.canonical_variables())

    # -- computation ------------------------------------------------------------------------------

    def _check_input_shape(self, shape: Sequence[int | None]) -> None:
        rank = self.spec.rank
        if len(shape) != rank + 3:
            raise ValueError(f"inputs: expected rank {rank + 3} (B, T, *S, C), found shape {tuple(shape)}")
        if shape[-1] is not None and shape[-1] != self.spec.input_channels:
            raise ValueError(f"inputs: expected {self.spec.input_channels} channels (last axis), found {shape[-1]}")

    def _initial_states(self, initial_state: Any) -> list[tuple[Any, Any] | tuple[None, None]]:
        n = len(self.spec.layers)
        if initial_state is None:
            return [(None, None)] * n
        items = list(initial_state)
        if len(items) == n and all(isinstance(s, (list, tuple)) for s in items):
            pairs = [tuple(s) for s in items]
        elif len(items) == 2 * n:
            pairs = [(items[2 * i], items[2 * i + 1]) for i in range(n)]
        else:
            raise ValueError(
                f"initial_state: expected {n} (h, c) pairs or the flat list [h_0, c_0, ...], found {len(items)} items"
            )
        dtype = self.compute_dtype
        return [(ops.cast(h, dtype), ops.cast(c, dtype)) for h, c in pairs]

    def _check_steps(self, inputs: Any, initial_state: Any, steps: Any) -> int | None:
        """Check the call's ``inputs`` / ``steps`` pairing: ``steps`` (returned) for a stack without input, where
        ``inputs`` must be None and ``initial_state`` given; None for any other stack, where ``steps`` is refused."""
        if not self.spec.no_input:
            if steps is not None:
                raise ValueError("steps: only for a stack whose first layer reads no input; T comes from the inputs")
            self._check_input_shape(inputs.shape)
            if any(d is None for d in inputs.shape[1:]):
                raise ValueError(f"inputs: T and the spatial dims must be static, found shape {tuple(inputs.shape)}")
            return None
        if inputs is not None:
            raise ValueError("inputs: expected None (the first layer of this stack reads no input); give steps=")
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
            raise ValueError(f"steps: expected a positive int (the number of steps to run), found {steps!r}")
        if initial_state is None:
            raise ValueError("initial_state: a stack without input needs every layer's (h, c) to start from")
        return int(steps)

    def call(
        self, inputs: Any, initial_state: Any = None, go_backwards: bool | None = None, steps: int | None = None
    ) -> Any:
        """Run the stack.

        Args:
            inputs: ``(B, T, *S, C)``; T and S must be static. None for a stack without input (``no_input``).
            initial_state: None (zeros), or per layer an ``(h, c)`` pair of ``(B, *S'_i, F_i)``
                tensors, or the flat list ``[h_0, c_0, h_1, c_1, ...]``.
            go_backwards: overrides the layer option for this call (None: the option).
            steps: the number of steps of a stack without input (required there, refused elsewhere).

        Returns:
            The last layer's output ``(B, T, *S', F)`` (``return_sequences``) or ``(B, *S', F)``;
            with ``return_state`` the tuple ``(output, h_0, c_0, ...)`` of final states ``(B, *S'_i, F_i)``.
        """
        steps = self._check_steps(inputs, initial_state, steps)
        backwards = self.go_backwards if go_backwards is None else bool(go_backwards)
        seq = inputs
        finals, seqs = [], []
        for layer, p, (h, c) in zip(self.spec.layers, self._params, self._initial_states(initial_state)):
            act, rec = ACTIVATIONS[layer.activation], RECURRENT_ACTIVATIONS[layer.recurrent_activation]
            seq, h, c = loop.run_layer(layer, p, seq, h, c, backwards=backwards, act=act, rec=rec, steps=steps)
            finals += [h, c]
            seqs.append(seq)
        if self.return_all_layers:
            seq = ops.concatenate(seqs, axis=-1)
        output = seq if self.return_sequences else seq[:, -1]
        return (output, *finals) if self.return_state else output

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> Any:
        """The shape(s) :meth:`call` returns for inputs of shape ``(B, T, *S, C)``."""
        b, t, *spatial, _c = input_shape
        states = self.spec.state_spatials(spatial) if all(s is not None for s in spatial) else None
        shapes = [
            (b, *(states[i] if states else (None,) * self.spec.rank), layer.filters)
            for i, layer in enumerate(self.spec.layers)
        ]
        last = shapes[-1]
        if self.return_all_layers:
            last = (*last[:-1], sum(layer.filters for layer in self.spec.layers))
        output = (b, t, *last[1:]) if self.return_sequences else last
        if not self.return_state:
            return output
        return (output, *(s for s in shapes for _ in "hc"))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        spec = self.spec.to_meta()
        if self.spec.no_input:
            spec["no_input"] = True
        config.update(
            {
                "spec": spec,
                "peephole_spatials": [None if s is None else list(s) for s in self.peephole_spatials],
                "return_sequences": self.return_sequences,
                "return_state": self.return_state,
                "go_backwards": self.go_backwards,
                "return_all_layers": self.return_all_layers,
            }
        )
        return config
