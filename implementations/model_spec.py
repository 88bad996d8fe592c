"""The encoder-forecaster nowcasting network of Shi et al. 2015 (section 3.2, figure 3), framework-free.

Everything the three framework implementations must do is written here; :mod:`implementations.reference_model` is
the float64 NumPy oracle, :mod:`implementations.model_weights` the weight file (``convlstm-npz`` version 2), and
``docs/model.md`` the same definition in prose.

The model, for frames ``x`` of shape ``(B, T_in, H, W, C)`` (channels-last, 2-D frames only):

1. **Patches (space-to-depth).** Each frame is cut into ``p x p`` patches: ``(B, T_in, H/p, W/p, p*p*C)``, where
   pixel ``(i*p + dy, j*p + dx, c)`` goes to patch ``(i, j)``, depth ``(dy*p + dx)*C + c`` (TensorFlow's
   ``space_to_depth`` order). ``depth_to_space`` is its exact inverse. H and W must be divisible by p.
2. **Encoder.** A stack (:class:`~implementations.spec.StackSpec`, any layer options of the v1 spec) with
   ``p*p*C`` input channels reads the ``T_in`` patched frames from zero states, exactly as the v1 stack does.
3. **Forecaster.** A stack with the same number of layers and, layer by layer, the same filters. Layer k starts from
   a copy of the encoder layer k's final ``(h, c)`` and runs ``T_out`` steps. Its layer 0 receives **no input**: its
   gates are ``z_t = conv(h_{t-1}, R) + b`` (the input-convolution term is absent; the spec has
   ``input_channels=0``, ``no_input=True``, and its ``kernel`` is an empty ``(kh, kw, 0, 4F)`` array). Layer k > 0
   reads layer k-1's h at the same step, as in any stack. Everything else (peepholes, activations, the
   recurrent convolution) is the v1 layer step.
4. **Head.** At every forecaster step t the hidden states of all forecaster layers, layer 0 first, are concatenated
   along channels ``(B, H/p, W/p, sum F)`` and fed to a 1x1 convolution (kernel ``(1, 1, sum F, p*p*C)``, bias
   ``(p*p*C,)``); the result is ``depth_to_space``'d to ``(B, H, W, C)``: the step's logits.
5. **Output.** ``predictions = output_activation(logits)``, ``(B, T_out, H, W, C)``, with ``sigmoid`` (Moving-MNIST
   digits; loss = per-pixel binary cross-entropy from the logits, ``mean(softplus(z) - y*z)`` over
   ``B*T_out*H*W*C``) or ``linear`` (radar-like; loss = mean squared error ``mean((z - y)**2)``). The final
   ``(h, c)`` of every forecaster layer are outputs too.

Both stacks must use stride 1 and ``'same'`` padding in every layer, so every state has the patched frame size
``(H/p, W/p)``; forecaster layer 0 must keep dilation 1 (it has no input convolution to dilate). 'full' peepholes
have shape ``(H/p, W/p, F)``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .spec import LayerSpec, SpecError, StackSpec

OUTPUT_ACTIVATIONS = ("sigmoid", "linear")
#: The loss each output activation is trained with (see the module docstring).
LOSSES = {"sigmoid": "binary_crossentropy", "linear": "mean_squared_error"}
#: Elementwise FLOPs per output value, counted like :meth:`StackSpec.flops` counts gate maths (1 per operation):
#: the output activation (sigmoid 1, linear 0) and the loss (BCE from logits: softplus, y*z, subtract, sum = 4;
#: MSE: subtract, square, sum = 3). The final division by the count is not counted.
ACTIVATION_FLOPS = {"sigmoid": 1, "linear": 0}
LOSS_FLOPS = {"sigmoid": 4, "linear": 3}


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise SpecError(f"{name}: expected a positive int, found {value!r}")
    return int(value)


# ---------------------------------------------------------------------------------------------
# Patches
# ---------------------------------------------------------------------------------------------

def space_to_depth(x: np.ndarray, p: int) -> np.ndarray:
    """``(..., H, W, C)`` -> ``(..., H/p, W/p, p*p*C)``; pixel ``(i*p+dy, j*p+dx, c)`` -> ``(i, j, (dy*p+dx)*C+c)``.

    TensorFlow's ``space_to_depth`` order. Raises :class:`SpecError` when H or W is not divisible by p.
    """
    p = _positive_int(p, "patch_size")
    if x.ndim < 3:
        raise SpecError(f"space_to_depth: expected an array (..., H, W, C), found shape {x.shape}")
    *lead, h, w, c = x.shape
    if h % p or w % p:
        raise SpecError(f"space_to_depth: frame size H={h}, W={w} must both be divisible by patch_size {p}")
    y = x.reshape(*lead, h // p, p, w // p, p, c)  # (..., i, dy, j, dx, c)
    n = len(lead)
    y = np.moveaxis(y, n + 1, n + 2)  # (..., i, j, dy, dx, c)
    return y.reshape(*lead, h // p, w // p, p * p * c)


def depth_to_space(x: np.ndarray, p: int) -> np.ndarray:
    """``(..., h, w, p*p*C)`` -> ``(..., h*p, w*p, C)``: the exact inverse of :func:`space_to_depth`."""
    p = _positive_int(p, "patch_size")
    if x.ndim < 3:
        raise SpecError(f"depth_to_space: expected an array (..., h, w, p*p*C), found shape {x.shape}")
    *lead, h, w, d = x.shape
    if d % (p * p):
        raise SpecError(f"depth_to_space: depth {d} must be divisible by patch_size**2 = {p * p}")
    c = d // (p * p)
    n = len(lead)
    y = x.reshape(*lead, h, w, p, p, c)  # (..., i, j, dy, dx, c)
    y = np.moveaxis(y, n + 2, n + 1)  # (..., i, dy, j, dx, c)
    return y.reshape(*lead, h * p, w * p, c)


# ---------------------------------------------------------------------------------------------
# The model spec
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """The encoder-forecaster network. ``encoder.input_channels == p*p*C``; ``forecaster`` has ``no_input=True``.

    ``frame_size`` is ``(H, W)`` in pixels; ``t_in`` / ``t_out`` are the numbers of input / predicted frames.
    """

    input_channels: int
    patch_size: int
    frame_size: tuple[int, int]
    t_in: int
    t_out: int
    encoder: StackSpec
    forecaster: StackSpec
    output_activation: str = "sigmoid"

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_channels", _positive_int(self.input_channels, "input_channels"))
        object.__setattr__(self, "patch_size", _positive_int(self.patch_size, "patch_size"))
        try:
            size = tuple(self.frame_size)
        except TypeError:
            raise SpecError(f"frame_size: expected [H, W], found {self.frame_size!r}") from None
        if len(size) != 2:
            raise SpecError(f"frame_size: expected [H, W] (2 ints), found {self.frame_size!r}")
        size = (_positive_int(size[0], "frame_size H"), _positive_int(size[1], "frame_size W"))
        object.__setattr__(self, "frame_size", size)
        p = self.patch_size
        if size[0] % p or size[1] % p:
            raise SpecError(
                f"frame_size: H={size[0]} and W={size[1]} must both be divisible by patch_size {p} "
                f"(H % p = {size[0] % p}, W % p = {size[1] % p})"
            )
        object.__setattr__(self, "t_in", _positive_int(self.t_in, "t_in"))
        object.__setattr__(self, "t_out", _positive_int(self.t_out, "t_out"))
        if self.output_activation not in OUTPUT_ACTIVATIONS:
            raise SpecError(
                f"output_activation: expected one of {OUTPUT_ACTIVATIONS}, found {self.output_activation!r}"
            )
        for name in ("encoder", "forecaster"):
            if not isinstance(getattr(self, name), StackSpec):
                raise SpecError(f"{name}: expected a StackSpec, found {type(getattr(self, name)).__name__}")
        enc, fc = self.encoder, self.forecaster
        if enc.no_input or enc.input_channels != self.patch_channels:
            raise SpecError(
                f"encoder.input_channels: expected patch_size**2 * input_channels = {p}*{p}*{self.input_channels} "
                f"= {self.patch_channels}, found {enc.input_channels}"
            )
        if not fc.no_input:
            raise SpecError(
                f"forecaster.input_channels: expected 0 (its first layer reads no input; no_input=True), "
                f"found {fc.input_channels}"
            )
        if len(fc.layers) != len(enc.layers):
            raise SpecError(
                f"forecaster: expected as many layers as the encoder ({len(enc.layers)}), found {len(fc.layers)}"
            )
        for name, stack in (("encoder", enc), ("forecaster", fc)):
            for i, layer in enumerate(stack.layers):
                self._check_layer(name, i, layer)
        for i, (e, f) in enumerate(zip(enc.layers, fc.layers)):
            if e.filters != f.filters:
                raise SpecError(
                    f"forecaster layer {i}: filters: expected {e.filters} (encoder layer {i}'s, whose final state "
                    f"it starts from), found {f.filters}"
                )

    @staticmethod
    def _check_layer(name: str, i: int, layer: LayerSpec) -> None:
        where = f"{name} layer {i}"
        if layer.rank != 2:
            raise SpecError(f"{where}: kernel_size: expected 2 entries (2-D frames), found {layer.kernel_size!r}")
        if layer.strides != (1, 1):
            raise SpecError(f"{where}: strides: expected (1, 1) (states keep the patched frame size), "
                            f"found {layer.strides}")
        if layer.padding != "same":
            raise SpecError(f"{where}: padding: expected 'same' (states keep the patched frame size), "
                            f"found {layer.padding!r}")
        if name == "forecaster" and i == 0 and layer.dilation_rate != (1, 1):
            raise SpecError(f"{where}: dilation_rate: expected (1, 1) (the layer has no input convolution), "
                            f"found {layer.dilation_rate}")

    # -- derived sizes ------------------------------------------------------------------------

    @property
    def patch_channels(self) -> int:
        """``p*p*C``: channels of a patched frame (the encoder's input, the head's output)."""
        return self.patch_size * self.patch_size * self.input_channels

    @property
    def patched_size(self) -> tuple[int, int]:
        """``(H/p, W/p)``: the spatial size of every state."""
        return (self.frame_size[0] // self.patch_size, self.frame_size[1] // self.patch_size)

    @property
    def head_channels(self) -> int:
        """``sum F``: the head's input channels (every forecaster layer's h, layer 0 first)."""
        return sum(layer.filters for layer in self.forecaster.layers)

    @property
    def num_layers(self) -> int:
        return len(self.encoder.layers)

    def input_shape(self, batch: int) -> tuple[int, ...]:
        """``(B, T_in, H, W, C)``."""
        return (batch, self.t_in, *self.frame_size, self.input_channels)

    def output_shape(self, batch: int) -> tuple[int, ...]:
        """``(B, T_out, H, W, C)``: predictions, logits and targets."""
        return (batch, self.t_out, *self.frame_size, self.input_channels)

    def state_shapes(self, batch: int) -> list[tuple[int, ...]]:
        """``(B, H/p, W/p, F_k)`` per layer (encoder and forecaster alike)."""
        return [(batch, *self.patched_size, layer.filters) for layer in self.forecaster.layers]

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every array of the model file -> its shape (``encoder/layers/{i}/...``, ``forecaster/...``, ``head/...``).

        Per stack these are :meth:`StackSpec.weight_shapes` at the patched frame size, prefixed.
        """
        shapes: dict[str, tuple[int, ...]] = {}
        for name, stack in (("encoder", self.encoder), ("forecaster", self.forecaster)):
            for key, shape in stack.weight_shapes(self.patched_size).items():
                shapes[f"{name}/{key}"] = shape
        shapes["head/kernel"] = (1, 1, self.head_channels, self.patch_channels)
        shapes["head/bias"] = (self.patch_channels,)
        return shapes

    def param_count(self) -> int:
        """Number of scalar weights: both stacks (:meth:`StackSpec.param_count`) plus the head."""
        head = self.head_channels * self.patch_channels + self.patch_channels
        return (
            self.encoder.param_count(self.patched_size) + self.forecaster.param_count(self.patched_size) + head
        )

    def flops(self, batch: int, mode: str = "forward") -> int:
        """FLOPs of one pass over a batch of ``batch`` sequences (the conventions of :meth:`StackSpec.flops`).

        A multiply-add is 2 FLOPs. Counted: the encoder over ``T_in`` patched frames and the forecaster over
        ``T_out`` steps (:meth:`StackSpec.flops`; its layer 0 has no input convolution), the head's 1x1 convolution
        (``2 * sum F * p*p*C`` per patch position and step) and bias (``p*p*C``), then per output value the output
        activation (sigmoid 1, linear 0) and the loss (BCE 4, MSE 3). Patching, concatenation and the state copy
        move data only (0 FLOPs). ``mode='train'`` is 3x the forward count, as in StackSpec.
        """
        if mode not in ("forward", "train"):
            raise SpecError(f"mode: expected 'forward' or 'train', found {mode!r}")
        b = _positive_int(batch, "batch")
        hp, wp = self.patched_size
        enc = self.encoder.flops((b, self.t_in, hp, wp, self.patch_channels))
        fc = self.forecaster.flops((b, self.t_out, hp, wp, 0))
        head = b * self.t_out * hp * wp * (2 * self.head_channels * self.patch_channels + self.patch_channels)
        out_values = math.prod(self.output_shape(b))
        elementwise = out_values * (ACTIVATION_FLOPS[self.output_activation] + LOSS_FLOPS[self.output_activation])
        return (enc + fc + head + elementwise) * (3 if mode == "train" else 1)

    def activation_bytes(self, batch: int, itemsize: int = 4) -> int:
        """Predicted activation memory a training step keeps for the backward pass, in bytes.

        :meth:`StackSpec.activation_bytes` of the encoder (its patched input frames once, plus 7F values per
        position and step) and of the forecaster (no input: 7F per position and step), plus the head's outputs:
        the logits and the predictions, ``2 * B*T_out*H*W*C`` values. Framework workspace, weights, gradients
        and optimizer state are not included.
        """
        b = _positive_int(batch, "batch")
        hp, wp = self.patched_size
        enc = self.encoder.activation_bytes((b, self.t_in, hp, wp, self.patch_channels), itemsize)
        fc = self.forecaster.activation_bytes((b, self.t_out, hp, wp, 0), itemsize)
        head = 2 * math.prod(self.output_shape(b)) * itemsize
        return enc + fc + head

    # -- JSON ---------------------------------------------------------------------------------

    def to_meta(self) -> dict[str, Any]:
        """The model fields of the v2 file's ``meta`` (without format/version/kind/gate_order)."""
        return {
            "input_channels": self.input_channels,
            "patch_size": self.patch_size,
            "frame_size": list(self.frame_size),
            "t_in": self.t_in,
            "t_out": self.t_out,
            "output_activation": self.output_activation,
            "encoder": self.encoder.to_meta(),
            "forecaster": self.forecaster.to_meta(),
        }

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> ModelSpec:
        """From a JSON-style dict (the v2 ``meta``'s model fields; format/version fields are ignored here).

        ``encoder`` and ``forecaster`` are ``{"input_channels", "layers"}`` objects as in v1 (the forecaster's
        ``input_channels`` is 0); a ``"layer_defaults"`` object in either is merged into each of its layers.
        ``encoder.input_channels`` may be left out (it is ``p*p*C``).
        """
        if not isinstance(config, Mapping):
            raise SpecError(f"model: expected a JSON object, found {type(config).__name__}")
        for key in ("input_channels", "patch_size", "frame_size", "t_in", "t_out", "encoder", "forecaster"):
            if key not in config:
                raise SpecError(f"model: missing field '{key}'")
        stacks = {}
        for name in ("encoder", "forecaster"):
            sub = config[name]
            if not isinstance(sub, Mapping):
                raise SpecError(f"{name}: expected a JSON object, found {type(sub).__name__}")
            sub = dict(sub)
            defaults = sub.pop("layer_defaults", None) or {}
            if defaults and isinstance(sub.get("layers"), list):
                sub["layers"] = [{**defaults, **layer} if isinstance(layer, Mapping) else layer
                                 for layer in sub["layers"]]
            if name == "encoder" and "input_channels" not in sub:
                p, c = config["patch_size"], config["input_channels"]
                if isinstance(p, int) and isinstance(c, int):
                    sub["input_channels"] = p * p * c
            try:
                stacks[name] = StackSpec.from_meta(sub, no_input=name == "forecaster")
            except SpecError as exc:
                raise SpecError(f"{name}: {exc}") from None
        return cls(
            input_channels=config["input_channels"],
            patch_size=config["patch_size"],
            frame_size=config["frame_size"],
            t_in=config["t_in"],
            t_out=config["t_out"],
            encoder=stacks["encoder"],
            forecaster=stacks["forecaster"],
            output_activation=config.get("output_activation", "sigmoid"),
        )


