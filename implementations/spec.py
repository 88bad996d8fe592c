"""The framework-neutral ConvLSTM specification (Shi et al. 2015, with options).

Everything here is plain Python + NumPy: every implementation, the reference, the weight
format, the benchmarks and the reports read the same definitions.

Equations for one layer at step t (``*`` is cross-correlation, ``∘`` the element-wise product)::

    z_t = conv(x_t, K; strides, padding, dilation) + conv(h_{t-1}, R; stride 1, 'same', dilation 1) + b
    zi, zf, zc, zo = split(z_t, 4, channel axis)          # gate order i, f, c, o
    i_t = rec_act(zi + p_i ∘ c_{t-1});   f_t = rec_act(zf + p_f ∘ c_{t-1})
    c_t = f_t ∘ c_{t-1} + i_t ∘ act(zc)
    o_t = rec_act(zo + p_o ∘ c_t);       h_t = o_t ∘ act(c_t)

'same' padding follows the TensorFlow/XLA rule for both convolutions: where the total padding is odd
the extra row/column goes at the end. Layer k+1 reads layer k's h sequence. The spatial rank
(1, 2 or 3) is the length of ``kernel_size``.

Shapes are channels-last: inputs ``(B, T, *S, C)``, states ``(B, *S', F)``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

GATE_ORDER = "ifco"
PADDINGS = ("same", "valid")
PEEPHOLES = (None, "channel", "full")
ACTIVATIONS = ("tanh", "relu", "linear")
RECURRENT_ACTIVATIONS = ("sigmoid", "hard_sigmoid", "hard_sigmoid_keras2")
PEEPHOLE_GATES = ("i", "f", "o")


class SpecError(ValueError):
    """A ConvLSTM spec, or a shape derived from it, is invalid. The message says what and why."""


# ---------------------------------------------------------------------------------------------
# Element-wise functions, defined once (float64 NumPy); frameworks implement the same formulas.
# ---------------------------------------------------------------------------------------------

def _np_sigmoid(x: np.ndarray) -> np.ndarray:
    # Numerically stable on both tails.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


NUMPY_ACTIVATIONS = {
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
    "linear": lambda x: x,
}
#: Keras 3's hard sigmoid, ``relu6(x + 3) / 6 == clip(x / HARD_SIGMOID_DIVISOR + 0.5, 0, 1)``. Every framework
#: divides by it (rather than multiplying by its reciprocal) so that they all round the same way.
HARD_SIGMOID_DIVISOR = 6.0
#: Keras 2 / tf.keras's hard sigmoid: ``clip(HARD_SIGMOID_KERAS2_SLOPE * x + 0.5, 0, 1)``.
HARD_SIGMOID_KERAS2_SLOPE = 0.2
#: Slope of each hard sigmoid, ``clip(slope * x + 0.5, 0, 1)``: its derivative where the output is inside (0, 1).
HARD_SIGMOID_SLOPES = {"hard_sigmoid": 1.0 / HARD_SIGMOID_DIVISOR, "hard_sigmoid_keras2": HARD_SIGMOID_KERAS2_SLOPE}

NUMPY_RECURRENT_ACTIVATIONS = {
    "sigmoid": _np_sigmoid,
    "hard_sigmoid": lambda x: np.clip(x / HARD_SIGMOID_DIVISOR + 0.5, 0.0, 1.0),
    "hard_sigmoid_keras2": lambda x: np.clip(HARD_SIGMOID_KERAS2_SLOPE * x + 0.5, 0.0, 1.0),
}


# ---------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------

def conv_output_size(n: int, k: int, s: int, d: int, padding: str) -> int:
    """Output length of one spatial axis of a convolution (TF/XLA rule)."""
    if padding == "same":
        return -(-n // s)
    return (n - (k - 1) * d - 1) // s + 1


def same_padding(n: int, k: int, s: int, d: int) -> tuple[int, int]:
    """(low, high) padding of one axis under TF/XLA 'same': the odd extra element goes at the end."""
    out = -(-n // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
    return total // 2, total - total // 2


def _as_tuple(value: Any, rank: int, name: str) -> tuple[int, ...]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return (int(value),) * rank
    try:
        out = tuple(value)
    except TypeError:
        raise SpecError(f"{name}: expected an int or a list of {rank} ints, found {value!r}") from None
    if len(out) != rank or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in out
    ):
        raise SpecError(f"{name}: expected {rank} ints, found {value!r}")
    return tuple(int(v) for v in out)


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One ConvLSTM layer. Tuples have one entry per spatial axis (rank = len(kernel_size))."""

    filters: int
    kernel_size: tuple[int, ...] = (3, 3)
    strides: tuple[int, ...] | None = None
    padding: str = "same"
    dilation_rate: tuple[int, ...] | None = None
    use_bias: bool = True
    peephole: str | None = None
    activation: str = "tanh"
    recurrent_activation: str = "sigmoid"

    def __post_init__(self) -> None:
        ks = self.kernel_size
        if isinstance(ks, (int, np.integer)) and not isinstance(ks, bool):
            ks = (int(ks), int(ks))
        try:
            ks = tuple(ks)
        except TypeError:
            raise SpecError(f"kernel_size: expected a list of ints, found {self.kernel_size!r}") from None
        rank = len(ks)
        if rank not in (1, 2, 3):
            raise SpecError(f"kernel_size: spatial rank must be 1, 2 or 3, found {rank} ({ks!r})")
        object.__setattr__(self, "kernel_size", _as_tuple(ks, rank, "kernel_size"))
        object.__setattr__(self, "strides", _as_tuple(1 if self.strides is None else self.strides, rank, "strides"))
        object.__setattr__(
            self,
            "dilation_rate",
            _as_tuple(1 if self.dilation_rate is None else self.dilation_rate, rank, "dilation_rate"),
        )
        if isinstance(self.filters, bool) or not isinstance(self.filters, (int, np.integer)) or self.filters < 1:
            raise SpecError(f"filters: expected a positive int, found {self.filters!r}")
        object.__setattr__(self, "filters", int(self.filters))
        for name in ("kernel_size", "strides", "dilation_rate"):
            if any(v < 1 for v in getattr(self, name)):
                raise SpecError(f"{name}: every entry must be >= 1, found {getattr(self, name)!r}")
        if any(s > 1 for s in self.strides) and any(d > 1 for d in self.dilation_rate):
            raise SpecError(
                f"strides {self.strides} together with dilation_rate {self.dilation_rate} is not supported: "
                "Keras and TensorFlow reject the combination, so it could not be compared across frameworks"
            )
        if self.padding not in PADDINGS:
            raise SpecError(f"padding: expected one of {PADDINGS}, found {self.padding!r}")
        if not isinstance(self.use_bias, (bool, np.bool_)):
            raise SpecError(f"use_bias: expected true/false, found {self.use_bias!r}")
        object.__setattr__(self, "use_bias", bool(self.use_bias))
        if self.peephole not in PEEPHOLES:
            raise SpecError(f"peephole: expected one of {PEEPHOLES}, found {self.peephole!r}")
        if self.activation not in ACTIVATIONS:
            raise SpecError(f"activation: expected one of {ACTIVATIONS}, found {self.activation!r}")
        if self.recurrent_activation not in RECURRENT_ACTIVATIONS:
            raise SpecError(
                f"recurrent_activation: expected one of {RECURRENT_ACTIVATIONS}, found {self.recurrent_activation!r}"
            )

    @property
    def rank(self) -> int:
        return len(self.kernel_size)

    def output_spatial(self, spatial: Sequence[int]) -> tuple[int, ...]:
        """Spatial shape of the state / output for an input of spatial shape ``spatial``."""
        if len(spatial) != self.rank:
            raise SpecError(f"input has {len(spatial)} spatial axes, the layer expects {self.rank}")
        out = tuple(
            conv_output_size(n, k, s, d, self.padding)
            for n, k, s, d in zip(spatial, self.kernel_size, self.strides, self.dilation_rate)
        )
        if any(o < 1 for o in out):
            raise SpecError(
                f"input spatial shape {tuple(spatial)} is too small for kernel {self.kernel_size}, "
                f"dilation {self.dilation_rate}, strides {self.strides}, padding '{self.padding}': "
                f"the output would be {out}"
            )
        return out

    def input_padding(self, spatial: Sequence[int]) -> tuple[tuple[int, int], ...]:
        """(low, high) padding per spatial axis of the input convolution."""
        if self.padding == "valid":
            return tuple((0, 0) for _ in spatial)
        return tuple(
            same_padding(n, k, s, d)
            for n, k, s, d in zip(spatial, self.kernel_size, self.strides, self.dilation_rate)
        )

    def recurrent_padding(self) -> tuple[tuple[int, int], ...]:
        """(low, high) padding per axis of the recurrent convolution (stride 1, 'same', dilation 1)."""
        return tuple(((k - 1) // 2, k - 1 - (k - 1) // 2) for k in self.kernel_size)

    def peephole_shape(self, state_spatial: Sequence[int] | None) -> tuple[int, ...] | None:
        """Shape of each peephole weight: (F,) for 'channel', (*S', F) for 'full', None without."""
        if self.peephole is None:
            return None
        if self.peephole == "channel":
            return (self.filters,)
        if state_spatial is None:
            raise SpecError("a 'full' peephole needs the state's spatial shape")
        return (*tuple(state_spatial), self.filters)

    def to_meta(self) -> dict[str, Any]:
        return {
            "filters": self.filters,
            "kernel_size": list(self.kernel_size),
            "strides": list(self.strides),
            "padding": self.padding,
            "dilation_rate": list(self.dilation_rate),
            "use_bias": self.use_bias,
            "peephole": self.peephole,
            "activation": self.activation,
            "recurrent_activation": self.recurrent_activation,
        }

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], where: str = "layer") -> LayerSpec:
        if not isinstance(meta, Mapping):
            raise SpecError(f"{where}: expected a JSON object, found {type(meta).__name__}")
        if "filters" not in meta:
            raise SpecError(f"{where}: missing field 'filters'")
        if "kernel_size" not in meta:
            raise SpecError(f"{where}: missing field 'kernel_size'")
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: meta[k] for k in known if k in meta}
        try:
            return cls(**kwargs)
        except SpecError as exc:
            raise SpecError(f"{where}: {exc}") from None


