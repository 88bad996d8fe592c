"""Keras 3 and Keras 2 (.h5) conversion, checked against the real ``keras.layers.ConvLSTM{1,2,3}D`` as the oracle.

Runs under the current KERAS_BACKEND (``make test`` reruns this module, marked ``keras``, on jax and torch).
Keras on the JAX backend is compared in float32 only: its ``ops.tanh`` returns float32 for float64 inputs
(keras/src/backend/common/dtypes.py maps float64 to float32 off TensorFlow), so its "float64" outputs are only
float32-accurate and cannot serve as a float64 oracle.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from convlstm_bench import cli
from implementations import interop, reference
from implementations.spec import GATE_ORDER, LayerSpec, StackSpec
from implementations.tolerances import compare, tolerance
from implementations.weights import load, make_weights, random_weights, save

from .conftest import FRAMEWORKS, assert_all_close
from .keras2_h5 import write_keras2_h5
from .test_interop_common import (
    assert_bit_exact,
    check_ours_against_peer,
    peer_tensors,
    reference_tensors,
    sample_input,
    sample_weights,
)

keras = pytest.importorskip("keras", reason="keras is not installed: the Keras peer is unavailable")
h5py = pytest.importorskip("h5py", reason="h5py is not installed: legacy .h5 files cannot be written")

pytestmark = pytest.mark.keras

BACKEND = keras.backend.backend()
JAX_F64 = (
    "Keras on the JAX backend computes ops.tanh in float32 for float64 inputs, so its float64 outputs are only "
    "float32-accurate: the Keras peer is compared in float32 only on this backend"
)
DTYPES = ["float32", "float64"]


def skip_unsupported(dtype: str) -> None:
    if dtype == "float64" and BACKEND == "jax":
        pytest.skip(JAX_F64)


def to_np(tensor: Any) -> np.ndarray:
    return keras.ops.convert_to_numpy(tensor)


# ---------------------------------------------------------------------------------------------
# Random Keras stacks (every option Keras allows: strides, 'valid', dilation, even kernels, ranks 1-3)
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class KerasCase:
    id: str
    rank: int
    channels: int
    layers: tuple[dict[str, Any], ...]  # keyword arguments of keras.layers.ConvLSTM{rank}D
    input_shape: tuple[int, ...]
    seed: int


def _describe(kw: dict[str, Any]) -> str:
    k = "x".join(map(str, kw["kernel_size"]))
    extra = "".join(f"-{n[0]}{v}" for n, v in (("strides", kw.get("strides", 1)), ("dilation", kw.get(
        "dilation_rate", 1))) if v != 1)
    return (f"k{k}{extra}-{kw['padding']}-{kw['activation']}-{kw['recurrent_activation']}"
            f"{'' if kw['use_bias'] else '-nobias'}")


def random_keras_case(seed: int, feature: str) -> KerasCase:
    """A seeded random stack whose first layer has ``feature`` (strides, valid, dilation, even, conv1d, conv3d)."""
    rng = np.random.default_rng(seed)
    rank = {"conv1d": 1, "conv3d": 3}.get(feature, 2)
    layers = []
    for j in range(1 if rank == 3 else 2):
        kw: dict[str, Any] = {
            "filters": int(rng.integers(2, 4)),
            "kernel_size": tuple(int(k) for k in rng.integers(1, 4, rank)),
            "padding": str(rng.choice(["same", "valid"])),
            "activation": str(rng.choice(["tanh", "relu", "linear"])),
            "recurrent_activation": str(rng.choice(["sigmoid", "hard_sigmoid"])),
            "use_bias": bool(rng.integers(0, 2)),
        }
        if j == 0 and feature == "strides":
            kw["strides"] = 2
        if j == 0 and feature == "valid":
            kw.update(padding="valid", kernel_size=(3, 2))
        if j == 0 and feature == "dilation":
            kw.update(dilation_rate=2, kernel_size=(3, 2))
        if j == 0 and feature == "even":
            kw.update(padding="same", kernel_size=(2, 4))
        layers.append(kw)
    spatial = {1: (9,), 2: (8, 7), 3: (5, 4, 5)}[rank]
    case_id = f"{feature}-" + "+".join(_describe(kw) for kw in layers)
    return KerasCase(case_id, rank, 2, tuple(layers), (2, 3, *spatial, 2), seed)


KERAS_CASES = {
    c.id: c
    for c in (random_keras_case(seed, f) for seed, f in enumerate(["strides", "valid", "dilation", "even", "conv1d",
                                                                    "conv3d"]))
}


def new_layer(rank: int, dtype: str, **kw: Any) -> Any:
    return getattr(keras.layers, f"ConvLSTM{rank}D")(dtype=dtype, **kw)


def randomize(layer: Any, rng: np.random.Generator, dtype: str) -> None:
    """Random normal(0, 0.5) weights through the peer's own API (shapes as Keras reports them)."""
    layer.set_weights([(0.5 * rng.standard_normal(w.shape)).astype(dtype) for w in layer.get_weights()])


