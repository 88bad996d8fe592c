"""Keras 3 (live models, ``.keras`` files) and Keras 2 / tf.keras (legacy ``.h5`` model files).

Both Keras generations store exactly our layout -- ``kernel (*k, C_in, 4F)``, ``recurrent_kernel (*k, F, 4F)``,
``bias (4F,)``, gates ``i, f, c, o`` -- so arrays are copied unchanged. What differs is the meaning of the
name ``'hard_sigmoid'``: Keras 3 means ``clip(x/6 + 0.5, 0, 1)`` (ours: ``'hard_sigmoid'``), Keras 2
``clip(0.2x + 0.5, 0, 1)`` (ours: ``'hard_sigmoid_keras2'``, also Keras 2's default recurrent activation).
Importing reads the Keras version off the file; exporting refuses what Keras 3 cannot express.

Keras is imported only inside the functions; the ``.h5`` reader needs only h5py (no tf_keras).
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import atomic_path
from ..spec import LayerSpec, SpecError
from ..weights import Weights
from ._common import (
    ConversionError,
    as_float_array,
    fail,
    prefixed,
    refuse_peepholes,
    require,
    stack_weights,
)
from .isolated import parse_isolated

#: Keras class name -> spatial rank.
KERAS_CLASSES = {"ConvLSTM1D": 1, "ConvLSTM2D": 2, "ConvLSTM3D": 3}
_ACTIVATIONS = {"tanh": "tanh", "relu": "relu", "linear": "linear"}
_WEIGHT_NAMES = ("kernel", "recurrent_kernel", "bias")
#: Layer-config keys that change the computation: required rather than defaulted.
_REQUIRED_CONFIG = ("filters", "kernel_size", "strides", "padding", "dilation_rate", "activation",
                    "recurrent_activation", "use_bias", "go_backwards")
#: Decompression-bomb guards: an .h5 weight may expand to at most this multiple of its stored bytes (plus 1 MiB);
#: a .keras member to at most ``KERAS_MAX_EXPANSION`` times its compressed size (plus 1 MiB). Keras stores both
#: uncompressed, so real files expand by a factor of 1.
H5_MAX_EXPANSION = KERAS_MAX_EXPANSION = 100
H5_SMALL_BYTES = KERAS_SMALL_BYTES = 1 << 20


# ---------------------------------------------------------------------------------------------
# Layer config -> LayerSpec (shared by live Keras 3 layers and the JSON inside .h5 files)
# ---------------------------------------------------------------------------------------------

def _activation_name(value: Any) -> Any:
    """The name of a serialized Keras activation (a string, None, or a ``{"config": name}`` dict)."""
    if value is None:
        return "linear"
    if isinstance(value, Mapping) and isinstance(value.get("config"), str):
        return value["config"]
    return value


def _int_tuple(value: Any, rank: int, name: str, where: str) -> tuple[int, ...]:
    values = (value,) * rank if isinstance(value, int) else tuple(value)
    if len(values) != rank or not all(isinstance(v, int) for v in values):
        fail(where, f"{name}: expected {rank} ints, found {value!r}")
    return values


def layer_spec_from_keras_config(
    config: Mapping[str, Any], class_name: str, where: str, *, keras_major: int, last: bool
) -> LayerSpec:
    """Our LayerSpec for a Keras ConvLSTM layer config (``layer.get_config()`` or its JSON in an .h5).

    ``keras_major`` (2 or 3) decides what ``'hard_sigmoid'`` means. ``last``: whether this is the stack's last
    layer (earlier layers must return sequences). Training-only settings (dropout, initialisers, regularizers,
    constraints, stateful, unroll) and ``data_format`` (the weights do not depend on it) are ignored.
    """
    rank = KERAS_CLASSES[class_name]
    if not isinstance(config, Mapping):
        fail(where, f"layer config: expected a JSON object, found {type(config).__name__}")
    absent = [key for key in _REQUIRED_CONFIG if key not in config]
    if absent:
        fail(where, f"layer config lacks {absent}: every Keras 2/3 ConvLSTM config records them, and a default in "
                    "their place could compute a different function (a damaged or hand-edited file?)")
    if config.get("go_backwards"):
        fail(
            where,
            "go_backwards=True: our weight files do not record a direction (it is a per-call option: "
            "forward(..., go_backwards=True)), so the converted file would compute a different function",
        )
    if not last and not config.get("return_sequences", False):
        fail(where, "return_sequences=False but another ConvLSTM layer follows: not a plain stack")
    activation = _activation_name(config.get("activation", "tanh"))
    if activation not in _ACTIVATIONS:
        fail(where, f"activation {activation!r} has no equivalent in our spec (expected one of {sorted(_ACTIVATIONS)})")
    default_rec = "sigmoid" if keras_major >= 3 else "hard_sigmoid"
    recurrent = _activation_name(config.get("recurrent_activation", default_rec))
    if recurrent == "hard_sigmoid":
        # Keras 3: relu6(x + 3) / 6 = clip(x/6 + 0.5); Keras 2 / tf.keras: clip(0.2 x + 0.5).
        recurrent = "hard_sigmoid" if keras_major >= 3 else "hard_sigmoid_keras2"
    elif recurrent != "sigmoid":
        fail(
            where,
            f"recurrent_activation {recurrent!r} has no equivalent in our spec (expected 'sigmoid' or 'hard_sigmoid')",
        )
    padding = str(config.get("padding", "valid")).lower()
    if padding not in ("same", "valid"):
        fail(where, f"padding {config.get('padding')!r}: expected 'same' or 'valid'")
    try:
        return LayerSpec(
            filters=config["filters"],
            kernel_size=_int_tuple(config["kernel_size"], rank, "kernel_size", where),
            strides=_int_tuple(config.get("strides", 1), rank, "strides", where),
            padding=padding,
            dilation_rate=_int_tuple(config.get("dilation_rate", 1), rank, "dilation_rate", where),
            use_bias=bool(config.get("use_bias", True)),
            activation=activation,
            recurrent_activation=recurrent,
        )
    except KeyError as exc:
        fail(where, f"layer config lacks {exc.args[0]!r}")
    except SpecError as exc:
        fail(where, str(exc))


# ---------------------------------------------------------------------------------------------
# Live Keras 3 objects
# ---------------------------------------------------------------------------------------------

def _check_convlstm_layer(keras: Any, layer: Any, where: str) -> None:
    name = type(layer).__name__
    stock = getattr(keras.layers, name, None) if name in KERAS_CLASSES else None
    if stock is not None and type(layer) is stock:
        return
    bases = [c.__name__ for c in type(layer).__mro__ if c.__name__ in KERAS_CLASSES]
    if bases:
        fail(where, f"is a subclass of {bases[0]} ({name}): its call() may differ, only the stock Keras layers "
                    "are converted")
    fail(where, f"is a {name}, not a ConvLSTM1D/2D/3D layer: only a plain stack of ConvLSTM layers can be converted")


def _stack_layers(keras: Any, obj: Any) -> list[Any]:
    """The ConvLSTM layers of a Sequential / Functional model, a list of layers, or one layer, in order."""
    if isinstance(obj, keras.Model):
        from keras.src.models.functional import Functional

        layers = [layer for layer in obj.layers if type(layer).__name__ != "InputLayer"]
        for i, layer in enumerate(layers):
            _check_convlstm_layer(keras, layer, f"model {obj.name!r}: layer {i} ({layer.name!r})")
        if isinstance(obj, keras.Sequential):
            return layers
        if not isinstance(obj, Functional):
            fail(
                f"model {obj.name!r}",
                f"is a subclassed {type(obj).__name__}: its call() is arbitrary Python, so the order of its "
                "layers is unknown; pass its ConvLSTM layers as a list if they form a plain stack",
            )
        if len(obj.inputs) != 1:
            fail(f"model {obj.name!r}", f"has {len(obj.inputs)} inputs: a plain stack has one")
        previous, previous_name = obj.inputs[0], "the model input"
        for i, layer in enumerate(layers):
            where = f"model {obj.name!r}: layer {i} ({layer.name!r})"
            if len(layer._inbound_nodes) != 1:
                fail(where, f"is called {len(layer._inbound_nodes)} times (shared weights): not a plain stack")
            if layer.input is not previous:
                fail(where, f"does not read exactly the sequence of {previous_name}: the model is not a plain stack "
                            "(branches, skips, initial states or reordered layers)")
            out = layer.output
            previous, previous_name = (out[0] if isinstance(out, (list, tuple)) else out), repr(layer.name)
        return layers
    layers = list(obj) if isinstance(obj, (list, tuple)) else [obj]
    for i, layer in enumerate(layers):
        _check_convlstm_layer(keras, layer, f"layer {i} ({getattr(layer, 'name', '?')!r})")
    return layers


def from_keras(model_or_layers: Any) -> Weights:
    """Canonical Weights from a live Keras 3 model (Sequential or Functional), a list of layers, or one layer.

    Only a plain stack is accepted: stock ``keras.layers.ConvLSTM{1,2,3}D`` layers, each reading the previous
    one's full sequence (InputLayers are skipped). Layers must be built. Arrays are copied bit for bit;
    float16/bfloat16 variables are widened to float32, mixed float32/float64 to float64.
    """
    keras = require("keras", "keras")
    layers = _stack_layers(keras, model_or_layers)
    entries = []
    for i, layer in enumerate(layers):
        where = f"layer {i} ({layer.name!r})"
        if not layer.built:
            fail(where, "is not built, so it has no weights yet: call it on an input first")
        spec = layer_spec_from_keras_config(
            layer.get_config(), type(layer).__name__, where, keras_major=3, last=i == len(layers) - 1
        )
        cell = layer.cell
        arrays = {
            name: as_float_array(keras.ops.convert_to_numpy(getattr(cell, name)), f"{where}: {name}")
            for name in _WEIGHT_NAMES
            if name != "bias" or spec.use_bias
        }
        entries.append((where, spec, arrays))
    return stack_weights(entries)


def _check_expressible_in_keras(weights: Weights) -> None:
    refuse_peepholes(weights.spec.layers, "Keras")
    for i, layer in enumerate(weights.spec.layers):
        if layer.recurrent_activation == "hard_sigmoid_keras2":
            fail(
                f"layer {i}",
                "recurrent_activation='hard_sigmoid_keras2' (clip(0.2x + 0.5, 0, 1)) cannot be converted to Keras 3: "
                "Keras 3's 'hard_sigmoid' is clip(x/6 + 0.5, 0, 1) and it has no built-in Keras 2 hard sigmoid",
            )


def to_keras(weights: Weights, input_spatial: Sequence[int], *, return_sequences: bool = True) -> Any:
    """A built ``keras.Sequential`` of stock ConvLSTM{rank}D layers holding ``weights`` bit for bit.

    ``input_spatial``: the frame size (*S). Keras ConvLSTM layers need static spatial dimensions, so the model
    accepts inputs ``(B, T, *S, C)`` of exactly that size (any B and T). Layers are channels_last and return
    sequences (the last one unless ``return_sequences=False``). Refused: peepholes and 'hard_sigmoid_keras2'.
    On the JAX backend, float64 weights enable ``jax_enable_x64`` (process-wide), as our runners do.
    """
    _check_expressible_in_keras(weights)
    spec = weights.spec
    spatial = tuple(int(n) for n in input_spatial)
    try:
        spec.state_spatials(spatial)
    except SpecError as exc:
        fail("input_spatial", str(exc))
    keras = require("keras", "keras")
    dtype = weights.dtype.name
    if dtype == "float64" and keras.backend.backend() == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
    model = keras.Sequential([keras.Input(shape=(None, *spatial, spec.input_channels), dtype=dtype)])
    for i, layer in enumerate(spec.layers):
        keras_layer = getattr(keras.layers, f"ConvLSTM{layer.rank}D")(
            filters=layer.filters,
            kernel_size=layer.kernel_size,
            strides=layer.strides,
            padding=layer.padding,
            data_format="channels_last",
            dilation_rate=layer.dilation_rate,
            activation=layer.activation,
            recurrent_activation=layer.recurrent_activation,
            use_bias=layer.use_bias,
            return_sequences=return_sequences or i < len(spec.layers) - 1,
            dtype=dtype,
        )
        model.add(keras_layer)
        arrays = weights.layer(i)
        keras_layer.set_weights([arrays[name] for name in _WEIGHT_NAMES if name in arrays])
        for name, got in zip(_WEIGHT_NAMES, keras_layer.get_weights()):
            if got.dtype != arrays[name].dtype or not np.array_equal(got, arrays[name]):
                fail(f"layer {i}", f"Keras ({keras.backend.backend()}) stored {name} as {got.dtype} with different "
                                   f"values: the export would not be exact")
    return model


# ---------------------------------------------------------------------------------------------
# .keras files
# ---------------------------------------------------------------------------------------------

def _check_keras_archive(path: Path) -> None:
    """Refuse, from the zip headers alone, members that would expand far beyond their stored size (zip bombs):
    Keras reads config.json whole into memory."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except Exception as exc:  # noqa: BLE001 - BadZipFile, OSError, EOFError ...
        fail(str(path), f"cannot be loaded as a Keras 3 model: not a readable zip ({type(exc).__name__}: {exc})")
    for info in infos:
        if info.file_size > KERAS_MAX_EXPANSION * info.compress_size + KERAS_SMALL_BYTES:
            fail(str(path), f"member {info.filename!r} declares {info.file_size} bytes but stores "
                            f"{info.compress_size}: refusing to expand it (more than {KERAS_MAX_EXPANSION}x; Keras "
                            "stores members uncompressed)")


