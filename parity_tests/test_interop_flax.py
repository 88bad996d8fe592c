"""flax.linen conversion, checked against the real ``flax.linen.ConvLSTMCell`` inside ``flax.linen.RNN``.

float64 runs need ``jax_enable_x64``, which these tests turn on process-wide when they reach float64 (as our
JAX runner does).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np
import pytest

from convlstm_bench import cli
from implementations import interop, reference
from implementations.spec import LayerSpec, StackSpec
from implementations.tolerances import tolerance
from implementations.weights import load, make_weights, random_weights, save

from .conftest import FRAMEWORKS, assert_all_close
from .test_interop_common import assert_bit_exact, check_ours_against_peer, peer_tensors, sample_input

jax = pytest.importorskip("jax", reason="jax is not installed: the flax peer is unavailable")
nn = pytest.importorskip("flax.linen", reason="flax is not installed: the flax peer is unavailable")
serialization = pytest.importorskip("flax.serialization")

DTYPES = ["float32", "float64"]


class FlaxStack(nn.Module):
    """The peer: real ConvLSTMCells, each scanned over time by nn.RNN (the layout to_flax writes)."""

    features: tuple[int, ...]
    kernels: tuple[tuple[int, ...], ...]
    use_bias: bool = True
    dtype: Any = "float32"

    def setup(self) -> None:
        self.layers = [
            nn.RNN(nn.ConvLSTMCell(f, k, use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.dtype),
                   return_carry=True)
            for f, k in zip(self.features, self.kernels)
        ]

    def __call__(self, x: Any) -> tuple[Any, list[tuple[Any, Any]]]:
        states = []
        for rnn in self.layers:
            (c, h), x = rnn(x)  # the carry is (c, h)
            states.append((h, c))
        return x, states


@dataclasses.dataclass(frozen=True)
class FlaxCase:
    id: str
    features: tuple[int, ...]
    kernels: tuple[tuple[int, ...], ...]
    input_shape: tuple[int, ...]
    use_bias: bool
    seed: int


def random_flax_case(seed: int, rank: int, use_bias: bool = True) -> FlaxCase:
    """Seeded random stack: 1-2 layers, kernels of size 1-4 per axis (even ones included; stride 1, SAME only)."""
    rng = np.random.default_rng(100 + seed)
    n = 1 if rank == 3 else 2
    features = tuple(int(f) for f in rng.integers(2, 4, n))
    kernels = tuple(tuple(int(k) for k in rng.integers(1, 5, rank)) for _ in range(n))
    spatial = {1: (7,), 2: (6, 5), 3: (4, 3, 4)}[rank]
    kid = "+".join("k" + "x".join(map(str, k)) for k in kernels)
    case_id = f"{rank}d-{kid}-f{'-'.join(map(str, features))}{'' if use_bias else '-nobias'}"
    return FlaxCase(case_id, features, kernels, (2, 3, *spatial, 2), use_bias, seed)


FLAX_CASES = {c.id: c for c in (random_flax_case(0, 2), random_flax_case(1, 2), random_flax_case(2, 1),
                                random_flax_case(3, 3), random_flax_case(4, 2, use_bias=False))}


def enable_dtype(dtype: str) -> None:
    if dtype == "float64" and not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)


def module(case: FlaxCase, dtype: str) -> FlaxStack:
    return FlaxStack(case.features, case.kernels, case.use_bias, dtype)


def run_flax(case: FlaxCase, dtype: str, params: Any, x: np.ndarray) -> dict[str, np.ndarray]:
    out, states = module(case, dtype).apply(params, x)
    return peer_tensors(np.asarray(out), [(np.asarray(h), np.asarray(c)) for h, c in states])


@functools.cache
def flax_peer(case_id: str, dtype: str) -> tuple[Any, np.ndarray, dict[str, np.ndarray]]:
    """(random params of the flax stack, input, flax results). Biases random too (flax initialises them to 0)."""
    enable_dtype(dtype)
    case = FLAX_CASES[case_id]
    x = sample_input(case.input_shape, dtype)
    params = module(case, dtype).init(jax.random.key(case.seed), x)
    rng = np.random.default_rng(case.seed)
    params = jax.tree_util.tree_map(lambda p: (0.5 * rng.standard_normal(p.shape)).astype(dtype), params)
    return params, x, run_flax(case, dtype, params, x)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case_id", list(FLAX_CASES))
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_flax_params_run_the_same_in_ours(framework, case_id, dtype):
    params, x, expected = flax_peer(case_id, dtype)
    weights = interop.from_flax(params)
    assert weights.dtype == np.dtype(dtype)
    assert all(layer.use_bias for layer in weights.spec.layers)  # a bias-less cell still has b_f = +1
    check_ours_against_peer(framework, case_id, weights, x, expected, dtype, "flax")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case_id", list(FLAX_CASES))
def test_ours_back_to_flax_fits_the_module_and_runs_the_same(case_id, dtype):
    params, x, expected = flax_peer(case_id, dtype)
    case = FLAX_CASES[case_id]
    weights = interop.from_flax(params)
    exported = interop.to_flax(weights, use_bias=case.use_bias)
    shapes = jax.tree_util.tree_map(lambda a: (a.shape, str(a.dtype)), params)
    assert jax.tree_util.tree_map(lambda a: (a.shape, str(a.dtype)), exported) == shapes
    assert_bit_exact(interop.from_flax(exported), weights, "ours -> flax -> ours")
    got = run_flax(case, dtype, exported, x)
    assert_all_close("ours exported back to flax", "jax", case_id, got, expected, tolerance("forward", dtype),
                     other="flax", kind="interop", dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_msgpack_round_trip_through_the_cli_is_bit_exact(dtype, tmp_path):
    enable_dtype(dtype)
    spec = StackSpec(2, (LayerSpec(3, (2, 4)), LayerSpec(2, (3, 3))))
    original = random_weights(spec, seed=8, dtype=dtype)
    save(tmp_path / "a.npz", original)
    assert cli.main(["convert", str(tmp_path / "a.npz"), "-o", str(tmp_path / "p.msgpack")]) == 0
    assert cli.main(["convert", str(tmp_path / "p.msgpack"), "-o", str(tmp_path / "b.npz")]) == 0
    assert_bit_exact(load(tmp_path / "b.npz"), original, "npz -> msgpack -> npz")
    # The file is a plain msgpack tree that the flax module loads and runs as our reference does.
    tree = serialization.msgpack_restore((tmp_path / "p.msgpack").read_bytes())
    case = FlaxCase("cli", (3, 2), ((2, 4), (3, 3)), (2, 3, 6, 5, 2), True, 0)
    x = sample_input(case.input_shape, dtype)
    assert_all_close("msgpack written by the CLI", "jax", "cli-msgpack", run_flax(case, dtype, tree, x),
                     reference.forward(original, x).tensors(), tolerance("forward", dtype), other="reference",
                     kind="interop", dtype=dtype)


def test_bias_split_is_exact_where_subtracting_one_would_round():
    # b_f = 1e-8 (float32): b_f - 1 rounds to -1, so putting b_f - 1 into ih/bias would lose b_f entirely.
    spec = StackSpec(1, (LayerSpec(1, (1, 1)),))
    weights = make_weights(spec, {"layers/0/kernel": np.ones((1, 1, 1, 4), np.float32),
                                  "layers/0/recurrent_kernel": np.ones((1, 1, 1, 4), np.float32),
                                  "layers/0/bias": np.array([0.1, 1e-8, -3e7, 0.3], np.float32)})
    tree = interop.to_flax(weights)
    cell = tree["params"]["layers_0"]["cell"]
    assert np.array_equal(cell["hh"]["bias"], np.array([0, 0, -1, 0], np.float32))  # i, c, f, o
    assert np.array_equal(cell["ih"]["bias"], np.array([0.1, -3e7, 1e-8, 0.3], np.float32))
    assert_bit_exact(interop.from_flax(tree), weights, "ours -> flax -> ours")


def test_flax_no_bias_cell_imports_with_forget_bias_one_and_exports_back():
    params, _, _ = flax_peer(next(k for k, c in FLAX_CASES.items() if not c.use_bias), "float32")
    weights = interop.from_flax(params)
    for i, layer in enumerate(weights.spec.layers):
        f = layer.filters
        assert np.array_equal(weights.arrays[f"layers/{i}/bias"], np.repeat(np.float32([0, 1, 0, 0]), f))
    back = interop.to_flax(weights, use_bias=False)
    assert "bias" not in back["params"]["layers_0"]["cell"]["ih"]


def test_accepted_tree_layouts():
    weights = random_weights(StackSpec(2, (LayerSpec(3, (3, 3)), LayerSpec(2, (1, 3)))), seed=1, dtype="float32")
    stack = interop.to_flax(weights)["params"]
    cells = [stack[f"layers_{i}"]["cell"] for i in range(2)]
    for tree in ({"RNN_0": {"cell": cells[0]}, "RNN_1": {"cell": cells[1]}}, {"ConvLSTMCell_0": cells[0],
                                                                            "ConvLSTMCell_1": cells[1]}):
        assert_bit_exact(interop.from_flax(tree), weights, "stack layout")
    one = random_weights(StackSpec(2, (LayerSpec(3, (3, 3)),)), seed=1, dtype="float64")
    cell = interop.to_flax(one)["params"]["layers_0"]["cell"]
    for tree in (cell, {"cell": cell}, {"params": cell}, {"params": {"cell": cell}}):
        assert_bit_exact(interop.from_flax(tree), one, "single-cell layout")


def test_degenerate_options_are_converted_as_the_same_function():
    # 'valid' with 1x1 kernels and a dilation along a size-1 kernel axis are no-ops, so flax can express them.
    spec = StackSpec(2, (LayerSpec(3, (1, 1), padding="valid"), LayerSpec(2, (1, 3), dilation_rate=(2, 1))))
    weights = random_weights(spec, seed=2, dtype="float64")
    back = interop.from_flax(interop.to_flax(weights))
    assert back.spec == StackSpec(2, (LayerSpec(3, (1, 1)), LayerSpec(2, (1, 3))))
    assert all(np.array_equal(back.arrays[k], v) for k, v in weights.arrays.items())
    x = sample_input((1, 2, 5, 4, 2), "float64")
    assert np.array_equal(reference.forward(back, x).outputs, reference.forward(weights, x).outputs)


L = LayerSpec
FLAX_EXPORT_REFUSALS = {
    "peephole": (L(3, (3, 3), peephole="channel"), {}, r"layer 0: peephole='channel' cannot be converted to flax"),
    "strides": (L(3, (3, 3), strides=2), {}, r"layer 0: strides=\(2, 2\) cannot be converted to flax\.linen\."
                                             r"ConvLSTMCell: the cell applies its strides and padding to the hidden"),
    "valid": (L(3, (3, 1), padding="valid"), {}, r"padding='valid' with kernel \(3, 1\) cannot be converted"),
    "dilation": (L(3, (3, 3), dilation_rate=(1, 2)), {}, r"dilation_rate=\(1, 2\) with kernel \(3, 3\) cannot be"),
    "activation": (L(3, (3, 3), activation="relu"), {},
                   r"activation='relu', recurrent_activation='sigmoid' cannot "
                   r"be converted to flax\.linen\.ConvLSTMCell: the cell hard-codes"),
    "hard sigmoid": (L(3, (3, 3), recurrent_activation="hard_sigmoid"), {}, r"recurrent_activation='hard_sigmoid'"),
    "no bias": (L(3, (3, 3), use_bias=False), {}, r"use_bias=False cannot be converted to a bias-less flax\.linen\."
                                                  r"ConvLSTMCell: the cell adds \+1 to the forget pre-activation"),
    "bias into no-bias cell": (L(3, (3, 3)), {"use_bias": False},
                               r"a bias-less flax\.linen\.ConvLSTMCell "
                               r"\(use_bias=False\) has the fixed bias \(0, \+1, 0, 0\)"),
}


@pytest.mark.parametrize("name", list(FLAX_EXPORT_REFUSALS))
def test_flax_export_refusals(name):
    layer, kwargs, pattern = FLAX_EXPORT_REFUSALS[name]
    weights = random_weights(StackSpec(2, (layer,)), seed=0, dtype="float32", input_spatial=(5, 5))
    with pytest.raises(interop.ConversionError, match=pattern):
        interop.to_flax(weights, **kwargs)


def test_no_bias_layer_exports_with_explicit_bias_when_asked():
    weights = random_weights(StackSpec(2, (L(3, (3, 3), use_bias=False),)), seed=0, dtype="float32")
    back = interop.from_flax(interop.to_flax(weights, use_bias=True))
    assert back.spec.layers[0].use_bias and not np.any(back.arrays["layers/0/bias"])
    x = sample_input((1, 2, 5, 5, 2), "float64")
    assert np.array_equal(reference.forward(back, x).outputs, reference.forward(weights, x).outputs)


def _cell(c_in: int = 2, f: int = 3, k: tuple[int, ...] = (3, 3), bias: bool = True) -> dict[str, Any]:
    conv = {"kernel": np.zeros((*k, c_in, 4 * f), np.float32)}
    hh = {"kernel": np.zeros((*k, f, 4 * f), np.float32)}
    if bias:
        conv["bias"], hh["bias"] = np.zeros(4 * f, np.float32), np.zeros(4 * f, np.float32)
    return {"ih": conv, "hh": hh}


FLAX_IMPORT_REFUSALS = {
    "unknown layout": ({"dense": {"kernel": np.zeros((2, 2))}}, r"unexpected keys \['dense'\]: expected flax params"),
    "two prefixes": ({"RNN_0": _cell(), "layers_1": _cell(3)}, r"layer keys with several prefixes"),
    "index gap": ({"layers_0": _cell(), "layers_2": _cell(3)}, r"layer indices \[0, 2\]: expected 0 \.\.\. 1"),
    "bias in one conv": ({"ih": _cell()["ih"], "hh": _cell(bias=False)["hh"]},
                         r"one conv has a bias and the other not"),
    "hh kernel": ({"ih": _cell()["ih"], "hh": _cell(k=(3, 2))["hh"]},
                  r"'cell'/hh/kernel: expected shape \(3, 3, 3, 12\), found \(3, 2, 3, 12\)"),
    "chain": ({"layers_0": _cell(), "layers_1": _cell(c_in=4)},
              r"reads 4 channels but the previous ConvLSTM layer .* outputs 3"),
    "int kernel": ({"ih": {"kernel": np.zeros((3, 3, 2, 12), np.int32)}, "hh": _cell(bias=False)["hh"]},
                   r"ih/kernel: expected a float array"),
    "not a tree": ([1, 2], r"expected flax params of ConvLSTMCells"),
}


@pytest.mark.parametrize("name", list(FLAX_IMPORT_REFUSALS))
def test_flax_import_refusals(name):
    tree, pattern = FLAX_IMPORT_REFUSALS[name]
    with pytest.raises(interop.ConversionError, match=pattern):
        interop.from_flax(tree)


def test_damaged_msgpack_is_refused(tmp_path):
    (tmp_path / "p.msgpack").write_bytes(b"\xc1\xc1 not msgpack")
    with pytest.raises(interop.ConversionError, match=r"p\.msgpack: expected a flax msgpack param tree"):
        interop.read_flax_file(tmp_path / "p.msgpack")