@functools.cache
def keras_peer(case_id: str, dtype: str) -> tuple[Any, np.ndarray, dict[str, np.ndarray]]:
    """(Keras functional model returning [outputs, h0, c0, h1, c1 ...], input, the Keras results)."""
    case = KERAS_CASES[case_id]
    rng = np.random.default_rng(case.seed)
    inputs = keras.Input(shape=(None, *case.input_shape[2:]), dtype=dtype)
    seq, states = inputs, []
    for kw in case.layers:
        layer = new_layer(case.rank, dtype, return_sequences=True, return_state=True, **kw)
        seq, h, c = layer(seq)
        randomize(layer, rng, dtype)
        states.append((h, c))
    model = keras.Model(inputs, [seq, *[t for pair in states for t in pair]])
    x = sample_input(case.input_shape, dtype)
    out = [to_np(t) for t in model(x)]
    return model, x, peer_tensors(out[0], list(zip(out[1::2], out[2::2])))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case_id", list(KERAS_CASES))
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_keras_weights_run_the_same_in_ours(framework, case_id, dtype):
    skip_unsupported(dtype)
    model, x, expected = keras_peer(case_id, dtype)
    weights = interop.from_keras(model)
    assert weights.dtype == np.dtype(dtype)
    check_ours_against_peer(framework, case_id, weights, x, expected, dtype, f"keras[{BACKEND}]")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case_id", list(KERAS_CASES))
def test_ours_back_to_keras_is_exact_and_runs_the_same(case_id, dtype):
    skip_unsupported(dtype)
    model, x, expected = keras_peer(case_id, dtype)
    peer_layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    weights = interop.from_keras(peer_layers)  # the list form gives the same as the model form
    assert_bit_exact(weights, interop.from_keras(model), "list of layers vs model")
    exported = interop.to_keras(weights, x.shape[2:-1])
    for original, new in zip(peer_layers, exported.layers):
        assert type(new) is type(original)
        for a, b in zip(original.get_weights(), new.get_weights()):
            assert a.dtype == b.dtype and np.array_equal(a, b)
    assert_bit_exact(interop.from_keras(exported), weights, "ours -> keras -> ours")
    got = {"outputs": to_np(exported(x))}
    assert_all_close("ours exported back to Keras", "keras", case_id, got, {"outputs": expected["outputs"]},
                     tolerance("forward", dtype), other=f"keras[{BACKEND}]", kind="interop", dtype=dtype)


# ---------------------------------------------------------------------------------------------
# A .keras file through `convlstm-bench convert`, reproduced by every framework
# ---------------------------------------------------------------------------------------------

KERAS_FILE_SPATIAL = (7, 6)


@functools.cache
def keras_file_peer(dtype: str, folder: str) -> tuple[Path, np.ndarray, np.ndarray]:
    """A Sequential of real ConvLSTM2D layers saved as .keras: (path, input, Keras outputs)."""
    rng = np.random.default_rng(42)
    model = keras.Sequential([
        keras.Input(shape=(None, *KERAS_FILE_SPATIAL, 2), dtype=dtype),
        new_layer(2, dtype, filters=3, kernel_size=(3, 2), strides=2, padding="same",
                  recurrent_activation="hard_sigmoid", return_sequences=True),
        new_layer(2, dtype, filters=2, kernel_size=3, padding="valid", use_bias=False, activation="relu",
                  return_sequences=True),
    ])
    for layer in model.layers:
        randomize(layer, rng, dtype)
    path = Path(folder) / f"model-{dtype}.keras"
    model.save(path)
    x = sample_input((2, 3, *KERAS_FILE_SPATIAL, 2), dtype)
    return path, x, to_np(model(x))


