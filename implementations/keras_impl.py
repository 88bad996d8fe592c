"""Keras 3 implementation of the ConvLSTM stack (:mod:`implementations.spec`), on any Keras backend.

:class:`ConvLSTMStack` is a ``keras.layers.Layer`` written with ``keras.ops`` only, so the same code
runs on the TensorFlow, JAX and PyTorch backends (``KERAS_BACKEND`` picks one at import). It is
channels-last throughout: inputs ``(B, T, *S, C)``, outputs ``(B, T, *S', F)`` or ``(B, *S', F)``,
states ``(B, *S', F)``. Its weights are created in the canonical layout of
:mod:`implementations.weights` (the layout of Keras' own ``ConvLSTM{1,2,3}D``): ``kernel``
``(*k, C_in, 4F)``, ``recurrent_kernel`` ``(*k, F, 4F)``, ``bias`` ``(4F,)``, peepholes ``(F,)``
('channel') or ``(*S', F)`` ('full'); gate blocks i, f, c, o on the last axis.

Geometry: both convolutions pad explicitly (``ops.pad``) with the TF/XLA 'same' rule of
:meth:`LayerSpec.input_padding` / :meth:`LayerSpec.recurrent_padding` and then run 'valid', so every
backend computes the same windows (even kernels included).

Speed: each layer runs its input convolution over all T frames as ONE call on ``(B*T, *S, C)``
before the time loop, so only the recurrent convolution and the gate maths run per step; the first
step from a zero state skips the recurrent convolution and the peephole terms (they are exactly 0).
Under TF XLA a single-channel input convolution is one matrix product of shifted views
(:func:`_conv_as_matmul`), faster there than XLA's CPU convolution.
The time loop is a Python loop over the static T (unrolled when traced). :class:`Runner` traces the
whole forward / value-and-gradient once per input shape with ``tf.function`` or ``jax.jit``
(``jit=True``, the default); the torch backend runs eagerly.

Keras 3 has no backend-neutral gradient API; the one backend dispatch for gradients (and the few
other things only the backend can say: device, precision, versions) lives in the ``_backend_*``
helpers at the end of this module. This is the only module of the package that imports Keras or a
Keras backend.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from . import api
from .spec import HARD_SIGMOID_DIVISOR, HARD_SIGMOID_KERAS2_SLOPE, PEEPHOLE_GATES, LayerSpec, StackSpec
from .weights import Weights, make_weights

__all__ = [
    "ConvLSTMStack",
    "Runner",
    "UnitForgetBias",
    "versions",
]

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
    if isinstance(spec, StackSpec):
        return spec
    return StackSpec.from_meta(spec)


def _pad_spatial(x: Any, padding: Sequence[tuple[int, int]]) -> Any:
    """Zero-pad the spatial axes of a channels-last tensor ``(N, *S, C)``; no-op without padding."""
    if not any(lo or hi for lo, hi in padding):
        return x
    return ops.pad(x, [(0, 0), *padding, (0, 0)])


def _conv_as_matmul(frames: Any, kernel: Any, strides: Sequence[int], dilation: Sequence[int]) -> Any:
    """A 'valid' convolution of padded channels-last ``frames`` ``(N, *S, C)`` with ``kernel`` ``(*k, C, F)`` as one
    matrix product: the ``prod(k)`` strided, shifted views of the frames side by side on the channel axis
    ``(N, *S', prod(k)*C)`` (offsets in row-major order, then channels: the kernel's own order) times the kernel
    reshaped to ``(prod(k)*C, F)``. Returns ``(N, *S', F)``."""
    k = tuple(kernel.shape[:-2])
    sizes = frames.shape[1:-1]
    out = [(n - d * (kk - 1) - 1) // s + 1 for n, kk, s, d in zip(sizes, k, strides, dilation)]
    views = [
        frames[(slice(None), *(slice(o * d, o * d + (m - 1) * s + 1, s) for o, m, s, d in zip(offset, out, strides,
                                                                                              dilation)))]
        for offset in np.ndindex(*k)
    ]
    patches = views[0] if len(views) == 1 else ops.concatenate(views, axis=-1)
    return ops.matmul(patches, ops.reshape(kernel, (-1, kernel.shape[-1])))


def _input_conv_as_matmul() -> bool:
    """Whether a single-channel input convolution runs as :func:`_conv_as_matmul`: under TF XLA only, where the
    convolution with one input channel is slow on the CPU (the ``small`` input conv, 32 frames of 32x32x1 -> 64
    channels, 2-vCPU Intel Xeon: 2.1 ms as XLA's conv, 1.3 ms as the matrix product; without XLA, oneDNN's conv
    takes 1.0 ms and the product 1.7)."""
    return _backend_traced_by_xla()


def _split_steps(zx: Any) -> list[Any]:
    """``(B, T, ...)`` -> the T steps ``(B, ...)``, in the form whose gradient is cheapest on the backend.

    ``unstack``, whose gradient is one stack, except under TF XLA (``jit_compile=True``), where T slices
    are faster: there XLA fuses the slices' padded gradients, and the stack of the unstack gradient
    costs more. On TF without XLA the gradient of each slice is a zero-filled (B, T, ...) tensor and the
    T of them are summed. Measured on a 2-core Zen 5, train step, slices -> unstack: 'radar' TF 464 ->
    331 ms, TF XLA 384 -> 429 ms; 'small' TF 37 -> 18 ms, TF XLA 27 -> 38 ms, JAX 32 -> 31 ms, torch 33
    -> 31 ms.
    """
    if _backend_traced_by_xla():
        return [zx[:, t] for t in range(zx.shape[1])]
    return ops.unstack(zx, axis=1)


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
        **kwargs: ``keras.layers.Layer`` arguments (``name``, ``dtype`` ...).

    Weights are created by :meth:`build` with Keras ConvLSTM's default initialisers (glorot_uniform
    kernel, orthogonal recurrent kernel, unit-forget bias, zero peepholes) and named
    ``kernel_{i}``, ``recurrent_kernel_{i}``, ... (Keras forbids '/' in names);
    :meth:`canonical_variables` maps the canonical keys ``layers/{i}/kernel`` ... to them.
    """

    def __init__(
        self,
        spec: StackSpec | Mapping[str, Any],
        *,
        peephole_spatials: Sequence[Sequence[int] | None] | None = None,
        return_sequences: bool = False,
        return_state: bool = False,
        go_backwards: bool = False,
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
        self._params: list[dict[str, Any]] = []

    # -- weights ----------------------------------------------------------------------------------

    def build(self, input_shape: Sequence[int | None] | None = None) -> None:
        """Create the weights. ``input_shape`` ``(B, T, *S, C)`` is needed only for 'full' peepholes
        whose ``S'`` was not given as ``peephole_spatials``; other dims may be None."""
        spec = self.spec
        derived: list[tuple[int, ...] | None] = [None] * len(spec.layers)
        if input_shape is not None:
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
        variables = self.canonical_variables()
        if set(arrays) != set(variables):
            raise ValueError(f"expected exactly the keys {sorted(variables)}, found {sorted(arrays)}")
        for key, var in variables.items():
            value = np.asarray(arrays[key])
            if tuple(value.shape) != tuple(var.shape):
                raise ValueError(f"{key}: expected shape {tuple(var.shape)}, found {value.shape}")
            var.assign(value.astype(keras.backend.standardize_dtype(var.dtype), copy=False))

    def get_canonical_weights(self) -> dict[str, np.ndarray]:
        """Canonical key -> NumPy copy of the weight, in the variables' dtype."""
        return {key: np.array(ops.convert_to_numpy(var)) for key, var in self.canonical_variables().items()}

    # -- computation ------------------------------------------------------------------------------

    def _check_input_shape(self, shape: Sequence[int | None]) -> None:
        rank = self.spec.rank
        if len(shape) != rank + 3:
            raise ValueError(f"inputs: expected rank {rank + 3} (B, T, *S, C), found shape {tuple(shape)}")
        if shape[-1] is not None and shape[-1] != self.spec.input_channels:
            raise ValueError(f"inputs: expected {self.spec.input_channels} channels (last axis), found {shape[-1]}")

    def _input_conv(self, layer: LayerSpec, p: dict[str, Any], seq: Any) -> Any:
        """Input convolution (+ bias) of all T frames at once: ``(B, T, *S, C)`` -> ``(B, T, *S', 4F)``."""
        t, *spatial, cin = seq.shape[1:]
        frames = ops.reshape(seq, (-1, *spatial, cin))
        frames = _pad_spatial(frames, layer.input_padding(spatial))
        if cin == 1 and _input_conv_as_matmul():
            z = _conv_as_matmul(frames, p["kernel"], layer.strides, layer.dilation_rate)
        else:
            z = ops.conv(
                frames,
                p["kernel"],
                strides=layer.strides,
                padding="valid",
                dilation_rate=layer.dilation_rate,
                data_format="channels_last",
            )
        if layer.use_bias:
            z = ops.add(z, p["bias"])
        return ops.reshape(z, (-1, t, *z.shape[1:]))

    def _recurrent_conv(self, layer: LayerSpec, kernel: Any, h: Any) -> Any:
        """Recurrent convolution (stride 1, 'same', dilation 1): ``(B, *S', F)`` -> ``(B, *S', 4F)``."""
        padding = layer.recurrent_padding()
        if all(lo == hi for lo, hi in padding):
            # Odd kernel: symmetric padding, where every backend's 'same' agrees; it saves a pad op per step
            # (TF without XLA runs it as a separate copy).
            return ops.conv(h, kernel, strides=1, padding="same", data_format="channels_last")
        h = _pad_spatial(h, padding)
        return ops.conv(h, kernel, strides=1, padding="valid", data_format="channels_last")

    def _step(
        self, layer: LayerSpec, p: dict[str, Any], zx: Any, h: Any | None, c: Any | None
    ) -> tuple[Any, Any]:
        """One step from the input pre-activation ``zx`` (B, *S', 4F). ``h = c = None``: zero state."""
        act = ACTIVATIONS[layer.activation]
        rec = RECURRENT_ACTIVATIONS[layer.recurrent_activation]
        z = zx if h is None else ops.add(zx, self._recurrent_conv(layer, p["recurrent_kernel"], h))
        zi, zf, zc, zo = ops.split(z, 4, axis=-1)
        peephole = layer.peephole is not None
        if peephole and c is not None:
            zi = ops.add(zi, ops.multiply(p["peephole_i"], c))
            zf = ops.add(zf, ops.multiply(p["peephole_f"], c))
        i_t = rec(zi)
        if c is None:
            c_t = ops.multiply(i_t, act(zc))
        else:
            c_t = ops.add(ops.multiply(rec(zf), c), ops.multiply(i_t, act(zc)))
        if peephole:
            zo = ops.add(zo, ops.multiply(p["peephole_o"], c_t))
        h_t = ops.multiply(rec(zo), act(c_t))
        return h_t, c_t

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

    def call(self, inputs: Any, initial_state: Any = None, go_backwards: bool | None = None) -> Any:
        """Run the stack.

        Args:
            inputs: ``(B, T, *S, C)``; T and S must be static.
            initial_state: None (zeros), or per layer an ``(h, c)`` pair of ``(B, *S'_i, F_i)``
                tensors, or the flat list ``[h_0, c_0, h_1, c_1, ...]``.
            go_backwards: overrides the layer option for this call (None: the option).

        Returns:
            The last layer's output ``(B, T, *S', F)`` (``return_sequences``) or ``(B, *S', F)``;
            with ``return_state`` the tuple ``(output, h_0, c_0, ...)`` of final states ``(B, *S'_i, F_i)``.
        """
        self._check_input_shape(inputs.shape)
        if any(d is None for d in inputs.shape[1:]):
            raise ValueError(f"inputs: T and the spatial dims must be static, found shape {tuple(inputs.shape)}")
        backwards = self.go_backwards if go_backwards is None else bool(go_backwards)
        seq = inputs
        finals = []
        for layer, p, (h, c) in zip(self.spec.layers, self._params, self._initial_states(initial_state)):
            zxs = _split_steps(self._input_conv(layer, p, seq))
            outs = []
            for zx_t in reversed(zxs) if backwards else zxs:
                h, c = self._step(layer, p, zx_t, h, c)
                outs.append(h)
            seq = ops.stack(outs, axis=1)
            finals += [h, c]
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
        output = (b, t, *shapes[-1][1:]) if self.return_sequences else shapes[-1]
        if not self.return_state:
            return output
        return (output, *(s for s in shapes for _ in "hc"))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "spec": self.spec.to_meta(),
                "peephole_spatials": [None if s is None else list(s) for s in self.peephole_spatials],
                "return_sequences": self.return_sequences,
                "return_state": self.return_state,
                "go_backwards": self.go_backwards,
            }
        )
        return config


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
            _backend_enable_float64()
        self._device = _resolve_device(device)
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
    def device(self) -> str:
        """``"cpu"`` or ``"gpu:N"``."""
        return "cpu" if self._device.startswith("cpu") else self._device

    def _scope(self) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        stack.enter_context(keras.device(self._device))
        stack.enter_context(_backend_precision(self._device, self.allow_tf32))
        return stack

    # -- traced functions -------------------------------------------------------------------------

    def _values(self) -> list[Any]:
        return [v.value for v in self.layer.trainable_variables]

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
                gy, gs = probe
                total = ops.sum(ops.multiply(seq, gy))
                for s, g in zip(states, gs):
                    total = ops.add(total, ops.sum(ops.multiply(s, g)))
                return total

            if kind == "forward":
                self._compiled[key] = _backend_inference(forward, jit=self.jit)
            else:
                fn = _backend_value_and_grad(loss)
                self._compiled[key] = _backend_compile(fn) if self.jit else fn
        return self._compiled[key]

    def _prepare(self, x: np.ndarray, initial_state: Any) -> tuple[Any, Any]:
        x, states = api.check_input(self.weights, x, self.dtype)
        init = api.check_initial_state(self.weights, initial_state, x.shape[0], states, self.dtype)
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

    # -- the contract -----------------------------------------------------------------------------

    def forward(
        self,
        x: np.ndarray,
        *,
        initial_state: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
        return_sequences: bool = True,
        go_backwards: bool = False,
    ) -> api.ForwardResult:
        """``x`` (B, T, *S, C) -> outputs (B, T, *S', F) or (B, *S', F), final h/c per layer (B, *S'_i, F_i)."""
        with self._scope():
            xt, init = self._prepare(x, initial_state)
            fn = self._function("forward", bool(go_backwards), tuple(xt.shape), init is not None)
            seq, *states = fn(self._values(), xt, init)
            seq = self._numpy(seq)
            states = [self._numpy(s) for s in states]
        return api.ForwardResult(api.select_output(seq, return_sequences), states[0::2], states[1::2])

    def value_and_grad(
        self,
        x: np.ndarray,
        probe: api.ProbeLike,
        *,
        initial_state: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
        go_backwards: bool = False,
    ) -> api.GradResult:
        """``probe.value`` on the full output sequence and all final states, and its gradient with
        respect to every canonical weight (canonical keys and layouts) and ``"input"`` (B, T, *S, C).

        ``probe``: a :class:`~implementations.api.LossProbe` or an array of the output sequence's shape
        (see :func:`~implementations.api.check_probe`)."""
        with self._scope():
            xt, init = self._prepare(x, initial_state)
            p = api.check_probe(self.weights.spec, probe, tuple(xt.shape), self.dtype)
            gs = [g for pair in zip(p.gh, p.gc) for g in pair]
            probe_t = (
                ops.convert_to_tensor(p.gy, self.dtype),
                [ops.convert_to_tensor(g, self.dtype) for g in gs],
            )
            fn = self._function("value_and_grad", bool(go_backwards), tuple(xt.shape), init is not None)
            loss, grads, gx = fn(self._values(), xt, init, probe_t)
            out = {key: self._numpy(g) for key, g in zip(self._keys, grads)}
            out["input"] = self._numpy(gx)
            value = float(ops.convert_to_numpy(loss))
        canonical = {k: out[k] for k in self.weights.arrays}
        canonical["input"] = out["input"]
        return api.GradResult(value, canonical)

    def export_weights(self) -> Weights:
        """The layer's current weights as canonical :class:`Weights` in the runner dtype.

        Bit-identical to the weights given when their dtype is the runner's; ``meta_extra`` is kept.
        """
        arrays = self.layer.get_canonical_weights()
        ordered = {k: arrays[k] for k in self.weights.arrays}
        return make_weights(self.weights.spec, ordered, copy.deepcopy(self.weights.meta_extra))


