"""Hostile weight files, for our ``.npz`` and for every converter input (``.keras``, Keras 2 ``.h5``, fused
``.pt``, flax ``.msgpack``): each is rejected with a :class:`WeightFileError` (ConversionError is one) whose
message names the file and what was expected/found -- never an exception from deep inside a framework, never
a silently different result. ``test_weight_format.py`` and ``test_interop_*.py`` already cover the
single-defect npz files (missing/extra keys, wrong shape, int/float16/complex, NaN/Inf, meta not JSON, unknown
version, duplicate zip entries, an object array, a declared-size zip bomb, 5 truncations, 40 flips) and a few
damaged peer files; this module adds the systematic sweeps and the defects they do not reach.

What the damage sweeps assert, precisely (a flip is ``byte ^= 0xFF``):

* truncation to ``n`` bytes, ``n`` every few bytes across the file and every byte near both ends:
  WeightFileError whose message contains the file's path.
* zip-based formats (``.npz``, ``.keras``, zip-format ``.pt``): every member carries a CRC-32 that the reader
  verifies, so a flipped byte is rejected -- or, when it hit bytes no reader interprets (zip timestamps,
  "version made by", ...), the file loads with the same spec, dtype and bit-identical arrays.
* formats without checksums (``.h5`` and ``.msgpack``): a flip inside the raw bytes of an array is a
  well-formed file holding a different value, which no reader can detect. For those positions the file must
  load exactly what converting the in-memory peer structure with that byte flipped gives (bit for bit), and
  be rejected exactly when that conversion rejects it (a NaN/Inf). Flips anywhere else: rejected or identical.

Counts per format and outcome are printed in the test summary.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from implementations import interop
from implementations import weights as wf
from implementations.spec import LayerSpec, StackSpec
from implementations.weights import WeightFileError, Weights

from .conftest import SUMMARY
from .keras2_h5 import write_keras2_h5

OUTCOMES: dict[str, Counter] = {}


def _tally(fmt: str, sweep: str, outcome: str) -> None:
    key = f"{fmt} {sweep}"
    if key not in OUTCOMES:
        OUTCOMES[key] = Counter()
        SUMMARY.append(lambda key=key: f"hostile files, {key}: {dict(sorted(OUTCOMES[key].items()))}")
    OUTCOMES[key][outcome] += 1


def same_weights(a: Weights, b: Weights) -> bool:
    return (
        a.spec == b.spec
        and sorted(a.arrays) == sorted(b.arrays)
        and all(a.arrays[k].dtype == b.arrays[k].dtype and np.array_equal(a.arrays[k], b.arrays[k]) for k in a.arrays)
    )


def flip_byte(array: np.ndarray, index: int) -> np.ndarray:
    """A copy of ``array`` with byte ``index`` of its C-order buffer xor 0xFF."""
    raw = bytearray(np.ascontiguousarray(array).tobytes())
    raw[index] ^= 0xFF
    return np.frombuffer(bytes(raw), dtype=array.dtype).reshape(array.shape).copy()


# ---------------------------------------------------------------------------------------------
# One subject per format: how to write a good file, read it, and where its unchecked raw bytes are
# ---------------------------------------------------------------------------------------------

#: (start offset in the file, length, f(byte index) -> the Weights the file must load, or raise WeightFileError)
RawRegion = tuple[int, int, Callable[[int], Weights]]


@dataclass
class Subject:
    fmt: str
    suffix: str
    write: Callable[[Path], Weights]  # writes a good file, returns the weights it must load as
    read: Callable[[Path], Weights]
    raw_regions: Callable[[bytes], list[RawRegion]] = lambda data: []
    flip_stride: int = 1
    trunc_stride: int = 1
    raw_step: int = 3  # flip every raw_step-th byte of every raw region (coprime with 4 and 8: every byte lane)


def _find_once(data: bytes, needle: bytes, what: str) -> int:
    pos = data.find(needle)
    assert pos >= 0 and data.find(needle, pos + 1) < 0, f"{what}: raw bytes must occur exactly once in the file"
    return pos


NPZ_SPEC = StackSpec(2, (LayerSpec(3, (3, 3), peephole="channel"), LayerSpec(2, (2, 4), use_bias=False)))
PEER_SPEC = StackSpec(2, (LayerSpec(2, (3, 3)), LayerSpec(3, (1, 3))))  # expressible in every peer format


def _npz_subject() -> Subject:
    def write(path: Path) -> Weights:
        w = wf.random_weights(NPZ_SPEC, seed=0, dtype="float32")
        wf.save(path, w)
        return w

    return Subject("npz", ".npz", write, wf.load, flip_stride=2, trunc_stride=3)


def _keras_subject() -> Subject:
    pytest.importorskip("keras", reason="keras is not installed")

    def write(path: Path) -> Weights:
        w = wf.random_weights(PEER_SPEC, seed=1, dtype="float32")
        interop.write_keras_file(w, path, (4, 4))
        return w

    return Subject("keras", ".keras", write, interop.read_keras_file, flip_stride=137, trunc_stride=97)




H5_SPEC = StackSpec(2, (LayerSpec(2, (3, 3), recurrent_activation="hard_sigmoid_keras2"),
                        LayerSpec(3, (2, 3), strides=2, padding="valid")))


def _h5_subject() -> Subject:
    pytest.importorskip("h5py", reason="h5py is not installed")
    original = wf.random_weights(H5_SPEC, seed=2, dtype="float32")

    def write(path: Path) -> Weights:
        write_keras2_h5(path, original)
        return original

    def raw_regions(data: bytes) -> list[RawRegion]:
        regions = []
        for key, arr in original.arrays.items():
            start = _find_once(data, arr.tobytes(), key)

            def expected(index: int, key: str = key, arr: np.ndarray = arr) -> Weights:
                return wf.make_weights(H5_SPEC, {**original.arrays, key: flip_byte(arr, index)})

            regions.append((start, arr.nbytes, expected))
            # The 8-byte address of that raw data in the dataset's layout message. HDF5 v1 object headers carry
            # no checksum: a flipped address makes the dataset read other bytes of the file, which must then
            # load exactly as those bytes say (or be rejected when they are not finite / past the end).
            address = _find_once(data, struct.pack("<Q", start), f"{key} address")

            def redirected(index: int, key: str = key, arr: np.ndarray = arr, start: int = start,
                           address: int = address) -> Weights:
                moved = start ^ (0xFF << (8 * index))
                if moved + arr.nbytes > len(data):
                    raise WeightFileError("the address points past the end of the file")
                mutated = bytearray(data)
                mutated[address + index] ^= 0xFF  # the moved dataset may read the flipped byte itself
                values = np.frombuffer(bytes(mutated[moved:moved + arr.nbytes]), "<f4").reshape(arr.shape)
                return wf.make_weights(H5_SPEC, {**original.arrays, key: values.astype(np.float32)})

            regions.append((address, 8, redirected))
        return regions

    return Subject("keras2-h5", ".h5", write, interop.read_keras2_h5, raw_regions, flip_stride=13, trunc_stride=61,
                   raw_step=7)


def _torch_subject() -> Subject:
    pytest.importorskip("torch", reason="torch is not installed")

    def write(path: Path) -> Weights:
        w = wf.random_weights(PEER_SPEC, seed=3, dtype="float32")
        interop.write_torch_fused_file(w, path)
        return w

    return Subject("torch-fused", ".pt", write, interop.read_torch_fused_file, flip_stride=1, trunc_stride=7)


def _flax_subject() -> Subject:
    pytest.importorskip("flax.serialization", reason="flax is not installed")
    original = wf.random_weights(PEER_SPEC, seed=4, dtype="float32")
    tree = interop.to_flax(original)

    def leaves(node: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], np.ndarray]]:
        if isinstance(node, dict):
            return [leaf for k in sorted(node) for leaf in leaves(node[k], (*path, k))]
        return [(path, node)]

    def replaced(node: Any, path: tuple[str, ...], value: np.ndarray) -> Any:
        if not path:
            return value
        return {**node, path[0]: replaced(node[path[0]], path[1:], value)}

    def write(path: Path) -> Weights:
        interop.write_flax_file(original, path)
        return interop.from_flax(tree)  # bit-identical to ``original`` (the bias split is exact)

    def raw_regions(data: bytes) -> list[RawRegion]:
        regions = []
        for leaf_path, arr in leaves(tree):
            start = _find_once(data, arr.tobytes(), "/".join(leaf_path))

            def expected(index: int, leaf_path: tuple[str, ...] = leaf_path, arr: np.ndarray = arr) -> Weights:
                return interop.from_flax(replaced(tree, leaf_path, flip_byte(arr, index)))

            regions.append((start, arr.nbytes, expected))
        return regions

    return Subject("flax", ".msgpack", write, interop.read_flax_file, raw_regions, flip_stride=1, trunc_stride=1)


SUBJECTS: dict[str, Callable[[], Subject]] = {
    "npz": _npz_subject,
    "keras": _keras_subject,
    "keras2-h5": _h5_subject,
    "torch-fused": _torch_subject,
    "flax": _flax_subject,
}


@pytest.fixture(scope="module")
def good_files(tmp_path_factory) -> dict[str, tuple[Subject, bytes, Weights]]:
    return {}


def good_file(fmt: str, cache: dict, tmp_path_factory) -> tuple[Subject, bytes, Weights]:
    if fmt not in cache:
        subject = SUBJECTS[fmt]()
        path = tmp_path_factory.mktemp(f"good-{fmt}") / f"good{subject.suffix}"
        original = subject.write(path)
        assert same_weights(subject.read(path), original), f"{fmt}: the good file does not load as written"
        cache[fmt] = (subject, path.read_bytes(), original)
    return cache[fmt]


def read_rejecting(subject: Subject, path: Path) -> Weights | WeightFileError:
    """The loaded weights, or the WeightFileError; any other exception propagates and fails the test."""
    try:
        return subject.read(path)
    except WeightFileError as exc:
        assert str(path) in str(exc), f"{subject.fmt}: the error does not name the file: {exc}"
        return exc


# ---------------------------------------------------------------------------------------------
# Damage sweeps: truncation and flipped bytes, every format
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", list(SUBJECTS))
def test_every_truncation_is_rejected(fmt, good_files, tmp_path_factory, tmp_path):
    subject, data, _ = good_file(fmt, good_files, tmp_path_factory)
    n = len(data)
    edge = 64 if subject.trunc_stride < 20 else 16
    offsets = sorted(set(range(0, n, subject.trunc_stride)) | set(range(min(edge, n))) | set(range(n - edge, n)))
    bad = tmp_path / f"trunc{subject.suffix}"
    loaded = []
    for cut in offsets:
        bad.write_bytes(data[:cut])
        result = read_rejecting(subject, bad)
        _tally(fmt, "truncated", "rejected" if isinstance(result, WeightFileError) else "LOADED")
        if not isinstance(result, WeightFileError):
            loaded.append(cut)
    assert not loaded, f"{fmt}: files truncated to {loaded[:10]} of {n} bytes loaded instead of being rejected"


@pytest.mark.parametrize("fmt", list(SUBJECTS))
def test_flipped_bytes_are_rejected_or_load_exactly_what_they_encode(fmt, good_files, tmp_path_factory, tmp_path):
    subject, data, original = good_file(fmt, good_files, tmp_path_factory)
    regions = subject.raw_regions(data)
    positions = set(range(0, len(data), subject.flip_stride))
    for start, length, _ in regions:  # the raw data of formats without checksums: a few bytes of every value
        positions |= set(range(start, start + length, subject.raw_step if length > 8 else 1))
    bad = tmp_path / f"flip{subject.suffix}"
    failures = []
    for pos in sorted(positions):
        mutated = bytearray(data)
        mutated[pos] ^= 0xFF
        bad.write_bytes(bytes(mutated))
        result = read_rejecting(subject, bad)
        region = next(((s, fn) for s, length, fn in regions if s <= pos < s + length), None)
        if region is None:
            if isinstance(result, WeightFileError):
                _tally(fmt, "flipped", "rejected")
            elif same_weights(result, original):
                _tally(fmt, "flipped", "identical (unread bytes)")
            else:
                failures.append(f"byte {pos}: loaded different weights (outside any array's raw data)")
            continue
        start, expected_fn = region
        try:
            expected: Weights | WeightFileError = expected_fn(pos - start)
        except WeightFileError as exc:
            expected = exc
        if isinstance(expected, WeightFileError):
            if isinstance(result, WeightFileError):
                _tally(fmt, "flipped", "rejected (value became NaN/Inf)")
            else:
                failures.append(f"byte {pos}: loaded although the flipped value is rejected in memory ({expected})")
        elif isinstance(result, WeightFileError):
            failures.append(f"byte {pos}: rejected ({result}) although it encodes valid weights")
        elif same_weights(result, expected):
            _tally(fmt, "flipped", "raw value changed, loaded exactly as encoded")
        else:
            failures.append(f"byte {pos}: loaded weights differ from what the flipped value encodes")
    assert not failures, f"{fmt}: {len(failures)} flipped files misread:\n  " + "\n  ".join(failures[:20])


# ---------------------------------------------------------------------------------------------
# .npz: defects the existing format tests do not reach
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def npz_entries(tmp_path) -> dict[str, np.ndarray]:
    w = wf.random_weights(NPZ_SPEC, seed=0, dtype="float32")
    wf.save(tmp_path / "good.npz", w)
    with np.load(tmp_path / "good.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _meta(entries: dict[str, np.ndarray]) -> dict[str, Any]:
    return json.loads(str(entries["meta"]))


def _meta_text(text: str) -> Callable[[dict], dict]:
    return lambda e: {**e, "meta": np.array(text)}


def _meta_json(fn: Callable[[dict], Any]) -> Callable[[dict], dict]:
    return lambda e: {**e, "meta": np.array(json.dumps(fn(_meta(e))))}


def _layer0(**changes: Any) -> Callable[[dict], dict]:
    return _meta_json(lambda m: {**m, "layers": [{**m["layers"][0], **changes}, m["layers"][1]]})


def _dup_key_text(e: dict) -> str:
    """Valid JSON whose first layer says padding 'valid' then 'same' (Python keeps the last, others the first)."""
    text = json.dumps(_meta(e))
    return text.replace('"padding": "same"', '"padding": "valid", "padding": "same"', 1)


NPZ_DEFECTS: dict[str, tuple[Callable[[dict], dict], str]] = {
    "meta nested 100k deep": (_meta_text("[" * 100_000 + "]" * 100_000),
                              r"meta: expected JSON, found nesting too deep"),
    "meta duplicate JSON key": (lambda e: {**e, "meta": np.array(_dup_key_text(e))},
                                r"meta: duplicate JSON key\(s\) \['padding'\]"),
    "meta duplicate top-level key": (
        lambda e: {**e, "meta": np.array(json.dumps(_meta(e))[:-1] + ', "version": 2}')},
        r"duplicate JSON key\(s\) \['version'\]"),
    "meta is a JSON list": (_meta_text("[1, 2]"), r"meta: expected a JSON object, found list"),
    "meta is bytes": (lambda e: {**e, "meta": np.array(str(e["meta"]).encode())}, r"meta: expected a 0-d unicode"),
    "meta is 1-d": (lambda e: {**e, "meta": np.array([str(e["meta"])])}, r"meta: expected a 0-d unicode array"),
    "meta NaN token": (_meta_json(lambda m: {**m, "input_channels": float("nan")}),
                       r"input_channels: expected a positive int, found nan"),
    "filters as float": (_layer0(filters=3.0), r"layers\[0\]: filters: expected a positive int, found 3.0"),
    "filters as bool": (_layer0(filters=True), r"layers\[0\]: filters: expected a positive int, found True"),
    "filters zero": (_layer0(filters=0), r"layers\[0\]: filters: expected a positive int, found 0"),
    "kernel of strings": (_layer0(kernel_size=["3", "3"]), r"layers\[0\]: kernel_size: expected 2 ints"),
    "strides with dilation": (_layer0(strides=[2, 2], dilation_rate=[2, 2]), r"is not supported"),
    "peephole unknown": (_layer0(peephole="diagonal"), r"layers\[0\]: peephole: expected one of"),
    "layers empty": (_meta_json(lambda m: {**m, "layers": []}), r"layers: a stack needs at least one layer"),
    "layers not a list": (_meta_json(lambda m: {**m, "layers": {"0": m["layers"][0]}}), r"'layers' must be a list"),
    "layer not an object": (_meta_json(lambda m: {**m, "layers": [3, 4]}), r"layers\[0\]: expected a JSON object"),
    "missing gate_order": (_meta_json(lambda m: {k: v for k, v in m.items() if k != "gate_order"}),
                           r"meta: missing field 'gate_order'"),
    "missing input_channels": (_meta_json(lambda m: {k: v for k, v in m.items() if k != "input_channels"}),
                               r"missing field 'input_channels'"),
    "version 1.0": (_meta_json(lambda m: {**m, "version": 1.0}), r"meta.version: expected 1, found 1.0"),
    "version true": (_meta_json(lambda m: {**m, "version": True}), r"meta.version: expected 1, found True"),
    "float64 among float32": (lambda e: {**e, "layers/0/peephole_i": e["layers/0/peephole_i"].astype(np.float64)},
                              r"layers/0/peephole_i: expected dtype float32 like the other arrays"),
    "big-endian float32": (lambda e: {**e, "layers/0/bias": e["layers/0/bias"].astype(">f4")},
                           r"layers/0/bias: expected dtype float32 or float64, found >f4"),
    "int8": (lambda e: {**e, "layers/0/bias": np.zeros(12, np.int8)}, r"expected dtype float32 or float64, found int8"),
    "bool": (lambda e: {**e, "layers/0/bias": np.zeros(12, bool)}, r"expected dtype float32 or float64, found bool"),
    "complex128": (lambda e: {**e, "layers/0/bias": np.zeros(12, np.complex128)}, r"found complex128"),
    "string array": (lambda e: {**e, "layers/0/bias": np.array(["a"] * 12)}, r"expected dtype float32 or float64"),
    "structured": (lambda e: {**e, "layers/0/bias": np.zeros(12, [("a", "f4")])}, r"expected dtype float32 or float64"),
    "-inf": (lambda e: {**e, "layers/0/peephole_o": np.full(3, -np.inf, np.float32)},
             r"layers/0/peephole_o: expected finite values, found 3 NaN/Inf of 3"),
    "0-d kernel": (lambda e: {**e, "layers/1/kernel": np.float32(1.0)},
                   r"layers/1/kernel: expected shape \(2, 4, 3, 8\), found \(\)"),
    "peephole for the other layer": (lambda e: {**e, "layers/1/peephole_i": e["layers/0/peephole_i"]},
                                     r"unexpected key\(s\) \['layers/1/peephole_i'\]"),
    "no arrays at all": (lambda e: {"meta": e["meta"]}, r"missing key\(s\)"),
}


@pytest.mark.parametrize("name", list(NPZ_DEFECTS))
def test_npz_defect_is_rejected_with_clear_message(npz_entries, tmp_path, name):
    edit, pattern = NPZ_DEFECTS[name]
    bad = tmp_path / "bad.npz"
    np.savez(bad, **edit(npz_entries))
    with pytest.raises(WeightFileError, match=pattern) as info:
        wf.load(bad)
    assert str(bad) in str(info.value)
    _tally("npz", "defects", "rejected")


def _rewrite_zip(src: Path, dst: Path, edit: Callable[[zipfile.ZipFile, zipfile.ZipFile], None],
                 compression: int = zipfile.ZIP_STORED) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression=compression) as zout:
        edit(zin, zout)


def _npy_bytes(array: np.ndarray, **kw: Any) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, **kw)
    return buf.getvalue()


def _patch_central_sizes(path: Path, member: str, size: int) -> None:
    """Make the central directory declare ``size`` uncompressed bytes for ``member`` (a lying header)."""
    data = bytearray(path.read_bytes())
    pos = data.find(b"PK\x01\x02")
    while pos >= 0:
        name_len = struct.unpack_from("<H", data, pos + 28)[0]
        name = bytes(data[pos + 46:pos + 46 + name_len]).decode()
        if name == member:
            struct.pack_into("<I", data, pos + 24, size)
            path.write_bytes(bytes(data))
            return
        pos = data.find(b"PK\x01\x02", pos + 4)
    raise AssertionError(f"{member} not in the central directory")


def test_npz_object_meta_is_never_unpickled(npz_entries, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    meta = np.empty((), dtype=object)
    meta[()] = Evil()
    bad = tmp_path / "evil.npz"
    np.savez(bad, **{**npz_entries, "meta": meta}, allow_pickle=True)
    with pytest.raises(WeightFileError, match=r"entry 'meta': expected a numeric array, found an object/pickled"):
        wf.load(bad)
    assert not marker.exists(), "the pickled meta was executed"
    # the payload is live: unpickling it would create the marker
    pickle.loads(pickle.dumps(Evil())).close()
    assert marker.exists()


def test_npz_non_array_member_is_refused(npz_entries, tmp_path):
    bad = tmp_path / "extra.npz"
    np.savez(bad, **npz_entries)
    with zipfile.ZipFile(bad, "a") as z:
        z.writestr("payload.pkl", pickle.dumps({"x": 1}))
    with pytest.raises(WeightFileError, match=r"unexpected non-array entries \['payload.pkl'\]"):
        wf.load(bad)


def test_npz_bombs_are_refused_from_the_headers(tmp_path):
    good = tmp_path / "good.npz"
    wf.save(good, wf.random_weights(NPZ_SPEC, seed=0, dtype="float32"))

    # meta declaring more than MAX_META_BYTES (2 MiB of JSON whitespace deflates to a few KB)
    def big_meta(zin: zipfile.ZipFile, zout: zipfile.ZipFile) -> None:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "meta.npy":
                text = str(np.load(io.BytesIO(data)))
                data = _npy_bytes(np.array(text + " " * (2 << 20)))
            zout.writestr(info.filename, data)

    bomb = tmp_path / "meta-bomb.npz"
    _rewrite_zip(good, bomb, big_meta, zipfile.ZIP_DEFLATED)
    assert bomb.stat().st_size < 200_000
    with pytest.raises(WeightFileError, match=r"entry 'meta' declares \d+ bytes, expected at most 1048576"):
        wf.load(bomb)

    # a lying header: the central directory declares 4 GiB - 1 for a kernel
    liar = tmp_path / "liar.npz"
    liar.write_bytes(good.read_bytes())
    _patch_central_sizes(liar, "layers/0/kernel.npy", 0xFFFFFFFF)
    with pytest.raises(WeightFileError, match=r"entry 'layers/0/kernel' declares 4294967295 bytes, expected at most"):
        wf.load(liar)

    # the other lie: a tiny declared size for a large member (reading stops there; the CRC then fails)
    short = tmp_path / "short.npz"
    short.write_bytes(good.read_bytes())
    _patch_central_sizes(short, "layers/0/kernel.npy", 200)
    with pytest.raises(WeightFileError, match=r"layers/0/kernel"):
        wf.load(short)


def test_npz_npy_header_declaring_a_huge_shape_is_refused(npz_entries, tmp_path):
    """A .npy header may claim any shape: 2**40 float32 values followed by 48 bytes of data. The member's size
    bound passes (it is small); reading it must fail cleanly, not allocate 4 TiB or crash."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (1 << 40,)})
    member = buf.getvalue() + np.zeros(12, np.float32).tobytes()
    bad = tmp_path / "shape.npz"
    with zipfile.ZipFile(bad, "w") as z:
        for k, v in npz_entries.items():
            z.writestr(f"{k}.npy", member if k == "layers/0/bias" else _npy_bytes(v))
    with pytest.raises(WeightFileError, match=r"entry 'layers/0/bias'"):
        wf.load(bad)