@pytest.fixture(scope="module")
def keras_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("keras_files"))


def run_cli(*args: Any) -> int:
    return cli.main([str(a) for a in args])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_keras_file_converts_with_the_cli_and_reproduces_keras(framework, dtype, keras_dir, tmp_path, capsys):
    skip_unsupported(dtype)
    path, x, y = keras_file_peer(dtype, keras_dir)
    assert run_cli("convert", path, "-o", tmp_path / "w.npz") == 0
    assert "wrote" in capsys.readouterr().out
    weights = load(tmp_path / "w.npz")
    assert [layer.padding for layer in weights.spec.layers] == ["same", "valid"]
    assert weights.spec.layers[0].recurrent_activation == "hard_sigmoid"
    check_ours_against_peer(framework, f"keras-file-{dtype}", weights, x, {"outputs": y}, dtype, f"keras[{BACKEND}]")


@pytest.mark.parametrize("dtype", DTYPES)
def test_keras_file_round_trip_through_the_cli_is_bit_exact(dtype, keras_dir, tmp_path):
    skip_unsupported(dtype)
    path, x, y = keras_file_peer(dtype, keras_dir)
    assert run_cli("convert", path, "-o", tmp_path / "a.npz") == 0
    assert run_cli("convert", tmp_path / "a.npz", "-o", tmp_path / "b.keras", "--input-spatial",
                   *KERAS_FILE_SPATIAL) == 0
    assert run_cli("convert", tmp_path / "b.keras", "-o", tmp_path / "c.npz") == 0
    assert_bit_exact(load(tmp_path / "c.npz"), load(tmp_path / "a.npz"), "npz -> .keras -> npz")
    reloaded = keras.saving.load_model(tmp_path / "b.keras", compile=False)
    assert np.array_equal(to_np(reloaded(x)), y), "the re-exported .keras model computes differently"


# ---------------------------------------------------------------------------------------------
# Legacy Keras 2 / tf.keras .h5 model files, written here with h5py in the legacy layout
# ---------------------------------------------------------------------------------------------



KERAS2_SPEC = StackSpec(2, (
    LayerSpec(3, (3, 3), padding="same", recurrent_activation="hard_sigmoid_keras2"),
    LayerSpec(2, (2, 3), strides=2, padding="valid", recurrent_activation="sigmoid", activation="relu"),
))


def scaled_for_keras3_hard_sigmoid(array: np.ndarray) -> np.ndarray:
    """clip(0.2 z + 0.5) = clip((1.2 z)/6 + 0.5): scale the i, f, o gate blocks by 1.2 for a Keras 3 layer."""
    f = array.shape[-1] // 4
    out = array.copy()
    for gate in "ifo":
        j = GATE_ORDER.index(gate)
        out[..., j * f:(j + 1) * f] *= 1.2
    return out