def read_keras_file(path: str | os.PathLike) -> Weights:
    """Canonical Weights from a Keras 3 ``.keras`` file holding a plain stack of ConvLSTM layers.

    Loaded with ``keras.saving.load_model(compile=False, safe_mode=True)`` (no arbitrary code).
    """
    path = Path(path)
    if not path.is_file():
        fail(str(path), "no such file")
    if path.suffix != ".keras":
        fail(str(path), "a Keras 3 model file must end in .keras (keras.saving.load_model needs the extension)")
    _check_keras_archive(path)
    keras = require("keras", "keras")
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for unreadable files
        fail(str(path), f"cannot be loaded as a Keras 3 model ({type(exc).__name__}: {exc})")
    return prefixed(path, from_keras, model)


def write_keras_file(weights: Weights, path: str | os.PathLike, input_spatial: Sequence[int] | None) -> Path:
    """Write ``to_keras(weights, input_spatial)`` as a ``.keras`` file, atomically."""
    path = Path(path)
    if path.suffix != ".keras":
        fail(str(path), "a Keras 3 model file must end in .keras (keras.saving.load_model needs the extension)")
    if input_spatial is None:
        fail("keras export", "needs the frame size (--input-spatial / input_spatial): Keras ConvLSTM layers only "
                             "accept static spatial dimensions, so the saved model is built for one frame size")
    model = to_keras(weights, input_spatial)
    with atomic_path(path, ".keras") as tmp:
        model.save(tmp)
    return path


