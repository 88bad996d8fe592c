"""Converter plumbing shared by every peer (format inference, gate reordering, lazy imports), and the helpers
the peer test modules (``test_interop_keras/flax/torch_fused/cli``) import from here.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

import numpy as np
import pytest

from implementations import interop, reference
from implementations.api import ForwardResult
from implementations.spec import StackSpec
from implementations.tolerances import tolerance
from implementations.weights import WeightFileError, Weights, random_weights

from .conftest import ROOT, assert_all_close, get_runner

# ---------------------------------------------------------------------------------------------
# Helpers for the peer tests
# ---------------------------------------------------------------------------------------------

def assert_bit_exact(actual: Weights, expected: Weights, what: str) -> None:
    """Same spec, same keys, same dtype and identical bits in every array."""
    assert actual.spec == expected.spec, f"{what}: spec {actual.spec} != {expected.spec}"
    assert sorted(actual.arrays) == sorted(expected.arrays), f"{what}: keys {sorted(actual.arrays)}"
    for key, want in expected.arrays.items():
        got = actual.arrays[key]
        assert got.dtype == want.dtype and got.shape == want.shape, f"{what}: {key} {got.dtype}{got.shape}"
        assert np.array_equal(got, want), f"{what}: {key} differs (max-abs {np.max(np.abs(got - want)):.3e})"


def peer_tensors(outputs: np.ndarray, states: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """A peer's results under the names ForwardResult.tensors() uses (states given as (h, c) per layer)."""
    return ForwardResult(np.asarray(outputs), [np.asarray(h) for h, _ in states],
                         [np.asarray(c) for _, c in states]).tensors()


def check_ours_against_peer(
    framework: str, case: str, weights: Weights, x: np.ndarray, expected: dict[str, np.ndarray], dtype: str, peer: str
) -> None:
    """Run one of our frameworks on the converted weights and compare every tensor the peer produced."""
    runner = get_runner(framework, f"interop-{peer}-{case}", weights, dtype)
    actual = runner.forward(x.astype(dtype)).tensors()
    assert_all_close(f"{peer} weights converted to ours", framework, case, actual, expected,
                     tolerance("forward", dtype), other=peer, kind="interop", dtype=dtype)


def reference_tensors(weights: Weights, x: np.ndarray) -> dict[str, np.ndarray]:
    return reference.forward(weights, x).tensors()


def sample_input(shape: Sequence[int], dtype: str, seed: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(tuple(shape)).astype(dtype)


def sample_weights(spec: StackSpec, dtype: str, seed: int = 3) -> Weights:
    return random_weights(spec, seed=seed, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# Tests of the shared plumbing
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "name, fmt",
    [("w.npz", "npz"), ("m.keras", "keras"), ("m.h5", "keras2-h5"), ("m.HDF5", "keras2-h5"), ("s.pt", "torch-fused"),
     ("s.pth", "torch-fused"), ("p.msgpack", "flax")],
)
def test_format_is_inferred_from_the_extension(name, fmt):
    assert interop.infer_format(name) == fmt


def test_unknown_extension_and_format_are_refused():
    with pytest.raises(interop.ConversionError, match=r"w\.bin: cannot infer the format from the extension '\.bin'"):
        interop.infer_format("w.bin")
    with pytest.raises(interop.ConversionError, match=r"unknown format 'onnx'"):
        interop.infer_format("w.npz", "onnx")


def test_conversion_error_is_a_weight_file_error():
    # The CLI reports WeightFileError as one `error:` line with exit status 2.
    assert issubclass(interop.ConversionError, WeightFileError)


@pytest.mark.parametrize("order", ["icfo", "ifoc", "cifo", "ofci"])
def test_gate_reordering_is_an_exact_permutation(order):
    a = np.random.default_rng(0).standard_normal((3, 2, 20))
    moved = interop.reorder_gates(a, "ifco", order)
    for j, gate in enumerate(order):
        src = "ifco".index(gate)
        assert np.array_equal(moved[..., 5 * j:5 * (j + 1)], a[..., 5 * src:5 * (src + 1)])
    assert np.array_equal(interop.reorder_gates(moved, order, "ifco"), a)


def test_importing_the_converters_imports_no_framework():
    code = (
        "import sys, implementations.interop, convlstm_bench.cli; "
        "bad = [m for m in ('torch', 'keras', 'jax', 'flax', 'tensorflow', 'h5py') if m in sys.modules]; "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