def versions() -> dict[str, str]:
    """Versions for reports: keras, the active backend's name and its version."""
    backend = keras.backend.backend()
    module = importlib.import_module(backend)
    return {"keras": keras.__version__, "keras_backend": backend, backend: str(module.__version__)}


# ---------------------------------------------------------------------------------------------
# Backend dispatch: everything Keras 3 cannot express backend-neutrally, in one place.
# ---------------------------------------------------------------------------------------------

def _gpu_count() -> int:
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return len(tf.config.list_logical_devices("GPU"))
    if backend == "jax":
        import jax

        return sum(1 for d in jax.devices() if d.platform == "gpu")
    if backend == "torch":
        import torch

        return torch.cuda.device_count()
    return 0


def _resolve_device(device: str | None) -> str:
    """A Keras device name (``"cpu:0"``, ``"gpu:N"``) for a request; None -> ``gpu:0`` if any, else CPU."""
    gpus = _gpu_count()
    if device is None:
        return "gpu:0" if gpus else "cpu:0"
    if not isinstance(device, str):
        raise api.InputError(f"device: expected None or a string such as 'cpu' or 'gpu:0', found {device!r}")
    kind, _, index = device.strip().lower().partition(":")
    kind = {"cuda": "gpu"}.get(kind, kind)
    if kind not in ("cpu", "gpu") or not (index == "" or index.isdigit()):
        raise api.InputError(f"device: expected 'cpu', 'gpu' or 'gpu:N' (or 'cuda:N'), found {device!r}")
    idx = int(index or 0)
    if kind == "gpu" and idx >= gpus:
        raise api.InputError(
            f"device: {device!r} requested but the {keras.backend.backend()} backend sees {gpus} GPU(s)"
        )
    return f"{kind}:{idx}"