# ---------------------------------------------------------------------------------------------
# Legacy Keras 2 / tf.keras .h5 model files (read with h5py only)
# ---------------------------------------------------------------------------------------------

def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _h5_attr_list(group: Any, name: str) -> list[str]:
    """A list attribute as Keras writes it: one attribute, or chunks ``name0``, ``name1``, ... when large."""
    if name in group.attrs:
        return [_text(v) for v in np.atleast_1d(group.attrs[name]) if len(_text(v))]
    out, i = [], 0
    while f"{name}{i}" in group.attrs:
        out += [_text(v) for v in np.atleast_1d(group.attrs[f"{name}{i}"])]
        i += 1
    return out


def _keras_major(version: str | None, where: str = "") -> int:
    """Major Keras version from a file's ``keras_version`` attribute; absent means the Keras 2 era. An unreadable
    version is refused: it decides what 'hard_sigmoid' means."""
    if version is None:
        return 2
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        fail(where, f"keras_version: expected a version such as '2.15.0', found {version!r}")


def _inbound_sources(node: Any) -> list[tuple[str, int, int]] | None:
    """(layer, node, tensor) indices a serialized node reads; None if the node format is unknown.

    Keras 2 writes ``[[name, node, tensor, kwargs], ...]``; Keras 3's legacy h5 writes ``{"args": [...],
    "kwargs": {...}}`` holding ``keras_history`` triples.
    """
    if isinstance(node, list):
        sources = []
        for entry in node:
            if not (isinstance(entry, list) and len(entry) >= 3):
                return None
            if len(entry) > 3 and entry[3]:  # call kwargs: initial states, constants ...
                return None
            sources.append((str(entry[0]), int(entry[1]), int(entry[2])))
        return sources
    if isinstance(node, Mapping):
        found: list[tuple[str, int, int]] = []

        def walk(value: Any) -> None:
            if isinstance(value, Mapping):
                history = value.get("config", {}).get("keras_history") if value.get("class_name") == (
                    "__keras_tensor__") else None
                if history is not None:
                    found.append((str(history[0]), int(history[1]), int(history[2])))
                for v in value.values():
                    walk(v)
            elif isinstance(value, list):
                for v in value:
                    walk(v)

        walk([node.get("args", []), node.get("kwargs", {})])
        return found
    return None


