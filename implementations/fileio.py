"""Atomic file writes: the one helper every writer of the project uses (weights, converters, CLI, JSON).

A write goes to a temp file in the target's folder, is fsynced, then renamed over the target with
``os.replace``, so a reader (or a crash) sees either the old file or the complete new one, never a partial
one. On any failure, ``KeyboardInterrupt`` included, the temp file is removed and the target left as it was.
Temp names are dot-files ending in ``.tmp`` (``.<name>.<random>.tmp``), so one left behind by a killed
process never matches a loader's ``*.npz`` glob.

The final file gets the permissions a plain ``open(path, "w")`` would give it: when it replaces an existing
file, that file's mode; otherwise the mode of a new file under the current umask (``0o666 & ~umask``).
``tempfile.mkstemp`` creates its files 0600 and that mode would survive the rename, so the temp file is
created here with ``os.open(..., 0o666)`` and the kernel applies the umask exactly as for ``open()``.

Imports no deep-learning framework (NumPy only, for the JSON of NumPy values).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

_TEMP_ATTEMPTS = 100


def _create_temp(path: Path) -> tuple[int, Path]:
    """Create and open a new temp file beside ``path`` with ``open()``'s permissions; return (fd, temp path)."""
    for _ in range(_TEMP_ATTEMPTS):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temp file name beside {path} after {_TEMP_ATTEMPTS} attempts")


def _final_mode(path: Path, new_file_mode: int) -> int:
    """The permission bits the target should end with: an existing target's, else ``new_file_mode``."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return new_file_mode


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", *, encoding: str | None = None) -> Iterator[IO[Any]]:
    """Open a temp file beside ``path`` for writing (``mode`` ``"wb"`` or ``"w"``); on a normal exit of the
    ``with`` block flush, fsync, set the final mode and rename it over ``path``; on an exception remove it.

    The parent folder is created if missing.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open: mode must be 'wb' or 'w', found {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
            os.chmod(tmp, _final_mode(path, stat.S_IMODE(os.fstat(fh.fileno()).st_mode)))
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(fileobj)`` on a binary temp file beside ``path`` and put it in place atomically.

    Returns ``path`` as a :class:`~pathlib.Path`. See :func:`atomic_open` for the guarantees.
    """
    with atomic_open(path, "wb") as fh:
        write(fh)
    return Path(path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path ending in ``suffix``, for a writer that needs a file name rather than a file object
    (Keras' ``.keras`` saver insists on the extension); on success fsync it, set the final mode and rename it
    over ``path``; on failure remove it.

    The temp file lives in a hidden temp folder beside ``path`` (``.<name>.XXXX.tmp/``), so even one left by
    a killed process never matches a ``*<suffix>`` glob of the target's folder. It exists (empty, created
    with ``open()``'s permissions) when yielded; the writer may overwrite or replace it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp = folder / f"partial{suffix}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        new_file_mode = stat.S_IMODE(os.fstat(fd).st_mode)
        os.close(fd)
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, _final_mode(path, new_file_mode))
        os.replace(tmp, path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def json_default(value: Any) -> Any:
    """JSON for the NumPy scalars and arrays (and tuples) measurements carry; anything else as its ``str``."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    return str(value)


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as JSON (indent 1, sorted keys, trailing newline) to ``path`` atomically; returns the path.

    NumPy integers, floats and arrays are converted to plain numbers and lists; any other object that JSON
    cannot encode is written as its ``str``.
    """
    with atomic_open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, sort_keys=True, default=json_default)
        fh.write("\n")
    return Path(path)