def _backend_enable_float64() -> None:
    """float64 needs ``jax_enable_x64`` on the JAX backend (process-wide); nothing elsewhere."""
    if keras.backend.backend() == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)


@contextlib.contextmanager
def _backend_precision(device: str, allow_tf32: bool) -> Iterator[None]:
    """On a GPU, float32 convolutions in full fp32 unless ``allow_tf32``; restored on exit. No-op on CPU."""
    if device.startswith("cpu"):
        yield
        return
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        old = tf.config.experimental.tensor_float_32_execution_enabled()
        tf.config.experimental.enable_tensor_float_32_execution(allow_tf32)
        try:
            yield
        finally:
            tf.config.experimental.enable_tensor_float_32_execution(old)
    elif backend == "jax":
        import jax

        with jax.default_matmul_precision("default" if allow_tf32 else "highest"):
            yield
    elif backend == "torch":
        import torch

        conv = getattr(torch.backends.cudnn, "conv", None)
        if conv is not None and hasattr(conv, "fp32_precision"):  # torch >= 2.9
            owner, attr, value = conv, "fp32_precision", "tf32" if allow_tf32 else "ieee"
        else:
            owner, attr, value = torch.backends.cudnn, "allow_tf32", allow_tf32
        old = getattr(owner, attr)
        setattr(owner, attr, value)
        try:
            yield
        finally:
            setattr(owner, attr, old)
    else:
        yield


