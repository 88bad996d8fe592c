"""Weight format v1: round trips, the initialiser, atomic saves, and every malformed file rejected clearly."""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np
import pytest

from implementations import weights as wf
from implementations.spec import LayerSpec, StackSpec
from implementations.weights import WeightFileError

SPEC = StackSpec(2, (LayerSpec(3, (3, 3), peephole="channel"), LayerSpec(2, (2, 4), use_bias=False)))


@pytest.fixture
def saved(tmp_path):
    w = wf.random_weights(SPEC, seed=0, dtype="float32")
    path = tmp_path / "w.npz"
    wf.save(path, w)
    return path, w


def write_npz(path, entries: dict[str, np.ndarray]) -> None:
    np.savez(path, **entries)


def entries_of(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def with_meta(entries, **changes):
    meta = json.loads(str(entries["meta"]))
    meta.update(changes)
    return {**entries, "meta": np.array(json.dumps(meta))}


# -- round trips ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip_is_bit_exact(tmp_path, dtype):
    w = wf.random_weights(SPEC, seed=1, dtype=dtype)
    wf.save(tmp_path / "a.npz", w)
    back = wf.load(tmp_path / "a.npz")
    assert back.spec == w.spec
    assert sorted(back.arrays) == sorted(w.arrays)
    for k in w.arrays:
        assert back.arrays[k].dtype == np.dtype(dtype)
        np.testing.assert_array_equal(back.arrays[k], w.arrays[k], err_msg=k)


def test_plain_numpy_reads_it_without_pickle(saved):
    path, w = saved
    entries = entries_of(path)
    meta = json.loads(str(entries["meta"]))
    assert meta["format"] == "convlstm-npz" and meta["version"] == 1 and meta["gate_order"] == "ifco"
    assert meta["layers"][1]["kernel_size"] == [2, 4]
    assert entries["layers/0/kernel"].shape == (3, 3, 2, 12)
    assert entries["layers/1/recurrent_kernel"].shape == (2, 4, 2, 8)
    assert entries["layers/0/peephole_f"].shape == (3,)


def test_unknown_meta_fields_survive_round_trip(tmp_path, saved):
    path, _ = saved
    entries = entries_of(path)
    meta = json.loads(str(entries["meta"]))
    meta["origin"] = {"tool": "outside", "n": 3}
    meta["layers"][0]["note"] = "kept"
    write_npz(tmp_path / "x.npz", {**entries, "meta": np.array(json.dumps(meta))})
    w = wf.load(tmp_path / "x.npz")
    wf.save(tmp_path / "y.npz", w)
    meta2 = json.loads(str(entries_of(tmp_path / "y.npz")["meta"]))
    assert meta2["origin"] == {"tool": "outside", "n": 3}
    assert meta2["layers"][0]["note"] == "kept"


def test_full_peephole_shapes_round_trip(tmp_path):
    spec = StackSpec(1, (LayerSpec(2, (3, 3), peephole="full", padding="valid"),))
    w = wf.random_weights(spec, seed=2, input_spatial=(6, 5))
    assert w.arrays["layers/0/peephole_o"].shape == (4, 3, 2)
    wf.save(tmp_path / "f.npz", w)
    assert wf.load(tmp_path / "f.npz").state_spatials() == [(4, 3)]


# -- initialiser -----------------------------------------------------------------------------------

def test_init_follows_keras_defaults():
    spec = StackSpec(3, (LayerSpec(4, (3, 3)),))
    a = wf.init_weights(spec, seed=5)
    b = wf.init_weights(spec, seed=5)
    for k in a.arrays:
        np.testing.assert_array_equal(a.arrays[k], b.arrays[k])
    k = a.arrays["layers/0/kernel"]
    limit = np.sqrt(6.0 / (9 * 3 + 9 * 16))
    assert k.dtype == np.float32 and np.abs(k).max() <= limit and np.abs(k).max() > 0.8 * limit
    r = a.arrays["layers/0/recurrent_kernel"].reshape(-1, 16).astype(np.float64)
    np.testing.assert_allclose(r.T @ r, np.eye(16), atol=1e-5)  # orthonormal columns (36 x 16)
    np.testing.assert_array_equal(a.arrays["layers/0/bias"], np.r_[np.zeros(4), np.ones(4), np.zeros(8)])
    assert not np.array_equal(wf.init_weights(spec, seed=6).arrays["layers/0/kernel"], k)


# -- atomic writes ---------------------------------------------------------------------------------

def test_save_is_atomic_when_the_write_fails(tmp_path, saved, monkeypatch):
    path, w = saved
    before = path.read_bytes()

    def boom(fh, **kw):
        fh.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        wf.save(path, w)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["w.npz"], "no temp file left behind"


def test_save_refuses_invalid_weights(tmp_path):
    w = wf.random_weights(SPEC, seed=0)
    w.arrays["layers/0/bias"] = w.arrays["layers/0/bias"][:5]
    with pytest.raises(WeightFileError, match=r"layers/0/bias: expected shape \(12,\), found \(5,\)"):
        wf.save(tmp_path / "bad.npz", w)
    assert not (tmp_path / "bad.npz").exists()


# -- malformed files -------------------------------------------------------------------------------

def _mutate(tmp_path, saved, fn) -> str:
    path, _ = saved
    entries = fn(entries_of(path))
    out = tmp_path / "bad.npz"
    write_npz(out, entries)
    return out


def _layers(entries) -> list:
    return json.loads(str(entries["meta"]))["layers"]


def _with_nan(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flat[7] = np.nan
    return a


BAD_ENTRIES = {
    "missing key": (lambda e: {k: v for k, v in e.items() if k != "layers/0/bias"}, r"missing key.*layers/0/bias"),
    "extra key": (lambda e: {**e, "layers/0/extra": np.zeros(3, np.float32)}, r"unexpected key.*layers/0/extra"),
    "extra layer arrays": (
        lambda e: {**e, "layers/2/kernel": np.zeros((3, 3, 2, 8), np.float32)},
        r"unexpected key.*layers/2/kernel",
    ),
    "wrong shape": (
        lambda e: {**e, "layers/0/kernel": np.zeros((3, 3, 2, 8), np.float32)},
        r"layers/0/kernel: expected shape \(3, 3, 2, 12\), found \(3, 3, 2, 8\)",
    ),
    "int dtype": (
        lambda e: {**e, "layers/0/bias": np.zeros(12, np.int32)},
        r"layers/0/bias: expected dtype float32 or float64, found int32",
    ),
    "float16": (
        lambda e: {**e, "layers/0/bias": np.zeros(12, np.float16)},
        r"layers/0/bias: expected dtype float32 or float64, found float16",
    ),
    "complex": (
        lambda e: {**e, "layers/0/bias": np.zeros(12, np.complex64)},
        r"layers/0/bias: expected dtype float32 or float64, found complex64",
    ),
    "mixed float dtypes": (
        lambda e: {**e, "layers/1/kernel": e["layers/1/kernel"].astype(np.float64)},
        r"layers/1/kernel: expected dtype float32 like the other arrays",
    ),
    "nan": (
        lambda e: {**e, "layers/0/recurrent_kernel": _with_nan(e["layers/0/recurrent_kernel"])},
        r"layers/0/recurrent_kernel: expected finite values, found 1 NaN/Inf of 324",
    ),
    "inf": (
        lambda e: {**e, "layers/1/kernel": np.full_like(e["layers/1/kernel"], np.inf)},
        r"layers/1/kernel: expected finite values",
    ),
    "meta not json": (lambda e: {**e, "meta": np.array("{not json")}, r"meta: expected JSON"),
    "meta not 0-d unicode": (lambda e: {**e, "meta": np.zeros(3)}, r"meta: expected a 0-d unicode array"),
    "no meta": (lambda e: {k: v for k, v in e.items() if k != "meta"}, r"missing key 'meta'"),
    "unknown version": (lambda e: with_meta(e, version=2), r"meta.version: expected 1, found 2"),
    "version as string": (lambda e: with_meta(e, version="1"), r"meta.version: expected 1, found '1'"),
    "unknown format": (lambda e: with_meta(e, format="other"), r"meta.format: expected 'convlstm-npz', found 'other'"),
    "other gate order": (lambda e: with_meta(e, gate_order="icfo"), r"meta.gate_order: expected 'ifco', found 'icfo'"),
    "missing field": (
        lambda e: with_meta(e, layers=[{"kernel_size": [3, 3]}]),
        r"layers\[0\]: missing field 'filters'",
    ),
    "bad field value": (
        lambda e: with_meta(e, layers=[{**_layers(e)[0], "padding": "full"}, _layers(e)[1]]),
        r"layers\[0\]: padding: expected one of",
    ),
    "meta says fewer layers": (
        lambda e: with_meta(e, layers=_layers(e)[:1]),
        r"unexpected key.*layers/1/",
    ),
    "input channels disagree": (
        lambda e: with_meta(e, input_channels=5),
        r"layers/0/kernel: expected shape \(3, 3, 5, 12\), found \(3, 3, 2, 12\)",
    ),
}


@pytest.mark.parametrize("name", list(BAD_ENTRIES))
def test_malformed_file_is_rejected_with_clear_message(tmp_path, saved, name):
    fn, pattern = BAD_ENTRIES[name]
    bad = _mutate(tmp_path, saved, fn)
    with pytest.raises(WeightFileError, match=pattern):
        wf.load(bad)


def test_object_array_is_never_unpickled(tmp_path, saved):
    path, _ = saved
    entries = entries_of(path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "evil.npz"
    arr = np.empty((), dtype=object)
    arr[()] = Evil()
    np.savez(bad, **{**entries, "layers/0/bias": arr}, allow_pickle=True)
    with pytest.raises(WeightFileError, match=r"layers/0/bias.*object/pickled array \(never unpickled\)"):
        wf.load(bad)
    assert not marker.exists()


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_truncated_file_is_rejected(tmp_path, saved, fraction):
    path, _ = saved
    data = path.read_bytes()
    bad = tmp_path / "trunc.npz"
    bad.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(WeightFileError, match=str(bad)):
        wf.load(bad)


def test_not_a_zip_and_missing_file(tmp_path):
    bad = tmp_path / "text.npz"
    bad.write_text("hello")
    with pytest.raises(WeightFileError, match="expected a .npz"):
        wf.load(bad)
    with pytest.raises(WeightFileError, match="no such file"):
        wf.load(tmp_path / "absent.npz")


def test_duplicate_entries_are_rejected(tmp_path, saved):
    path, _ = saved
    bad = tmp_path / "dup.npz"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(bad, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        buf = io.BytesIO()
        np.save(buf, np.zeros(12, np.float32))
        with pytest.warns(UserWarning, match="Duplicate name"):
            dst.writestr("layers/0/bias.npy", buf.getvalue())
    with pytest.raises(WeightFileError, match=r"duplicate entries \['layers/0/bias.npy'\]"):
        wf.load(bad)


def test_entry_declaring_a_huge_size_is_refused_before_reading(tmp_path, saved):
    """A zip bomb: an entry that inflates to far more than its shape needs is refused from its header."""
    path, _ = saved
    bad = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(bad, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if info.filename == "layers/0/bias.npy":
                buf = io.BytesIO()
                np.save(buf, np.zeros(50_000_000, np.float32))  # 200 MB of zeros, ~200 KB compressed
                dst.writestr("layers/0/bias.npy", buf.getvalue())
            else:
                dst.writestr(info, src.read(info))
    assert os.path.getsize(bad) < 2_000_000
    with pytest.raises(WeightFileError, match=r"entry 'layers/0/bias' declares \d+ bytes, expected at most"):
        wf.load(bad)


def test_flipped_bytes_never_load_silently(tmp_path, saved):
    """Flip bytes across the file: each copy either fails with WeightFileError or (if the flip hit
    slack such as a zip comment/padding) loads arrays identical to the original."""
    path, w = saved
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    silent_changes = 0
    for pos in rng.choice(len(data), size=40, replace=False):
        mutated = bytearray(data)
        mutated[pos] ^= 0xFF
        bad = tmp_path / "flip.npz"
        bad.write_bytes(bytes(mutated))
        try:
            back = wf.load(bad)
        except WeightFileError:
            continue
        if any(not np.array_equal(back.arrays[k], w.arrays[k]) for k in w.arrays) or back.spec != w.spec:
            silent_changes += 1
    assert silent_changes == 0, f"{silent_changes} flipped-byte files loaded with different contents"