@pytest.mark.parametrize("functional", [False, True], ids=["sequential", "functional"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_keras2_h5_hard_sigmoid_imports_as_keras2_and_matches_a_keras3_oracle(functional, dtype, tmp_path):
    original = sample_weights(KERAS2_SPEC, dtype)
    path = write_keras2_h5(tmp_path / "m.h5", original, functional=functional)
    imported = interop.read_keras2_h5(path)
    assert imported.spec.layers[0].recurrent_activation == "hard_sigmoid_keras2"
    assert imported.spec.layers[1].recurrent_activation == "sigmoid"
    assert_bit_exact(imported, original, "keras2 .h5 -> ours")
    skip_unsupported(dtype)
    # Outside oracle: a real Keras 3 layer with 'hard_sigmoid' (x/6 + 0.5) and i, f, o blocks scaled by 1.2.
    inputs = keras.Input(shape=(None, 7, 6, 2), dtype=dtype)
    seq = inputs
    for i, layer in enumerate(KERAS2_SPEC.layers):
        rec = "hard_sigmoid" if layer.recurrent_activation == "hard_sigmoid_keras2" else "sigmoid"
        k_layer = new_layer(2, dtype, filters=layer.filters, kernel_size=layer.kernel_size, strides=layer.strides,
                            padding=layer.padding, activation=layer.activation, recurrent_activation=rec,
                            return_sequences=True)
        seq = k_layer(seq)
        arrays = [imported.layer(i)[n] for n in ("kernel", "recurrent_kernel", "bias")]
        k_layer.set_weights([scaled_for_keras3_hard_sigmoid(a) if rec == "hard_sigmoid" else a for a in arrays])
    x = sample_input((2, 3, 7, 6, 2), dtype)
    y = to_np(keras.Model(inputs, seq)(x))
    ours = reference.forward(imported, x).outputs
    assert_all_close("keras2 .h5 import", "reference", "keras2-h5", {"outputs": ours}, {"outputs": y},
                     tolerance("forward", dtype), other=f"keras[{BACKEND}] scaled hard_sigmoid", kind="interop",
                     dtype=dtype)
    # The pitfall: reading the name 'hard_sigmoid' with Keras 3's formula changes the outputs visibly.
    wrong_spec = StackSpec(2, (dataclasses.replace(KERAS2_SPEC.layers[0], recurrent_activation="hard_sigmoid"),
                               KERAS2_SPEC.layers[1]))
    wrong = reference.forward(make_weights(wrong_spec, imported.arrays), x).outputs
    assert np.max(np.abs(wrong - ours)) > 1e-2


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_keras2_h5_converts_with_the_cli_and_runs_in_every_framework(framework, tmp_path):
    original = sample_weights(KERAS2_SPEC, "float32")
    write_keras2_h5(tmp_path / "m.h5", original)
    assert run_cli("convert", tmp_path / "m.h5", "-o", tmp_path / "w.npz") == 0
    converted = load(tmp_path / "w.npz")
    assert_bit_exact(converted, original, "keras2 .h5 -> npz (CLI)")
    x = sample_input((2, 3, 7, 6, 2), "float64")
    check_ours_against_peer(framework, "keras2-h5", converted, x, reference_tensors(original, x), "float32",
                            "reference(keras2 semantics)")


def test_keras3_written_h5_keeps_the_keras3_hard_sigmoid(tmp_path):
    # Keras 3 writes the same legacy layout; its keras_version attribute says 3.x, so 'hard_sigmoid' = x/6 + 0.5.
    rng = np.random.default_rng(9)
    model = keras.Sequential([keras.Input(shape=(None, 6, 5, 2)),
                              new_layer(2, "float32", filters=3, kernel_size=3, padding="same",
                                        recurrent_activation="hard_sigmoid", return_sequences=True)])
    randomize(model.layers[0], rng, "float32")
    model.save(tmp_path / "k3.h5")
    imported = interop.read_keras2_h5(tmp_path / "k3.h5")
    assert imported.spec.layers[0].recurrent_activation == "hard_sigmoid"
    x = sample_input((2, 3, 6, 5, 2), "float32")
    comp = compare("outputs", reference.forward(imported, x).outputs, to_np(model(x)), tolerance("forward", "float32"))
    assert comp.passed, comp.describe()


# ---------------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------------

def built(layer: Any, spatial: tuple[int, ...] = (6, 5), channels: int = 2) -> Any:
    layer(keras.Input(shape=(None, *spatial, channels)))
    return layer


class MyConvLSTM2D(keras.layers.ConvLSTM2D):
    pass


def branching_model() -> Any:
    inputs = keras.Input(shape=(None, 6, 5, 2))
    a = keras.layers.ConvLSTM2D(2, 3, padding="same", return_sequences=True)(inputs)
    b = keras.layers.ConvLSTM2D(2, 3, padding="same", return_sequences=True)(inputs)
    return keras.Model(inputs, [a, b])


def shared_layer_model() -> Any:
    inputs = keras.Input(shape=(None, 6, 5, 2))
    layer = keras.layers.ConvLSTM2D(2, 3, padding="same", return_sequences=True)
    return keras.Model(inputs, layer(layer(inputs)))


KERAS_IMPORT_REFUSALS = {
    "dense layer": (lambda: keras.Sequential([keras.Input((None, 6, 5, 2)), keras.layers.ConvLSTM2D(
        2, 3, return_sequences=True), keras.layers.Dense(3)]), r"layer 1 \('dense.*'\): is a Dense, not a ConvLSTM"),
    "subclass": (lambda: [built(MyConvLSTM2D(2, 3))], r"is a subclass of ConvLSTM2D \(MyConvLSTM2D\)"),
    "wrapper": (lambda: [built(keras.layers.Bidirectional(keras.layers.ConvLSTM2D(2, 3, return_sequences=True)))],
                r"is a Bidirectional, not a ConvLSTM1D/2D/3D layer"),
    "branches": (branching_model, r"does not read exactly the sequence of 'conv_lstm2d.*': .*not a plain stack"),
    "shared layer": (shared_layer_model, r"is called 2 times \(shared weights\): not a plain stack"),
    "go_backwards": (lambda: [built(keras.layers.ConvLSTM2D(2, 3, go_backwards=True))],
                     r"go_backwards=True: our weight files do not record a direction"),
    "activation": (lambda: [built(keras.layers.ConvLSTM2D(2, 3, activation="sigmoid"))],
                   r"activation 'sigmoid' has no equivalent in our spec"),
    "recurrent activation": (lambda: [built(keras.layers.ConvLSTM2D(2, 3, recurrent_activation="tanh"))],
                             r"recurrent_activation 'tanh' has no equivalent in our spec"),
    "unbuilt": (lambda: [keras.layers.ConvLSTM2D(2, 3)], r"layer 0 \('conv_lstm2d.*'\): is not built"),
    "chain mismatch": (lambda: [built(keras.layers.ConvLSTM2D(3, 3, return_sequences=True)),
                                built(keras.layers.ConvLSTM2D(2, 3), channels=4)],
                       r"reads 4 channels but the previous ConvLSTM layer .* outputs 3: not a plain stack"),
    "not sequences": (lambda: [built(keras.layers.ConvLSTM2D(3, 3)), built(keras.layers.ConvLSTM2D(2, 3), channels=3)],
                      r"return_sequences=False but another ConvLSTM layer follows"),
    "empty": (lambda: [], r"no ConvLSTM layers found"),
}


@pytest.mark.parametrize("name", list(KERAS_IMPORT_REFUSALS))
def test_keras_import_refusals(name):
    make, pattern = KERAS_IMPORT_REFUSALS[name]
    with pytest.raises(interop.ConversionError, match=pattern):
        interop.from_keras(make())


def test_subclassed_keras_model_is_refused():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.a = keras.layers.ConvLSTM2D(2, 3, return_sequences=True)

        def call(self, x):
            return self.a(x)

    net = Net()
    net(np.zeros((1, 2, 6, 5, 2), "float32"))
    with pytest.raises(interop.ConversionError, match=r"is a subclassed Net: its call\(\) is arbitrary Python"):
        interop.from_keras(net)


KERAS_EXPORT_REFUSALS = {
    "channel peephole": (StackSpec(2, (LayerSpec(3, (3, 3), peephole="channel"),)), (6, 5),
                         r"layer 0: peephole='channel' cannot be converted to Keras: it has no peephole weights"),
    "full peephole": (StackSpec(2, (LayerSpec(3, (3, 3)), LayerSpec(2, (3, 3), peephole="full"))), (6, 5),
                      r"layer 1: peephole='full' cannot be converted to Keras"),
    "keras2 hard sigmoid": (StackSpec(2, (LayerSpec(3, (3, 3), recurrent_activation="hard_sigmoid_keras2"),)), (6, 5),
                            r"'hard_sigmoid_keras2' \(clip\(0.2x \+ 0.5, 0, 1\)\) cannot be converted to Keras 3"),
    "frame too small": (StackSpec(2, (LayerSpec(3, (3, 3), padding="valid"),)), (2, 5),
                        r"input_spatial: layer 0: input spatial shape \(2, 5\) is too small"),
}


@pytest.mark.parametrize("name", list(KERAS_EXPORT_REFUSALS))
def test_keras_export_refusals(name):
    spec, spatial, pattern = KERAS_EXPORT_REFUSALS[name]
    weights = random_weights(spec, seed=1, dtype="float32", input_spatial=(6, 5))
    with pytest.raises(interop.ConversionError, match=pattern):
        interop.to_keras(weights, spatial)


def test_keras_file_export_needs_the_frame_size_and_the_extension(tmp_path):
    weights = sample_weights(StackSpec(2, (LayerSpec(3, (3, 3)),)), "float32")
    with pytest.raises(interop.ConversionError, match=r"needs the frame size \(--input-spatial"):
        interop.write_keras_file(weights, tmp_path / "m.keras", None)
    with pytest.raises(interop.ConversionError, match=r"must end in \.keras"):
        interop.write_keras_file(weights, tmp_path / "m.zip", (6, 5))
    assert os.listdir(tmp_path) == []


H5_REFUSALS = {
    "weights only": ({"with_config": False}, r"no 'model_config' attribute: a weights-only \.h5"),
    "dense layer": ({"extra_layers": ({"class_name": "Dense", "name": "dense", "config": {"units": 3, "name": "dense"},
                                       "inbound_nodes": []},)}, r"layer 2 \('dense'\) is a Dense, not a ConvLSTM"),
    "go_backwards": ({"overrides": {"go_backwards": True}}, r"go_backwards=True"),
    "activation": ({"overrides": {"activation": "softsign"}}, r"activation 'softsign' has no equivalent"),
    "branch": ({"functional": True, "inbound": [[["input_1", 0, 0, {}]]]},
               r"layer 'conv_lst_m2d_1' does not read exactly the sequence of 'conv_lst_m2d'"),
    "initial state": ({"functional": True, "inbound": [[["conv_lst_m2d", 0, 0, {"initial_state": [1]}]]]},
                      r"does not read exactly the sequence"),
}


@pytest.mark.parametrize("name", list(H5_REFUSALS))
def test_keras2_h5_refusals(name, tmp_path):
    kwargs, pattern = H5_REFUSALS[name]
    path = write_keras2_h5(tmp_path / "m.h5", sample_weights(KERAS2_SPEC, "float32"), **kwargs)
    with pytest.raises(interop.ConversionError, match=pattern):
        interop.read_keras2_h5(path)


def test_keras2_h5_damaged_files_are_refused(tmp_path):
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(interop.ConversionError, match=r"text\.h5: expected a legacy Keras \.h5 model file"):
        interop.read_keras2_h5(tmp_path / "text.h5")
    path = write_keras2_h5(tmp_path / "m.h5", sample_weights(KERAS2_SPEC, "float32"))
    with h5py.File(path, "a") as f:
        del f["model_weights/conv_lst_m2d_1/conv_lst_m2d_1/bias:0"]
    with pytest.raises(interop.ConversionError, match=r"weight 'conv_lst_m2d_1/bias:0' is listed but missing"):
        interop.read_keras2_h5(path)
    path = write_keras2_h5(tmp_path / "m2.h5", sample_weights(KERAS2_SPEC, "float32"))
    with h5py.File(path, "a") as f:
        del f["model_weights/conv_lst_m2d/conv_lst_m2d/recurrent_kernel:0"]
        f["model_weights/conv_lst_m2d/conv_lst_m2d/recurrent_kernel:0"] = np.zeros((3, 3, 5, 12), "float32")
    with pytest.raises(interop.ConversionError, match=r"layers/0/recurrent_kernel: expected shape \(3, 3, 3, 12\)"):
        interop.read_keras2_h5(path)


def test_keras2_h5_export_is_refused(tmp_path):
    weights = sample_weights(KERAS2_SPEC, "float32")
    save(tmp_path / "w.npz", weights)
    with pytest.raises(interop.ConversionError, match=r"format 'keras2-h5' is import-only"):
        interop.convert(tmp_path / "w.npz", tmp_path / "m.h5")