def _backend_value_and_grad(loss: Callable[..., Any]) -> Callable[..., Any]:
    """``loss(values, x, *rest) -> scalar`` => ``f(values, x, *rest) -> (loss, grads of values, grad of x)``.

    Gradients of unused weights (e.g. the recurrent kernel when T = 1 from a zero state) are zeros.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        def value_and_grad_tf(values: list[Any], x: Any, *rest: Any) -> Any:
            values = [tf.convert_to_tensor(v) for v in values]
            with tf.GradientTape() as tape:
                tape.watch(values)
                tape.watch(x)
                value = loss(values, x, *rest)
            gv, gx = tape.gradient(value, (values, x), unconnected_gradients=tf.UnconnectedGradients.ZERO)
            return value, gv, gx

        return value_and_grad_tf
    if backend == "jax":
        import jax

        def value_and_grad_jax(values: list[Any], x: Any, *rest: Any) -> Any:
            value, (gv, gx) = jax.value_and_grad(loss, argnums=(0, 1))(values, x, *rest)
            return value, gv, gx

        return value_and_grad_jax
    if backend == "torch":
        import torch

        def value_and_grad_torch(values: list[Any], x: Any, *rest: Any) -> Any:
            leaves = [t.detach().requires_grad_(True) for t in (*values, x)]
            with torch.enable_grad():
                value = loss(leaves[:-1], leaves[-1], *rest)
            grads = torch.autograd.grad(value, leaves, allow_unused=True)
            grads = [torch.zeros_like(t) if g is None else g for t, g in zip(leaves, grads)]
            return value.detach(), grads[:-1], grads[-1]

        return value_and_grad_torch
    raise NotImplementedError(f"gradients on the {backend!r} Keras backend are not supported")


def _backend_inference(fn: Callable[..., Any], *, jit: bool) -> Callable[..., Any]:
    """``fn`` for inference: traced when ``jit``; on torch run under ``no_grad`` (no autograd graph)."""
    if keras.backend.backend() == "torch":
        import torch

        return torch.no_grad()(fn)
    return _backend_compile(fn) if jit else fn


def _backend_traced_by_xla() -> bool:
    """True while the TF backend traces a function that XLA will compile (see :func:`_tf_traced_by_xla`);
    False on the other backends."""
    return keras.backend.backend() == "tensorflow" and _tf_traced_by_xla()


def _tf_traced_by_xla() -> bool:
    """Whether TensorFlow is now tracing a graph that XLA will compile: inside ``tf.function(jit_compile=True)``
    (what Keras' ``jit_compile=True`` uses), at any nesting depth (a ``tf.while_loop`` or ``tf.cond`` body of such
    a function too); False in eager code and in graphs TF runs itself.

    TF has no public API for this; it asks the private
    ``tensorflow.python.ops.control_flow_util.GraphOrParentsInXlaContext``. Fallback where TF lacks it: False
    (the layer then takes its non-XLA forms, ``unstack`` and the input conv: correct, slower under XLA).
    ``parity_tests/test_private_apis.py`` fails when the private API is gone, so that an upgrade is noticed.
    """
    try:
        import tensorflow as tf
        from tensorflow.python.ops import control_flow_util
    except ImportError:
        return False
    query = getattr(control_flow_util, "GraphOrParentsInXlaContext", None)
    return False if query is None else bool(query(tf.compat.v1.get_default_graph()))


def _backend_compile(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Trace ``fn`` once per input shape: ``tf.function`` / ``jax.jit``; torch (and others): as is."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, autograph=False)
    if backend == "jax":
        import jax

        return jax.jit(fn)
    return fn