def _layers_from_model_config(config: Any, where: str) -> list[tuple[str, str, Mapping[str, Any]]]:
    """(name, class name, layer config) of every ConvLSTM layer of a Sequential/Functional model config, in order."""
    if not isinstance(config, Mapping) or "class_name" not in config:
        fail(where, "model_config: expected a JSON object with 'class_name' and 'config'")
    kind, body = config["class_name"], config.get("config")
    entries = body if isinstance(body, list) else (body or {}).get("layers")  # Keras < 2.2.3: a bare list
    if kind not in ("Sequential", "Functional", "Model") or not isinstance(entries, list):
        fail(where, f"model class {kind!r}: only a Sequential or Functional model of ConvLSTM layers is converted")
    layers = []
    for entry in entries:
        cls, cfg = entry.get("class_name"), entry.get("config", {})
        name = str(entry.get("name", cfg.get("name")))
        if cls == "InputLayer":
            continue
        if cls not in KERAS_CLASSES:
            fail(where, f"layer {len(layers)} ({name!r}) is a {cls}, not a ConvLSTM1D/2D/3D layer: "
                        "only a plain stack of ConvLSTM layers can be converted")
        layers.append((name, cls, cfg, entry.get("inbound_nodes")))
    if kind != "Sequential":
        inputs = body.get("input_layers") or []
        inputs = [inputs] if inputs and not isinstance(inputs[0], list) else inputs
        if len(inputs) != 1:
            fail(where, f"the model has {len(inputs)} inputs: a plain stack has one")
        previous = str(inputs[0][0])
        for name, _cls, _cfg, nodes in layers:
            sources = _inbound_sources(nodes[0]) if isinstance(nodes, list) and len(nodes) == 1 else None
            if sources != [(previous, 0, 0)]:
                fail(where, f"layer {name!r} does not read exactly the sequence of {previous!r}: the model is not "
                            "a plain stack (branches, skips, initial states or shared layers)")
            previous = name
    return [(name, cls, cfg) for name, cls, cfg, _ in layers]


