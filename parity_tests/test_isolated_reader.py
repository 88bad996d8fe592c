"""The isolated file reader (``implementations/interop/isolated.py``): a parser that crashes, hangs or fails in
the child is a clean ConversionError in the caller, and a user script without a ``__main__`` guard runs once."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from implementations import weights as wf
from implementations.interop import ConversionError
from implementations.interop.isolated import parse_isolated
from implementations.spec import LayerSpec, StackSpec

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the isolated reader forks (POSIX only)")

ROOT = Path(__file__).resolve().parent.parent
SPEC = StackSpec(input_channels=2, layers=(LayerSpec(filters=3, kernel_size=(3, 3)),))


# Parsers run by the helper process (imported there by name).
def good_parser(path: Path) -> wf.Weights:
    return wf.load(path)


def segfault_parser(path: Path) -> wf.Weights:
    import ctypes

    ctypes.string_at(0)  # reads address 0: SIGSEGV
    raise AssertionError("unreachable")


def hanging_parser(path: Path) -> wf.Weights:
    time.sleep(3600)
    raise AssertionError("unreachable")


def refusing_parser(path: Path) -> wf.Weights:
    raise ConversionError(f"{path}: refused for a reason")


def test_result_is_returned_exactly(tmp_path):
    weights = wf.random_weights(SPEC, seed=3, dtype="float64")
    path = wf.save(tmp_path / "w.npz", weights)
    got = parse_isolated(f"{__name__}:good_parser", path, 60.0)
    assert got.spec == weights.spec
    for key, value in weights.arrays.items():
        assert got.arrays[key].dtype == value.dtype and (got.arrays[key] == value).all(), key


def test_conversion_error_keeps_its_message(tmp_path):
    with pytest.raises(ConversionError, match="refused for a reason"):
        parse_isolated(f"{__name__}:refusing_parser", tmp_path / "x.h5", 60.0)


def test_crash_in_the_parser_is_a_clean_error_and_the_reader_recovers(tmp_path):
    with pytest.raises(ConversionError, match=r"x\.h5: crashed the parser \(killed by signal 11\)"):
        parse_isolated(f"{__name__}:segfault_parser", tmp_path / "x.h5", 60.0)
    test_result_is_returned_exactly(tmp_path)


def test_hanging_parser_is_refused_after_the_timeout(tmp_path):
    start = time.monotonic()
    with pytest.raises(ConversionError, match=r"did not finish within 1 s"):
        parse_isolated(f"{__name__}:hanging_parser", tmp_path / "x.h5", 1.0)
    assert time.monotonic() - start < 20
    test_result_is_returned_exactly(tmp_path)


def test_script_without_main_guard_runs_its_top_level_once(tmp_path):
    """multiprocessing's spawn/forkserver would re-run this script's top level in the child; ours must not."""
    pytest.importorskip("h5py")
    from parity_tests.keras2_h5 import write_keras2_h5

    h5 = write_keras2_h5(tmp_path / "m.h5", wf.random_weights(SPEC, seed=1, dtype="float32"))
    log = tmp_path / "ran.log"
    script = tmp_path / "user_script.py"
    script.write_text(textwrap.dedent(f"""
        from implementations import interop
        with open({str(log)!r}, "a") as fh:
            fh.write("top level ran\\n")
        w = interop.read_keras2_h5({str(h5)!r})
        print("filters", w.spec.layers[0].filters)
    """))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "filters 3" in done.stdout
    assert log.read_text().count("top level ran") == 1