def test_npz_fortran_ordered_member_loads_identically(npz_entries, tmp_path):
    """A valid file written from a Fortran-ordered array (the .npy header says so) is not damage."""
    path = tmp_path / "fortran.npz"
    key = "layers/0/kernel"
    np.savez(path, **{**npz_entries, key: np.asfortranarray(npz_entries[key])})
    with zipfile.ZipFile(path) as z:
        assert b"'fortran_order': True" in z.read(f"{key}.npy")[:128]
    loaded = wf.load(path)
    assert np.array_equal(loaded.arrays[key], npz_entries[key]) and loaded.arrays[key].dtype == np.float32


# ---------------------------------------------------------------------------------------------
# Converter inputs: payloads that must never execute, bombs, dtypes, non-finite values
# ---------------------------------------------------------------------------------------------

class _Payload:
    """Unpickling this creates the marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_pt_payloads_in_every_container_are_never_executed(tmp_path, protocol):
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned"
    state = {"cell_list.0.conv.weight": torch.zeros(8, 4, 3, 3), "extra": _Payload(str(marker))}
    files = {"plain-pickle.pt": lambda p: p.write_bytes(pickle.dumps(state, protocol=protocol))}
    files["legacy.pt"] = lambda p: torch.save(state, p, pickle_protocol=max(protocol, 2),
                                              _use_new_zipfile_serialization=False)
    files["zip.pt"] = lambda p: torch.save(state, p, pickle_protocol=max(protocol, 2))
    for name, write in files.items():
        write(tmp_path / name)
        with pytest.raises(interop.ConversionError, match=r"weights_only=True"):
            interop.read_torch_fused_file(tmp_path / name)
        assert not marker.exists(), f"{name}: the pickle payload was executed"
        _tally("torch-fused", "defects", "rejected")
    pickle.loads(pickle.dumps(_Payload(str(marker)))).close()
    assert marker.exists(), "the payload is live (unpickling it creates the marker)"


def _fused_state(torch: Any, **changes: Any) -> dict[str, Any]:
    w = wf.random_weights(StackSpec(2, (LayerSpec(2, (3, 3)),)), seed=5, dtype="float32")
    state = interop.to_torch_fused(w)
    state.update(changes)
    return state


PT_DEFECTS = {
    "int weight": (lambda t: _fused_state(t, **{"cell_list.0.conv.weight": t.zeros(8, 4, 3, 3, dtype=t.int32)}),
                   r"cell_list.0.conv.weight: expected a float array .* found dtype int32"),
    "complex weight": (lambda t: _fused_state(t, **{"cell_list.0.conv.weight": t.zeros(8, 4, 3, 3,
                                                                                       dtype=t.complex64)}),
                       r"found dtype complex64"),
    "bool bias": (lambda t: _fused_state(t, **{"cell_list.0.conv.bias": t.zeros(8, dtype=t.bool)}),
                  r"cell_list.0.conv.bias: expected a float array"),
    "nan weight": (lambda t: _fused_state(t, **{"cell_list.0.conv.weight": t.full((8, 4, 3, 3), float("nan"))}),
                   r"expected finite values"),
    "inf bias": (lambda t: _fused_state(t, **{"cell_list.0.conv.bias": t.full((8,), float("inf"))}),
                 r"layers/0/bias: expected finite values"),
    "zero filters": (lambda t: {"cell_list.0.conv.weight": t.zeros(0, 2, 3, 3)},
                     r"cell_list.0.conv: filters: expected a positive int, found 0"),
    "zero-size kernel axis": (lambda t: {"cell_list.0.conv.weight": t.zeros(8, 4, 0, 3)}, r"cell_list.0.conv.weight"),
    "list instead of dict": (lambda t: [t.zeros(8, 4, 3, 3)], r"state dict: expected a mapping"),
    "tensor instead of dict": (lambda t: t.zeros(8, 4, 3, 3), r"state dict: expected a mapping"),
    "non-string key": (lambda t: {0: t.zeros(8, 4, 3, 3)}, r"unexpected keys \['0'\]"),
}


@pytest.mark.parametrize("name", list(PT_DEFECTS))
def test_pt_defect_is_rejected_with_clear_message(tmp_path, name):
    torch = pytest.importorskip("torch")
    make, pattern = PT_DEFECTS[name]
    path = tmp_path / "bad.pt"
    torch.save(make(torch), path)
    with pytest.raises(WeightFileError, match=pattern) as info:
        interop.read_torch_fused_file(path)
    assert str(path) in str(info.value)
    _tally("torch-fused", "defects", "rejected")


def test_pt_zip_bomb_is_refused_from_the_headers(tmp_path):
    torch = pytest.importorskip("torch")
    good = tmp_path / "good.pt"
    torch.save(_fused_state(torch), good)
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bomb, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, zin.read(info))
        zout.writestr("archive/data/99", b"\0" * (64 << 20), compress_type=zipfile.ZIP_DEFLATED)
    assert bomb.stat().st_size < 1_000_000
    with pytest.raises(interop.ConversionError, match=r"member 'archive/data/99' declares 67108864 bytes, expected "
                                                      r"at most the file size"):
        interop.read_torch_fused_file(bomb)


def _msgpack_tree(**changes: Any) -> dict[str, Any]:
    w = wf.random_weights(StackSpec(2, (LayerSpec(2, (3, 3)),)), seed=6, dtype="float32")
    tree = interop.to_flax(w)
    cell = tree["params"]["layers_0"]["cell"]
    for path, value in changes.items():
        conv, name = path.split("/")
        cell[conv][name] = value
    return tree


MSGPACK_DEFECTS = {
    "int kernel": (lambda: _msgpack_tree(**{"ih/kernel": np.zeros((3, 3, 2, 8), np.int64)}),
                   r"ih/kernel: expected a float array .* found dtype int64"),
    "complex kernel": (lambda: _msgpack_tree(**{"hh/kernel": np.zeros((3, 3, 2, 8), np.complex64)}),
                       r"hh/kernel: expected a float array .* found dtype complex64"),
    "float16 is widened, bool is not": (lambda: _msgpack_tree(**{"ih/bias": np.zeros(8, bool)}),
                                        r"ih/bias: expected a float array"),
    "nan in ih bias": (lambda: _msgpack_tree(**{"ih/bias": np.full(8, np.nan, np.float32)}),
                       r"layers/0/bias: expected finite values"),
    "inf kernel": (lambda: _msgpack_tree(**{"ih/kernel": np.full((3, 3, 2, 8), np.inf, np.float32)}),
                   r"layers/0/kernel: expected finite values"),
    "bias shape": (lambda: _msgpack_tree(**{"hh/bias": np.zeros(7, np.float32)}),
                   r"hh/bias: expected shape \(8,\), found \(7,\)"),
    "zero filters": (lambda: {"ih": {"kernel": np.zeros((3, 3, 2, 0), np.float32)},
                              "hh": {"kernel": np.zeros((3, 3, 0, 0), np.float32)}},
                     r"flax params 'cell': filters: expected a positive int, found 0"),
    "zero-size kernel axis": (lambda: {"ih": {"kernel": np.zeros((0, 3, 2, 8), np.float32)},
                                       "hh": {"kernel": np.zeros((0, 3, 2, 8), np.float32)}},
                              r"flax params 'cell': kernel_size: every entry must be >= 1, found \(0, 3\)"),
    "scalar root": (lambda: 3, r"expected flax params of ConvLSTMCells"),
    "string leaf": (lambda: _msgpack_tree(**{"ih/kernel": "kernel"}), r"ih/kernel: expected a float array"),
}


@pytest.mark.parametrize("name", list(MSGPACK_DEFECTS))
def test_msgpack_defect_is_rejected_with_clear_message(tmp_path, name):
    serialization = pytest.importorskip("flax.serialization")
    make, pattern = MSGPACK_DEFECTS[name]
    path = tmp_path / "bad.msgpack"
    path.write_bytes(serialization.msgpack_serialize(make()))
    with pytest.raises(WeightFileError, match=pattern) as info:
        interop.read_flax_file(path)
    assert str(path) in str(info.value)
    _tally("flax", "defects", "rejected")


def test_msgpack_bombs_are_refused_without_allocating(tmp_path):
    """Headers claiming 2**32-1 map entries / a huge array / a huge ndarray shape, with a few bytes of data."""
    pytest.importorskip("flax.serialization")
    msgpack = pytest.importorskip("msgpack")
    bombs = {
        "map32": b"\xdf\xff\xff\xff\xff" + b"\xa1a\x01",
        "array32": b"\xdd\xff\xff\xff\xff\x01\x02",
        "bin32": b"\xc6\xff\xff\xff\xff" + b"\0" * 16,
        # flax's ndarray ext (code 1): (shape, dtype, buffer) claiming 2**40 float32 values
        "ndarray shape": msgpack.packb({"ih": {"kernel": msgpack.ExtType(1, msgpack.packb(
            ((1 << 40,), "float32", b"\0" * 16)))}}),
    }
    for name, data in bombs.items():
        path = tmp_path / f"{name}.msgpack"
        path.write_bytes(data)
        with pytest.raises(interop.ConversionError, match=str(path)):
            interop.read_flax_file(path)
        _tally("flax", "defects", "rejected")


def _h5_file(tmp_path: Path, name: str = "m.h5") -> Path:
    return write_keras2_h5(tmp_path / name, wf.random_weights(H5_SPEC, seed=7, dtype="float32"))


def _h5_replace(path: Path, dataset: str, value: Any = None, **create: Any) -> Path:
    import h5py

    with h5py.File(path, "a") as f:
        del f[dataset]
        if value is not None:
            f[dataset] = value
        else:
            f.create_dataset(dataset, **create)
    return path


K0 = "model_weights/conv_lst_m2d/conv_lst_m2d/"

H5_DEFECTS: dict[str, tuple[Callable[[Path], Any], str]] = {
    "int kernel": (lambda p: _h5_replace(p, K0 + "kernel:0", np.zeros((3, 3, 2, 8), np.int32)),
                   r"kernel:0: expected a float array .* found dtype int32"),
    "complex bias": (lambda p: _h5_replace(p, K0 + "bias:0", np.zeros(8, np.complex64)), r"found dtype complex64"),
    "string bias": (lambda p: _h5_replace(p, K0 + "bias:0", np.array([b"x"] * 8)), r"bias:0: expected a float array"),
    "nan recurrent kernel": (lambda p: _h5_replace(p, K0 + "recurrent_kernel:0", np.full((3, 3, 2, 8), np.nan, "f4")),
                             r"layers/0/recurrent_kernel: expected finite values"),
    "model_config not utf-8": (lambda p: _h5_set_attr(p, "model_config", b'{"class_name": "\xff"}'),
                               r"model class '\\udcff': only a Sequential or Functional"),
    "model_config nested deep": (lambda p: _h5_set_attr(p, "model_config", b"[" * 100_000 + b"]" * 100_000),
                                 r"m\.h5"),
    "model_config a list": (lambda p: _h5_set_attr(p, "model_config", b"[1]"), r"model_config: expected a JSON object"),
    "filters as string": (lambda p: _h5_edit_config(p, filters="2"), r"filters: expected a positive int"),
    "kernel_size too long": (lambda p: _h5_edit_config(p, kernel_size=[3, 3, 3]), r"kernel_size: expected 2 ints"),
    # a chunked dataset never written: 1.6 GB of fill value behind a few hundred bytes of file
    "sparse bomb": (lambda p: _h5_replace(p, K0 + "kernel:0", shape=(400_000_000,), dtype="f4", chunks=(1 << 20,)),
                    r"weight 'conv_lst_m2d/kernel:0' declares 1600000000 bytes but stores 0: refusing"),
    # the same through gzip
    "gzip bomb": (lambda p: _h5_replace(p, K0 + "kernel:0", data=np.zeros(20_000_000, "f4"), chunks=(1 << 20,),
                                        compression="gzip"),
                  r"weight 'conv_lst_m2d/kernel:0' declares 80000000 bytes but stores \d+: refusing"),
}


def _h5_set_attr(path: Path, name: str, value: bytes) -> Path:
    import h5py

    with h5py.File(path, "a") as f:
        f.attrs[name] = value
    return path


def _h5_edit_config(path: Path, **changes: Any) -> Path:
    import h5py

    with h5py.File(path, "a") as f:
        config = json.loads(f.attrs["model_config"])
        first = next(entry for entry in config["config"]["layers"] if entry["class_name"] == "ConvLSTM2D")
        first["config"].update(changes)
        f.attrs["model_config"] = json.dumps(config).encode()
    return path


@pytest.mark.parametrize("name", list(H5_DEFECTS))
def test_h5_defect_is_rejected_with_clear_message(tmp_path, name):
    pytest.importorskip("h5py")
    edit, pattern = H5_DEFECTS[name]
    path = _h5_file(tmp_path)
    edit(path)
    assert path.stat().st_size < 2_000_000
    with pytest.raises(WeightFileError, match=pattern) as info:
        interop.read_keras2_h5(path)
    assert str(path) in str(info.value)
    _tally("keras2-h5", "defects", "rejected")


# .keras: a zip holding config.json, metadata.json and model.weights.h5

def _keras_file(tmp_path: Path) -> Path:
    pytest.importorskip("keras")
    path = tmp_path / "good.keras"
    interop.write_keras_file(wf.random_weights(PEER_SPEC, seed=8, dtype="float32"), path, (4, 4))
    return path


def _keras_rewrite(good: Path, dst: Path, members: dict[str, bytes | None], compression: int = zipfile.ZIP_STORED
                   ) -> Path:
    """Copy ``good`` to ``dst`` replacing (bytes) or dropping (None) the named members."""
    def edit(zin: zipfile.ZipFile, zout: zipfile.ZipFile) -> None:
        names = [i.filename for i in zin.infolist()]
        for name in names + [n for n in members if n not in names]:
            data = members.get(name, zin.read(name) if name in names else None)
            if data is not None:
                zout.writestr(name, data)

    _rewrite_zip(good, dst, edit, compression)
    return dst


def _keras_config(good: Path) -> dict[str, Any]:
    with zipfile.ZipFile(good) as z:
        return json.loads(z.read("config.json"))


def _with_layer_config(config: dict[str, Any], **changes: Any) -> bytes:
    config = json.loads(json.dumps(config))
    layers = config["config"]["layers"]
    target = next(layer for layer in layers if layer["class_name"].startswith("ConvLSTM"))
    target["config"].update(changes)
    return json.dumps(config).encode()


def _marker_layer(marker: Path) -> dict[str, Any]:
    """A layer entry asking Keras to import and call os.system / builtins.exec: safe_mode must refuse it."""
    return {"module": "os", "class_name": "system", "config": {"command": f"touch {marker}"},
            "registered_name": "system", "build_config": None}


KERAS_DEFECTS: dict[str, tuple[Callable[[Path, Path], dict[str, bytes | None]], str]] = {
    "no config.json": (lambda good, m: {"config.json": None}, r"cannot be loaded as a Keras 3 model"),
    "no weights": (lambda good, m: {"model.weights.h5": None}, r"cannot be loaded as a Keras 3 model"),
    "config not JSON": (lambda good, m: {"config.json": b"{not json"}, r"cannot be loaded as a Keras 3 model"),
    "config nested deep": (lambda good, m: {"config.json": b"[" * 100_000 + b"]" * 100_000}, r"cannot be loaded"),
    "weights not hdf5": (lambda good, m: {"model.weights.h5": b"garbage" * 100}, r"cannot be loaded as a Keras 3"),
    "os.system layer": (lambda good, m: {"config.json": json.dumps({**_keras_config(good), "config": {
        **_keras_config(good)["config"], "layers": [_marker_layer(m)]}}).encode()}, r"cannot be loaded as a Keras 3"),
    "lambda layer": (lambda good, m: {"config.json": json.dumps({**_keras_config(good), "config": {
        **_keras_config(good)["config"], "layers": [{"module": "keras.layers", "class_name": "Lambda", "config": {
            "name": "l", "function": {"class_name": "__lambda__", "config": {
                "code": "exec(\"open('" + str(m) + "', 'w')\")", "defaults": None, "closure": None}}},
            "registered_name": None}]}}).encode()}, r"cannot be loaded as a Keras 3"),
    "weights wrong shape": (lambda good, m: {"config.json": _with_layer_config(_keras_config(good), filters=5)},
                            r"cannot be loaded as a Keras 3 model"),
    "go_backwards": (lambda good, m: {"config.json": _with_layer_config(_keras_config(good), go_backwards=True)},
                     r"go_backwards=True"),
}


@pytest.mark.keras
@pytest.mark.parametrize("name", list(KERAS_DEFECTS))
def test_keras_file_defect_is_rejected_with_clear_message(tmp_path, name):
    good = _keras_file(tmp_path)
    marker = tmp_path / "pwned"
    members, pattern = KERAS_DEFECTS[name]
    bad = _keras_rewrite(good, tmp_path / "bad.keras", members(good, marker))
    with pytest.raises(WeightFileError, match=pattern) as info:
        interop.read_keras_file(bad)
    assert str(bad) in str(info.value)
    assert not marker.exists(), "a payload in the .keras config was executed"
    _tally("keras", "defects", "rejected")


@pytest.mark.keras
def test_keras_file_nan_weights_are_rejected(tmp_path):
    import h5py

    good = _keras_file(tmp_path)
    with zipfile.ZipFile(good) as z:
        (tmp_path / "w.h5").write_bytes(z.read("model.weights.h5"))
    with h5py.File(tmp_path / "w.h5", "a") as f:
        names = []
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        target = next(n for n in names if tuple(f[n].shape) == (3, 3, 2, 8))  # layer 0's kernel
        f[target][0, 0, 0, 0] = np.nan
    bad = _keras_rewrite(good, tmp_path / "nan.keras", {"model.weights.h5": (tmp_path / "w.h5").read_bytes()})
    with pytest.raises(WeightFileError, match=r"layers/0/kernel: expected finite values, found 1 NaN/Inf"):
        interop.read_keras_file(bad)


@pytest.mark.keras
def test_keras_file_zip_bomb_is_refused_from_the_headers(tmp_path):
    good = _keras_file(tmp_path)
    config = _keras_config(good)
    huge = json.dumps(config).encode()[:-1] + b" " * (64 << 20) + b"}"  # 64 MiB of whitespace: valid JSON
    bomb = _keras_rewrite(good, tmp_path / "bomb.keras", {"config.json": huge}, zipfile.ZIP_DEFLATED)
    assert bomb.stat().st_size < 1_000_000
    with pytest.raises(interop.ConversionError, match=r"member 'config.json' declares \d+ bytes"):
        interop.read_keras_file(bomb)

