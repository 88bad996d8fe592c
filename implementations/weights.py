"""Weight format v1: a ``.npz`` file that ``numpy.load(path, allow_pickle=False)`` reads.

Layout (the public contract, also in the README):

* ``meta``: a 0-d unicode array holding JSON::

      {"format": "convlstm-npz", "version": 1, "gate_order": "ifco", "input_channels": C,
       "layers": [{"filters": F, "kernel_size": [kh, kw], "strides": [sh, sw], "padding": "same",
                   "dilation_rate": [dh, dw], "use_bias": true, "peephole": null,
                   "activation": "tanh", "recurrent_activation": "sigmoid"}, ...]}

  Unknown extra fields (top level and per layer) are kept on a load/save round trip.
* per layer i: ``layers/{i}/kernel`` (*k, C_in, 4F), ``layers/{i}/recurrent_kernel`` (*k, F, 4F),
  ``layers/{i}/bias`` (4F,) when use_bias, ``layers/{i}/peephole_{i,f,o}`` ((F,) or (*S', F)) when
  peephole is set. Gate blocks along the last axis in the order i, f, c, o (Keras' layout).
* all arrays float32, or all float64.

Loading validates everything and raises :class:`WeightFileError` naming the key, what was
expected and what was found. Saving is atomic (temp file in the same folder + ``os.replace``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .fileio import atomic_write  # noqa: F401  (re-exported: reports.build and older callers import it here)
from .spec import GATE_ORDER, SpecError, StackSpec

FORMAT_NAME = "convlstm-npz"
FORMAT_VERSION = 1
ALLOWED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
#: Largest ``meta`` JSON accepted (bytes); a real one is a few hundred bytes per layer.
MAX_META_BYTES = 1 << 20
#: Slack for the .npy header on top of the data size an entry may declare.
NPY_HEADER_SLACK = 4096


class WeightFileError(ValueError):
    """A weight file or weight dict is malformed. The message names the key, expected and found."""


@dataclasses.dataclass
class Weights:
    """Canonical weights: a spec plus arrays keyed as in the file (``layers/{i}/kernel`` ...).

    ``meta_extra`` holds unknown meta fields (``{"top": {...}, "layers": [{...}, ...]}``) so a
    load/save round trip keeps them.
    """

    spec: StackSpec
    arrays: dict[str, np.ndarray]
    meta_extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def dtype(self) -> np.dtype:
        return next(iter(self.arrays.values())).dtype

    def layer(self, i: int) -> dict[str, np.ndarray]:
        """Arrays of layer i keyed by short name (``kernel``, ``bias``, ``peephole_i`` ...)."""
        prefix = f"layers/{i}/"
        return {k[len(prefix):]: v for k, v in self.arrays.items() if k.startswith(prefix)}

    def state_spatials(self) -> list[tuple[int, ...] | None]:
        """Per layer: the state spatial shape fixed by 'full' peepholes, else None."""
        out: list[tuple[int, ...] | None] = []
        for i, layer in enumerate(self.spec.layers):
            if layer.peephole == "full":
                out.append(tuple(self.arrays[f"layers/{i}/peephole_i"].shape[:-1]))
            else:
                out.append(None)
        return out

    def astype(self, dtype: Any) -> Weights:
        dtype = np.dtype(dtype)
        return Weights(self.spec, {k: v.astype(dtype) for k, v in self.arrays.items()}, dict(self.meta_extra))

    def stack_meta(self) -> dict[str, Any]:
        """The ``{"input_channels", "layers"}`` part of ``meta`` (the v2 model file's ``encoder``/``forecaster``
        object), unknown fields included."""
        top = dict(self.meta_extra.get("top", {}))
        layer_extra = list(self.meta_extra.get("layers", []))
        layers = []
        for i, layer in enumerate(self.spec.layers):
            extra = layer_extra[i] if i < len(layer_extra) else {}
            layers.append({**extra, **layer.to_meta()})
        return {**top, "input_channels": self.spec.input_channels, "layers": layers}

    def meta(self) -> dict[str, Any]:
        """The JSON ``meta`` object of the file, unknown fields included."""
        return {**self.stack_meta(), "format": FORMAT_NAME, "version": FORMAT_VERSION, "gate_order": GATE_ORDER}


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------

def _check_array(key: str, value: Any, shape: tuple[int, ...] | None, dtype: np.dtype | None) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise WeightFileError(f"{key}: expected a NumPy array, found {type(value).__name__}")
    if value.dtype not in ALLOWED_DTYPES:
        raise WeightFileError(f"{key}: expected dtype float32 or float64, found {value.dtype}")
    if dtype is not None and value.dtype != dtype:
        raise WeightFileError(
            f"{key}: expected dtype {dtype} like the other arrays of the file, found {value.dtype}"
        )
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise WeightFileError(f"{key}: expected shape {tuple(shape)}, found {tuple(value.shape)}")
    if not np.all(np.isfinite(value)):
        bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
        raise WeightFileError(f"{key}: expected finite values, found {bad} NaN/Inf of {value.size}")
    return value


def validate_arrays(spec: StackSpec, arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Check an array dict against a spec: keys, shapes, one float dtype, finiteness.

    'full' peephole shapes are checked against each other and against the next layer's use
    (every peephole array of a layer must have the same (*S', F) shape).
    """
    expected = spec.weight_shapes()
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    if missing:
        raise WeightFileError(f"missing key(s) {missing}: expected for the spec's {len(spec.layers)} layer(s)")
    if extra:
        raise WeightFileError(
            f"unexpected key(s) {extra}: the spec ({len(spec.layers)} layer(s)) expects exactly {sorted(expected)}"
        )
    first_key = sorted(expected)[0]
    dtype = arrays[first_key].dtype if isinstance(arrays[first_key], np.ndarray) else None
    out: dict[str, np.ndarray] = {}
    for key in sorted(expected):
        shape = expected[key]
        if shape is None:  # 'full' peephole: (*S', F), S' fixed by the array itself
            layer = spec.layers[int(key.split("/")[1])]
            value = arrays[key]
            if not isinstance(value, np.ndarray) or value.ndim != layer.rank + 1 or value.shape[-1] != layer.filters:
                found = getattr(value, "shape", type(value).__name__)
                raise WeightFileError(
                    f"{key}: expected a 'full' peephole of shape (*S', {layer.filters}) with {layer.rank} "
                    f"spatial axes, found {found}"
                )
            sibling = arrays[key.rsplit("_", 1)[0] + "_i"]
            shape = tuple(getattr(sibling, "shape", ()))
            if value.shape != shape or min(shape[:-1]) < 1:
                raise WeightFileError(f"{key}: expected shape {shape} like peephole_i, found {value.shape}")
        out[key] = _check_array(key, arrays[key], shape, dtype)
    return out


