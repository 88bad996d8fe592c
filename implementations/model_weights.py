"""Weight file of the encoder-forecaster model: format ``convlstm-npz`` **version 2** (``docs/model.md``).

A ``.npz`` that ``numpy.load(path, allow_pickle=False)`` reads:

* ``meta``: a 0-d unicode array holding one JSON object::

      {"format": "convlstm-npz", "version": 2, "kind": "encoder-forecaster", "gate_order": "ifco",
       "input_channels": C, "patch_size": p, "frame_size": [H, W], "t_in": T_in, "t_out": T_out,
       "output_activation": "sigmoid" | "linear",
       "encoder": {"input_channels": p*p*C, "layers": [<v1 layer object>, ...]},
       "forecaster": {"input_channels": 0, "layers": [<v1 layer object>, ...]}}

  Unknown extra fields (top level, inside ``encoder``/``forecaster``, inside a layer) are kept on a round trip.
* ``encoder/layers/{i}/kernel | recurrent_kernel | bias | peephole_{i,f,o}`` and ``forecaster/layers/{i}/...``:
  exactly the v1 per-layer layout (gate blocks i, f, c, o on the last axis); the forecaster's layer 0 ``kernel``
  is an empty ``(kh, kw, 0, 4F)`` array; 'full' peepholes are ``(H/p, W/p, F)``.
* ``head/kernel`` ``(1, 1, sum F, p*p*C)`` (forecaster layers' channels in layer order), ``head/bias`` ``(p*p*C,)``.
* all arrays float32, or all float64.

:func:`load_model` validates as strictly as :func:`implementations.weights.load` (it uses the same readers) and
raises :class:`~implementations.weights.WeightFileError` naming the key, what was expected and what was found.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .fileio import atomic_write
from .model_spec import ModelSpec
from .spec import GATE_ORDER, SpecError
from .weights import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MODEL_FORMAT_VERSION,
    WeightFileError,
    Weights,
    _check_array,
    _glorot_uniform,
    check_meta_fields,
    init_weights,
    open_npz,
    parse_stack_meta,
    read_entries,
    read_meta_entry,
)

MODEL_KIND = "encoder-forecaster"
STACKS = ("encoder", "forecaster")
#: Top-level meta fields of a v2 file that are not "unknown" (everything else is kept in ``meta_extra["top"]``).
KNOWN_TOP = frozenset(
    {"format", "version", "kind", "gate_order", "input_channels", "patch_size", "frame_size", "t_in", "t_out",
     "output_activation", "encoder", "forecaster"}
)


@dataclasses.dataclass
class ModelWeights:
    """A model spec plus every array keyed as in the file (``encoder/layers/0/kernel``, ``head/bias`` ...).

    ``meta_extra`` keeps unknown meta fields: ``{"top": {...}, "encoder": {"top": .., "layers": [..]},
    "forecaster": {...}}`` (each stack's part in the layout of v1's ``Weights.meta_extra``).
    """

    spec: ModelSpec
    arrays: dict[str, np.ndarray]
    meta_extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def dtype(self) -> np.dtype:
        return next(iter(self.arrays.values())).dtype

    def stack(self, name: str) -> Weights:
        """The ``encoder`` or ``forecaster`` as v1 :class:`Weights` (keys ``layers/{i}/...``; arrays shared)."""
        if name not in STACKS:
            raise KeyError(f"unknown stack {name!r}: expected one of {STACKS}")
        prefix = f"{name}/"
        arrays = {k[len(prefix):]: v for k, v in self.arrays.items() if k.startswith(prefix)}
        return Weights(getattr(self.spec, name), arrays, dict(self.meta_extra.get(name, {})))

    @property
    def encoder(self) -> Weights:
        return self.stack("encoder")

    @property
    def forecaster(self) -> Weights:
        return self.stack("forecaster")

    @property
    def head_kernel(self) -> np.ndarray:
        """``(1, 1, sum F, p*p*C)``."""
        return self.arrays["head/kernel"]

    @property
    def head_bias(self) -> np.ndarray:
        """``(p*p*C,)``."""
        return self.arrays["head/bias"]

    def astype(self, dtype: Any) -> ModelWeights:
        dtype = np.dtype(dtype)
        return ModelWeights(self.spec, {k: v.astype(dtype) for k, v in self.arrays.items()}, dict(self.meta_extra))

    def meta(self) -> dict[str, Any]:
        """The JSON ``meta`` object of the file, unknown fields included."""
        top = dict(self.meta_extra.get("top", {}))
        return {
            **top,
            **self.spec.to_meta(),
            "format": FORMAT_NAME,
            "version": MODEL_FORMAT_VERSION,
            "kind": MODEL_KIND,
            "gate_order": GATE_ORDER,
            "encoder": self.encoder.stack_meta(),
            "forecaster": self.forecaster.stack_meta(),
        }


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------

def _described(spec: ModelSpec) -> str:
    return f"an encoder-forecaster model with {spec.num_layers} layer(s) per stack and a head"


def validate_model_arrays(spec: ModelSpec, arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Check an array dict against a model spec: exact keys, shapes, one float dtype, finite values."""
    expected = spec.weight_shapes()
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    if missing:
        raise WeightFileError(f"missing key(s) {missing}: expected for {_described(spec)}")
    if extra:
        raise WeightFileError(f"unexpected key(s) {extra}: {_described(spec)} expects exactly {sorted(expected)}")
    first_key = sorted(expected)[0]
    dtype = arrays[first_key].dtype if isinstance(arrays[first_key], np.ndarray) else None
    return {key: _check_array(key, arrays[key], expected[key], dtype) for key in sorted(expected)}