def _standard_float(dataset: Any) -> bool:
    """Whether an HDF5 float dataset uses a standard IEEE layout (a damaged exponent bias would rescale values)."""
    from h5py import h5t

    tid = dataset.id.get_type()
    return any(tid.equal(getattr(h5t, f"IEEE_F{bits}{order}")) for bits in (16, 32, 64) for order in ("LE", "BE"))


def _h5_layer_arrays(model_weights: Any, name: str, where: str) -> dict[str, np.ndarray]:
    if name not in model_weights:
        fail(where, f"no weights group 'model_weights/{name}'")
    group = model_weights[name]
    arrays: dict[str, np.ndarray] = {}
    for weight_name in _h5_attr_list(group, "weight_names"):
        short = weight_name.rsplit("/", 1)[-1].split(":")[0]
        if short not in _WEIGHT_NAMES or short in arrays:
            fail(where, f"unexpected weight {weight_name!r}: expected kernel, recurrent_kernel and bias")
        if weight_name not in group:
            fail(where, f"weight {weight_name!r} is listed but missing from the file")
        dataset = group[weight_name]
        if dataset.dtype.kind == "f" and not _standard_float(dataset):
            fail(where, f"weight {weight_name!r} is stored as a non-IEEE float type (damaged datatype?): expected "
                        "IEEE float16/32/64")
        declared, stored = dataset.size * dataset.dtype.itemsize, dataset.id.get_storage_size()
        if declared > H5_MAX_EXPANSION * stored + H5_SMALL_BYTES:
            fail(where, f"weight {weight_name!r} declares {declared} bytes but stores {stored}: refusing to expand "
                        f"it (more than {H5_MAX_EXPANSION}x its stored size; Keras writes weights uncompressed)")
        arrays[short] = as_float_array(dataset[()], f"{where}: {weight_name}")
    for required in ("kernel", "recurrent_kernel"):
        if required not in arrays:
            fail(where, f"missing weight {required!r}")
    return arrays


