"""``implementations.fileio``: every atomic writer leaves the permissions a plain ``open()`` would, and nothing
partial or temporary behind when the write fails.

``tempfile.mkstemp`` creates 0600 files and that mode survives the rename, so a weight file or report written
under umask 022 used to be unreadable to the group and others; these tests pin the mode under two umasks, the
mode of a replaced file, and the failure paths of each writer.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from implementations import fileio


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _with_atomic_open(path: Path, payload: bytes) -> None:
    with fileio.atomic_open(path, "wb") as fh:
        fh.write(payload)


def _with_atomic_path(path: Path, payload: bytes) -> None:
    with fileio.atomic_path(path, ".keras") as tmp:
        tmp.write_bytes(payload)


def _with_atomic_path_replacing(path: Path, payload: bytes) -> None:
    """A writer that does not write into the file it was given but replaces it (as some savers do)."""
    with fileio.atomic_path(path, ".keras") as tmp:
        tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)


WRITERS: dict[str, Callable[[Path, bytes], object]] = {
    "atomic_write": lambda path, payload: fileio.atomic_write(path, lambda fh: fh.write(payload)),
    "atomic_open": _with_atomic_open,
    "atomic_path": _with_atomic_path,
    "atomic_path, writer replaces the file": _with_atomic_path_replacing,
    "write_json_atomic": lambda path, payload: fileio.write_json_atomic(path, {"payload": payload.decode()}),
}


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize(
    "umask, want", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)], ids=["umask022", "umask077", "umask002"]
)
@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_new_file_gets_the_mode_open_would_give(tmp_path, writer, umask, want):
    path = tmp_path / "out.bin"
    with _umask(umask):
        WRITERS[writer](path, b"new")
        with open(tmp_path / "plain.bin", "w"):
            pass
    assert _mode(path) == want == _mode(tmp_path / "plain.bin"), f"{writer}: mode {oct(_mode(path))}"


@pytest.mark.parametrize("writer", list(WRITERS))
def test_replacing_a_file_keeps_its_mode(tmp_path, writer):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    os.chmod(path, 0o640)
    with _umask(0o022):
        WRITERS[writer](path, b"new")
    assert _mode(path) == 0o640
    assert b"new" in path.read_bytes()


def _failing(writer: str) -> Callable[[Path], None]:
    """The writer ``writer`` interrupted after it has written part of the file."""

    def fail(path: Path) -> None:
        if writer == "atomic_write":
            fileio.atomic_write(path, lambda fh: (fh.write(b"part"), _raise()))
        elif writer == "atomic_open":
            with fileio.atomic_open(path, "w") as fh:
                fh.write("part")
                _raise()
        elif writer == "atomic_path":
            with fileio.atomic_path(path, ".keras") as tmp:
                tmp.write_bytes(b"part")
                _raise()
        else:
            fileio.write_json_atomic(path, {"bad": _Unprintable()})

    return fail


class _Unprintable:
    def __str__(self) -> str:
        raise KeyboardInterrupt  # JSON's default() calls str(): fails half-way through the document


def _raise() -> None:
    raise KeyboardInterrupt


FAILING = ["atomic_write", "atomic_open", "atomic_path", "write_json_atomic"]


@pytest.mark.parametrize("writer", FAILING)
def test_a_failed_first_write_leaves_no_file_at_all(tmp_path, writer):
    with pytest.raises(KeyboardInterrupt):
        _failing(writer)(tmp_path / "out.json")
    assert list(tmp_path.iterdir()) == [], "a partial target or a temp file was left behind"


@pytest.mark.parametrize("writer", FAILING)
def test_a_failed_rewrite_keeps_the_old_file_and_its_mode(tmp_path, writer):
    path = tmp_path / "out.json"
    path.write_bytes(b'{"old": 1}')
    os.chmod(path, 0o640)
    with pytest.raises(KeyboardInterrupt):
        _failing(writer)(path)
    assert path.read_bytes() == b'{"old": 1}' and _mode(path) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"], "a temp file was left behind"


def test_a_missing_folder_is_created(tmp_path):
    path = fileio.atomic_write(tmp_path / "a" / "b" / "w.bin", lambda fh: fh.write(b"x"))
    assert path.read_bytes() == b"x"


def test_temp_names_are_hidden_and_never_match_the_target_suffix(tmp_path, monkeypatch):
    seen: list[str] = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append(Path(src).name)
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    fileio.atomic_write(tmp_path / "w.npz", lambda fh: fh.write(b"x"))
    assert seen[0].startswith(".w.npz.") and seen[0].endswith(".tmp")


PAYLOAD = {
    "int": np.int64(3),
    "float": np.float32(0.5),
    "array": np.arange(3, dtype=np.int32),
    "tuple": (1, 2),
    "nested": {"b": [np.float64(1.25)], "a": None},
    "other": Path("x/y"),
}


def test_write_json_atomic_format(tmp_path):
    path = fileio.write_json_atomic(tmp_path / "m.json", PAYLOAD)
    text = path.read_text()
    assert text.endswith("}\n")
    assert json.loads(text) == {
        "int": 3, "float": 0.5, "array": [0, 1, 2], "tuple": [1, 2], "nested": {"a": None, "b": [1.25]},
        "other": "x/y",
    }
    assert text == json.dumps(json.loads(text), indent=1, sort_keys=True) + "\n"


def test_write_json_atomic_matches_the_benchmarks_writer(tmp_path):
    """Byte for byte what ``benchmarks.common.write_json_atomic`` writes, so the benchmarks can switch to it."""
    common = pytest.importorskip("benchmarks.common")
    ours = fileio.write_json_atomic(tmp_path / "ours.json", PAYLOAD)
    theirs = common.write_json_atomic(tmp_path / "theirs.json", PAYLOAD)
    assert ours.read_bytes() == theirs.read_bytes()