def make_model_weights(
    spec: ModelSpec, arrays: Mapping[str, Any], meta_extra: dict[str, Any] | None = None
) -> ModelWeights:
    """Validated :class:`ModelWeights` from a spec and an array dict."""
    return ModelWeights(spec, validate_model_arrays(spec, arrays), dict(meta_extra or {}))


def parse_model_meta(meta: Any) -> tuple[ModelSpec, dict[str, Any]]:
    """Parse a v2 ``meta`` JSON object into a model spec and the unknown fields to keep."""
    if not isinstance(meta, dict):
        raise WeightFileError(f"meta: expected a JSON object, found {type(meta).__name__}")
    version = meta.get("version")
    if meta.get("format") == FORMAT_NAME and type(version) is int and version == FORMAT_VERSION:
        raise WeightFileError(
            f"meta.version: expected {MODEL_FORMAT_VERSION!r}, found {version!r}: this is a version-1 file "
            "(one ConvLSTM stack), which load_model does not read; load it with implementations.load"
        )
    check_meta_fields(
        meta,
        (("format", FORMAT_NAME), ("version", MODEL_FORMAT_VERSION), ("kind", MODEL_KIND), ("gate_order", GATE_ORDER)),
    )
    for key in ("input_channels", "patch_size", "frame_size", "t_in", "t_out", "output_activation", *STACKS):
        if key not in meta:
            raise WeightFileError(f"meta: missing field '{key}'")
    stacks, extra = {}, {}
    for name in STACKS:
        stacks[name], extra[name] = parse_stack_meta(meta[name], f"meta.{name}", no_input=name == "forecaster")
    if not isinstance(meta["frame_size"], list):
        raise WeightFileError(f"meta.frame_size: expected [H, W], found {meta['frame_size']!r}")
    try:
        spec = ModelSpec(
            input_channels=meta["input_channels"],
            patch_size=meta["patch_size"],
            frame_size=tuple(meta["frame_size"]),
            t_in=meta["t_in"],
            t_out=meta["t_out"],
            encoder=stacks["encoder"],
            forecaster=stacks["forecaster"],
            output_activation=meta["output_activation"],
        )
    except SpecError as exc:
        raise WeightFileError(f"meta: {exc}") from None
    extra["top"] = {k: v for k, v in meta.items() if k not in KNOWN_TOP}
    return spec, extra


# ---------------------------------------------------------------------------------------------
# File I/O
# ---------------------------------------------------------------------------------------------

def load_model(path: str | os.PathLike) -> ModelWeights:
    """Load and validate a v2 model file. Raises :class:`WeightFileError` on any problem."""
    path = Path(path)
    with open_npz(path) as (zf, by_key):
        meta = read_meta_entry(zf, by_key, path)
        try:
            spec, extra = parse_model_meta(meta)
        except WeightFileError as exc:
            raise WeightFileError(f"{path}: {exc}") from None
        arrays = read_entries(zf, by_key, path, spec.weight_shapes(), _described(spec))
    try:
        arrays = validate_model_arrays(spec, arrays)
    except WeightFileError as exc:
        raise WeightFileError(f"{path}: {exc}") from None
    return ModelWeights(spec, arrays, extra)


def save_model(path: str | os.PathLike, weights: ModelWeights) -> Path:
    """Validate and write ``weights`` atomically to ``path`` (a ``.npz``, via :mod:`implementations.fileio`)."""
    arrays = validate_model_arrays(weights.spec, weights.arrays)
    meta = np.array(json.dumps(weights.meta(), sort_keys=True))
    payload = {"meta": meta, **arrays}
    return atomic_write(path, lambda fh: np.savez(fh, **payload))


# ---------------------------------------------------------------------------------------------
# Initialisers
# ---------------------------------------------------------------------------------------------

def _child_seeds(seed: int, n: int) -> list[int]:
    return [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(n)]


def init_model_weights(spec: ModelSpec, seed: int, dtype: Any = np.float32) -> ModelWeights:
    """Seeded initial weights: Keras' defaults per stack, glorot-uniform head kernel, zero head bias.

    Each stack is :func:`implementations.weights.init_weights` (glorot-uniform kernel, orthogonal recurrent
    kernel, bias 0 with the forget block 1, zero peepholes) at the patched frame size; the encoder, the forecaster
    and the head draw from the seeds ``SeedSequence(seed).spawn(3)`` (each child's ``generate_state(1)[0]``).
    """
    s_enc, s_fc, s_head = _child_seeds(seed, 3)
    arrays: dict[str, np.ndarray] = {}
    for name, s in (("encoder", s_enc), ("forecaster", s_fc)):
        stack = init_weights(getattr(spec, name), s, dtype=dtype, input_spatial=spec.patched_size)
        arrays.update({f"{name}/{k}": v for k, v in stack.arrays.items()})
    shapes = spec.weight_shapes()
    arrays["head/kernel"] = _glorot_uniform(np.random.default_rng(s_head), shapes["head/kernel"]).astype(dtype)
    arrays["head/bias"] = np.zeros(shapes["head/bias"], dtype)
    return make_model_weights(spec, arrays)


def random_model_weights(spec: ModelSpec, seed: int, dtype: Any = np.float64, scale: float = 0.5) -> ModelWeights:
    """Seeded normal(0, scale) weights everywhere, peepholes and biases included (for tests)."""
    rng = np.random.default_rng(seed)
    arrays = {key: (scale * rng.standard_normal(shape)).astype(dtype) for key, shape in spec.weight_shapes().items()}
    return make_model_weights(spec, arrays)