@dataclasses.dataclass(frozen=True)
class StackSpec:
    """A stack of ConvLSTM layers fed ``input_channels`` channels per frame.

    ``no_input=True`` (keyword only; the forecaster of :mod:`implementations.model_spec`) makes the first layer
    read no input at all: ``input_channels`` must then be 0, its gates are ``z_t = conv(h_{t-1}, R) + b`` and its
    ``kernel`` is an empty ``(*k, 0, 4F)`` array. With the default ``no_input=False`` nothing changes (v1).
    """

    input_channels: int
    layers: tuple[LayerSpec, ...]
    no_input: bool = dataclasses.field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        if self.no_input is not False and self.no_input is not True:
            raise SpecError(f"no_input: expected true/false, found {self.no_input!r}")
        if self.no_input:
            if isinstance(self.input_channels, bool) or not isinstance(self.input_channels, (int, np.integer)) or (
                self.input_channels != 0
            ):
                raise SpecError(
                    f"input_channels: expected 0 for a stack whose first layer reads no input (no_input=True), "
                    f"found {self.input_channels!r}"
                )
        elif isinstance(self.input_channels, bool) or not isinstance(self.input_channels, (int, np.integer)) or (
            self.input_channels < 1
        ):
            raise SpecError(f"input_channels: expected a positive int, found {self.input_channels!r}")
        object.__setattr__(self, "input_channels", int(self.input_channels))
        layers = tuple(self.layers)
        if not layers:
            raise SpecError("layers: a stack needs at least one layer")
        if not all(isinstance(layer, LayerSpec) for layer in layers):
            raise SpecError("layers: expected LayerSpec entries")
        ranks = {layer.rank for layer in layers}
        if len(ranks) != 1:
            raise SpecError(f"layers: all layers must have the same spatial rank, found ranks {sorted(ranks)}")
        object.__setattr__(self, "layers", layers)

    @property
    def rank(self) -> int:
        return self.layers[0].rank

    def layer_input_channels(self, i: int) -> int:
        return self.input_channels if i == 0 else self.layers[i - 1].filters

    def state_spatials(self, spatial: Sequence[int]) -> list[tuple[int, ...]]:
        """Spatial shape of every layer's state for an input frame of spatial shape ``spatial``."""
        out = []
        cur = tuple(int(n) for n in spatial)
        for i, layer in enumerate(self.layers):
            try:
                cur = layer.output_spatial(cur)
            except SpecError as exc:
                raise SpecError(f"layer {i}: {exc}") from None
            out.append(cur)
        return out

    def to_meta(self) -> dict[str, Any]:
        return {"input_channels": self.input_channels, "layers": [layer.to_meta() for layer in self.layers]}

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], *, no_input: bool = False) -> StackSpec:
        """The spec of a ``{"input_channels", "layers"}`` object; ``no_input`` as for the constructor."""
        if not isinstance(meta, Mapping):
            raise SpecError(f"spec: expected a JSON object, found {type(meta).__name__}")
        for key in ("input_channels", "layers"):
            if key not in meta:
                raise SpecError(f"spec: missing field '{key}'")
        layers = meta["layers"]
        if not isinstance(layers, list):
            raise SpecError(f"spec: 'layers' must be a list, found {type(layers).__name__}")
        return cls(
            input_channels=meta["input_channels"],
            layers=tuple(LayerSpec.from_meta(m, where=f"layers[{i}]") for i, m in enumerate(layers)),
            no_input=no_input,
        )

    # -- sizes and costs ----------------------------------------------------------------------

    def weight_shapes(self, spatial: Sequence[int] | None = None) -> dict[str, tuple[int, ...]]:
        """Canonical array name -> shape. 'full' peepholes map to None unless ``spatial`` (frame size) is given."""
        states = self.state_spatials(spatial) if spatial is not None else [None] * len(self.layers)
        shapes: dict[str, tuple[int, ...]] = {}
        for i, layer in enumerate(self.layers):
            f4 = 4 * layer.filters
            shapes[f"layers/{i}/kernel"] = (*layer.kernel_size, self.layer_input_channels(i), f4)
            shapes[f"layers/{i}/recurrent_kernel"] = (*layer.kernel_size, layer.filters, f4)
            if layer.use_bias:
                shapes[f"layers/{i}/bias"] = (f4,)
            if layer.peephole is not None:
                # A 'full' peephole's shape is unknown (None) until the frame size is given.
                shape = None if layer.peephole == "full" and states[i] is None else layer.peephole_shape(states[i])
                for g in PEEPHOLE_GATES:
                    shapes[f"layers/{i}/peephole_{g}"] = shape
        return shapes

    def param_count(self, spatial: Sequence[int] | None = None) -> int:
        """Number of scalar weights (``spatial`` is needed only with 'full' peepholes)."""
        shapes = self.weight_shapes(spatial)
        if any(s is None for s in shapes.values()):
            raise SpecError("param_count: 'full' peepholes need the input spatial shape")
        return sum(math.prod(s) for s in shapes.values())

    def flops(self, input_shape: Sequence[int], mode: str = "forward") -> int:
        """FLOPs of one pass over an input of shape (B, T, *S, C).

        Convention: a multiply-add counts as 2 FLOPs. Counted: both convolutions (2 * k-volume *
        C_in * 4F per output position), the bias add (4F), the sum of the two convolutions (4F),
        peepholes (2 per gate: multiply + add), and the gate element-wise maths (5 activations,
        3 for c_t, 1 for h_t). Padding zeros are counted as work, as the kernels execute them.
        ``mode='train'`` is 3x the forward count (backward = 2x forward: gradients for the
        input and for the weights), the usual convention; the optimizer update is not counted.
        A layer with no input (``no_input``, 0 input channels) has no input convolution and no sum of the two.
        """
        if mode not in ("forward", "train"):
            raise SpecError(f"mode: expected 'forward' or 'train', found {mode!r}")
        b, t, *spatial, _c = input_shape
        total = 0
        for i, (layer, out) in enumerate(zip(self.layers, self.state_spatials(spatial))):
            positions = math.prod(out)
            kvol = math.prod(layer.kernel_size)
            f = layer.filters
            conv = 2 * kvol * (self.layer_input_channels(i) + f) * 4 * f
            summed = 4 * f if self.layer_input_channels(i) else 0  # conv(x) + conv(h); absent without input
            elementwise = summed + (4 * f if layer.use_bias else 0) + (6 * f if layer.peephole else 0) + 9 * f
            total += b * t * positions * (conv + elementwise)
        return total * (3 if mode == "train" else 1)

    def activation_bytes(self, input_shape: Sequence[int], itemsize: int = 4) -> int:
        """Predicted activation memory a training step keeps for the backward pass, in bytes.

        Model: per layer and step, the four gate activations, c_t, act(c_t) and h_t (7 * F values
        per output position), plus the layer's input sequence once (the frames for layer 0).
        Framework workspace, weights, gradients and optimizer state are not included.
        """
        b, t, *spatial, c = input_shape
        values = b * t * math.prod(spatial) * c
        for layer, out in zip(self.layers, self.state_spatials(spatial)):
            values += b * t * math.prod(out) * 7 * layer.filters
        return values * itemsize

    def output_shape(self, input_shape: Sequence[int], return_sequences: bool = True) -> tuple[int, ...]:
        b, t, *spatial, _c = input_shape
        out = self.state_spatials(spatial)[-1]
        f = self.layers[-1].filters
        return (b, t, *out, f) if return_sequences else (b, *out, f)


def stack_from_dict(config: Mapping[str, Any]) -> StackSpec:
    """Build a StackSpec from a JSON-style dict (the `meta` of a weight file, or a CLI spec file).

    Shorthand accepted for CLI specs: ``"layer_defaults"`` merged into every layer.
    """
    config = dict(config)
    defaults = config.pop("layer_defaults", None) or {}
    layers = config.get("layers")
    if defaults and isinstance(layers, list):
        config["layers"] = [{**defaults, **layer} for layer in layers]
    return StackSpec.from_meta(config)