def make_weights(spec: StackSpec, arrays: Mapping[str, Any], meta_extra: dict[str, Any] | None = None) -> Weights:
    """Validated :class:`Weights` from a spec and an array dict (copies nothing it need not)."""
    return Weights(spec, validate_arrays(spec, arrays), dict(meta_extra or {}))


#: The version of the encoder-forecaster model file (:mod:`implementations.model_weights`), named in the error
#: that :func:`load` gives for one.
MODEL_FORMAT_VERSION = 2


def check_meta_fields(meta: Mapping[str, Any], wants: Sequence[tuple[str, Any]]) -> None:
    """Each ``(key, value)`` of ``wants`` must be in ``meta`` with exactly that value and type."""
    for key, want in wants:
        if key not in meta:
            raise WeightFileError(f"meta: missing field '{key}' (expected {want!r})")
        found = meta[key]
        if found != want or type(found) is not type(want):
            raise WeightFileError(f"meta.{key}: expected {want!r}, found {found!r}")


def parse_stack_meta(
    meta: Any, where: str, known_top: frozenset[str] = frozenset(), *, no_input: bool = False
) -> tuple[StackSpec, dict[str, Any]]:
    """A ``{"input_channels", "layers"}`` JSON object -> (spec, unknown fields ``{"top": .., "layers": [..]}``).

    ``where`` prefixes errors (``meta``, ``meta.encoder``); ``known_top`` are further top-level fields that are
    not unknown; ``no_input`` as for :class:`~implementations.spec.StackSpec`.
    """
    try:
        spec = StackSpec.from_meta(meta, no_input=no_input)
    except SpecError as exc:
        raise WeightFileError(f"{where}: {exc}") from None
    known = {"input_channels", "layers", *known_top}
    known_layer = set(spec.layers[0].to_meta())
    extra = {
        "top": {k: v for k, v in meta.items() if k not in known},
        "layers": [{k: v for k, v in layer.items() if k not in known_layer} for layer in meta["layers"]],
    }
    return spec, extra