def build_model_spec(
    input_channels: int,
    patch_size: int,
    frame_size: tuple[int, int],
    t_in: int,
    t_out: int,
    filters: list[int] | tuple[int, ...],
    kernel_size: int = 3,
    output_activation: str = "sigmoid",
    **layer_options: Any,
) -> ModelSpec:
    """The common case: encoder and forecaster with the same ``LayerSpec(F, (k, k), **layer_options)`` per layer."""
    layers = tuple(LayerSpec(f, (kernel_size, kernel_size), **layer_options) for f in filters)
    return ModelSpec(
        input_channels=input_channels,
        patch_size=patch_size,
        frame_size=tuple(frame_size),
        t_in=t_in,
        t_out=t_out,
        encoder=StackSpec(patch_size * patch_size * input_channels, layers),
        forecaster=StackSpec(0, layers, no_input=True),
        output_activation=output_activation,
    )


#: Named models: the paper's two (section 4) and two small ones for tests.
MODEL_PRESETS: dict[str, ModelSpec] = {
    "paper-moving-mnist": build_model_spec(1, 4, (64, 64), 10, 10, [128, 64, 64], 5, "sigmoid"),
    "paper-radar": build_model_spec(1, 4, (100, 100), 5, 15, [64, 64], 3, "linear"),
    "tiny-model": build_model_spec(1, 2, (8, 8), 3, 2, [3, 2], 3, "sigmoid"),
    "small-model": build_model_spec(1, 4, (16, 16), 4, 3, [8, 8], 3, "linear"),
}


def get_model_preset(name: str) -> ModelSpec:
    """The preset ``name`` (see :data:`MODEL_PRESETS`); KeyError naming the known ones otherwise."""
    try:
        return MODEL_PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown model preset {name!r}: expected one of {sorted(MODEL_PRESETS)}") from None