def read_keras2_h5(path: str | os.PathLike) -> Weights:
    """Canonical Weights from a legacy Keras ``.h5`` *model* file (``model.save('m.h5')``), read with h5py only.

    Accepted: a Sequential or a Functional chain of ConvLSTM{1,2,3}D layers. The file's ``keras_version``
    decides what ``'hard_sigmoid'`` means: Keras 2 / tf.keras (or no version) -> ``'hard_sigmoid_keras2'``,
    Keras >= 3 (which writes the same legacy layout) -> ``'hard_sigmoid'``. A weights-only ``.h5`` is refused:
    it does not record strides, padding or activations.
    """
    require("h5py", "keras2-h5")
    path = Path(path)
    if not path.is_file():
        fail(str(path), "no such file")
    # libhdf5 can segfault or hang on a damaged file: parse it in a forked child (see interop/isolated.py).
    return parse_isolated(f"{__name__}:_parse_keras2_h5", path, H5_READ_TIMEOUT_S, preload=("h5py",))


#: Seconds the isolated reader may take to parse an .h5 before the file is refused (libhdf5 can loop forever on
#: some damaged files).
H5_READ_TIMEOUT_S = 120.0


def _parse_keras2_h5(path: Path) -> Weights:
    """The whole parse of :func:`read_keras2_h5`, run in the isolated reader's child process."""
    return stack_weights(_read_keras2_file(path), str(path))


def _read_keras2_file(path: Path) -> list[tuple[str, LayerSpec, dict[str, np.ndarray]]]:
    """The (where, spec, arrays) of every layer; any h5py/HDF5 error becomes a ConversionError."""
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        fail(str(path), f"expected a legacy Keras .h5 model file, found an unreadable file ({exc})")
    try:
        with handle as f:
            return _read_keras2_entries(f, path)
    except ConversionError:
        raise
    except Exception as exc:  # noqa: BLE001 - h5py/HDF5 raise KeyError, RuntimeError, OSError ... on damaged files
        fail(str(path), f"is a damaged .h5 file ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")


def _read_keras2_entries(f: Any, path: Path) -> list[tuple[str, LayerSpec, dict[str, np.ndarray]]]:
    """The (where, spec, arrays) of every layer of an open legacy .h5 model file."""
    raw = f.attrs.get("model_config")
    if raw is None:
        fail(str(path), "no 'model_config' attribute: a weights-only .h5 (save_weights) does not record the "
                        "layers' strides, padding or activations; save the whole model (model.save('m.h5'))")
    try:
        config = json.loads(_text(raw))
    except json.JSONDecodeError as exc:
        fail(str(path), f"model_config: expected JSON, found unparsable text ({exc})")
    if "model_weights" not in f:
        fail(str(path), "no 'model_weights' group: not a Keras model file")
    weights_group = f["model_weights"]
    version = f.attrs.get("keras_version", weights_group.attrs.get("keras_version"))
    major = _keras_major(_text(version) if version is not None else None, str(path))
    layers = _layers_from_model_config(config, str(path))
    entries = []
    for i, (name, cls, cfg) in enumerate(layers):
        where = f"{path}: layer {i} ({name!r})"
        spec = layer_spec_from_keras_config(cfg, cls, where, keras_major=major, last=i == len(layers) - 1)
        entries.append((where, spec, _h5_layer_arrays(weights_group, name, where)))
    return entries