def parse_meta(meta: Any) -> tuple[StackSpec, dict[str, Any]]:
    """Parse the ``meta`` JSON object into a spec and the unknown fields to keep."""
    if not isinstance(meta, dict):
        raise WeightFileError(f"meta: expected a JSON object, found {type(meta).__name__}")
    version = meta.get("version")
    if meta.get("format") == FORMAT_NAME and type(version) is int and version == MODEL_FORMAT_VERSION:
        raise WeightFileError(
            f"meta.version: expected {FORMAT_VERSION!r}, found {version!r}: this is a version-2 file (the "
            "encoder-forecaster model format), which implementations.load does not read; "
            "load it with implementations.model_weights.load_model"
        )
    check_meta_fields(meta, (("format", FORMAT_NAME), ("version", FORMAT_VERSION), ("gate_order", GATE_ORDER)))
    return parse_stack_meta(meta, "meta", frozenset({"format", "version", "gate_order"}))


# ---------------------------------------------------------------------------------------------
# File I/O
# ---------------------------------------------------------------------------------------------

def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> np.ndarray:
    key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
    try:
        with zf.open(info) as fh:
            data = fh.read(info.file_size + 1)
        if len(data) != info.file_size:
            raise WeightFileError(
                f"{path}: entry '{key}': expected {info.file_size} bytes as declared, found {len(data)}"
            )
        return np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
    except WeightFileError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "object" in str(exc).lower():
            raise WeightFileError(
                f"{path}: entry '{key}': expected a numeric array, found an object/pickled array (never unpickled)"
            ) from None
        raise WeightFileError(f"{path}: entry '{key}': not a valid .npy array ({exc})") from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, RuntimeError, Exception) as exc:  # noqa: BLE001
        raise WeightFileError(f"{path}: entry '{key}' is corrupt: {type(exc).__name__}: {exc}") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` refusing duplicate keys: JSON readers disagree on which value wins."""
    keys = [k for k, _ in pairs]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise WeightFileError(f"meta: duplicate JSON key(s) {dupes}: expected each key once in an object")
    return dict(pairs)


@contextlib.contextmanager
def open_npz(path: Path) -> Iterator[tuple[zipfile.ZipFile, dict[str, zipfile.ZipInfo]]]:
    """Open a weight file as a zip and yield it with its entries by key (``.npy`` stripped).

    Refuses a missing or unreadable file, duplicate entries and non-``.npy`` entries. Shared by :func:`load`
    and :func:`implementations.model_weights.load_model`.
    """
    if not path.is_file():
        raise WeightFileError(f"{path}: no such file")
    try:
        zf = zipfile.ZipFile(path)
    except Exception as exc:  # noqa: BLE001 - BadZipFile, OSError, EOFError, NotImplementedError (damaged version)
        raise WeightFileError(f"{path}: expected a .npz (zip) weight file, found an unreadable file ({exc})") from None
    with zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise WeightFileError(f"{path}: duplicate entries {dupes}: expected each key once")
        bad_names = [n for n in names if not n.endswith(".npy")]
        if bad_names:
            raise WeightFileError(f"{path}: unexpected non-array entries {bad_names}: expected only .npy entries")
        yield zf, {n[:-4]: i for n, i in zip(names, infos)}


def read_meta_entry(zf: zipfile.ZipFile, by_key: Mapping[str, zipfile.ZipInfo], path: Path) -> Any:
    """The parsed JSON of the ``meta`` entry (any JSON value; the caller checks it is an object)."""
    if "meta" not in by_key:
        raise WeightFileError(f"{path}: missing key 'meta': expected the JSON metadata entry")
    if by_key["meta"].file_size > MAX_META_BYTES:
        raise WeightFileError(
            f"{path}: entry 'meta' declares {by_key['meta'].file_size} bytes, expected at most {MAX_META_BYTES}"
        )
    meta_arr = _read_member(zf, by_key["meta"], path)
    if meta_arr.shape != () or meta_arr.dtype.kind != "U":
        raise WeightFileError(
            f"{path}: meta: expected a 0-d unicode array, found dtype {meta_arr.dtype} shape {meta_arr.shape}"
        )
    try:
        return json.loads(str(meta_arr), object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise WeightFileError(f"{path}: meta: expected JSON, found unparsable text ({exc})") from None
    except RecursionError:
        raise WeightFileError(f"{path}: meta: expected JSON, found nesting too deep to parse") from None
    except WeightFileError as exc:
        raise WeightFileError(f"{path}: {exc}") from None


def read_entries(
    zf: zipfile.ZipFile,
    by_key: Mapping[str, zipfile.ZipInfo],
    path: Path,
    expected: Mapping[str, tuple[int, ...] | None],
    described: str,
) -> dict[str, np.ndarray]:
    """Read exactly the array entries ``expected`` (key -> shape, None for a 'full' peephole of unknown size).

    Missing and unexpected keys are refused (``described`` says what meta describes, e.g. ``"2 layer(s)"``), and
    so is an entry that declares more bytes than its shape can need (zip bombs, garbage), before it is read.
    """
    keys = set(by_key) - {"meta"}
    missing = sorted(set(expected) - keys)
    unexpected = sorted(keys - set(expected))
    if missing:
        raise WeightFileError(f"{path}: missing key(s) {missing}: expected by meta ({described})")
    if unexpected:
        raise WeightFileError(f"{path}: unexpected key(s) {unexpected}: meta describes {described}")
    arrays: dict[str, np.ndarray] = {}
    for key, shape in expected.items():
        info = by_key[key]
        if shape is None:
            limit = 8 * (1 << 26)  # a 'full' peephole: at most 64 Mi float64 values
        else:
            limit = 8 * math.prod(shape) + NPY_HEADER_SLACK
        if info.file_size > limit:
            raise WeightFileError(
                f"{path}: entry '{key}' declares {info.file_size} bytes, expected at most {limit} for its shape"
            )
        arrays[key] = _read_member(zf, info, path)
    return arrays


def load(path: str | os.PathLike) -> Weights:
    """Load and validate a weight file. Raises :class:`WeightFileError` on any problem."""
    path = Path(path)
    with open_npz(path) as (zf, by_key):
        meta = read_meta_entry(zf, by_key, path)
        try:
            spec, extra = parse_meta(meta)
        except WeightFileError as exc:
            raise WeightFileError(f"{path}: {exc}") from None
        arrays = read_entries(zf, by_key, path, spec.weight_shapes(), f"{len(spec.layers)} layer(s)")
    try:
        arrays = validate_arrays(spec, arrays)
    except WeightFileError as exc:
        raise WeightFileError(f"{path}: {exc}") from None
    return Weights(spec, arrays, extra)


def save(path: str | os.PathLike, weights: Weights) -> Path:
    """Validate and write ``weights`` atomically to ``path`` (a ``.npz``)."""
    if weights.spec.no_input:
        raise WeightFileError(
            "input_channels: expected >= 1 in a v1 file, found a stack whose first layer reads no input (a "
            "forecaster); save the whole model with implementations.model_weights.save_model"
        )
    arrays = validate_arrays(weights.spec, weights.arrays)
    meta = np.array(json.dumps(weights.meta(), sort_keys=True))
    payload = {"meta": meta, **arrays}
    return atomic_write(path, lambda fh: np.savez(fh, **payload))


# ---------------------------------------------------------------------------------------------
# Initialisers
# ---------------------------------------------------------------------------------------------

def _glorot_uniform(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    receptive = math.prod(shape[:-2])
    fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape)


def _orthogonal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    rows, cols = math.prod(shape[:-1]), shape[-1]
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return q.reshape(shape)


def init_weights(
    spec: StackSpec,
    seed: int,
    dtype: Any = np.float32,
    input_spatial: tuple[int, ...] | None = None,
) -> Weights:
    """Seeded initial weights with Keras' ConvLSTM defaults.

    glorot_uniform kernel, orthogonal recurrent kernel, zero bias with the forget block set to 1
    (Keras' ``unit_forget_bias``), zero peepholes. ``input_spatial`` is needed for 'full'
    peepholes, whose shape depends on the frame size.
    """
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for key, shape in spec.weight_shapes(input_spatial).items():
        name = key.rsplit("/", 1)[1]
        if name == "kernel":
            arrays[key] = _glorot_uniform(rng, shape)
        elif name == "recurrent_kernel":
            arrays[key] = _orthogonal(rng, shape)
        elif name == "bias":
            f = shape[0] // 4
            bias = np.zeros(shape)
            bias[f : 2 * f] = 1.0
            arrays[key] = bias
        else:
            arrays[key] = np.zeros(shape)
    return make_weights(spec, {k: v.astype(dtype) for k, v in arrays.items()})


def random_weights(
    spec: StackSpec,
    seed: int,
    dtype: Any = np.float64,
    input_spatial: tuple[int, ...] | None = None,
    scale: float = 0.5,
) -> Weights:
    """Seeded normal(0, scale) weights everywhere, peepholes and biases included (for tests)."""
    rng = np.random.default_rng(seed)
    arrays = {
        key: (scale * rng.standard_normal(shape)).astype(dtype)
        for key, shape in spec.weight_shapes(input_spatial).items()
    }
    return make_weights(spec, arrays)
