"""Run a file parser where a crash or hang cannot take the caller down.

libhdf5 segfaults or loops forever on some damaged ``.h5`` files (one flipped byte suffices); no exception handler
in the calling process could catch that. :func:`parse_isolated` therefore runs the parser in a child process and
returns its result as canonical :class:`~implementations.weights.Weights` (passed back through a temporary
``.npz``; nothing is pickled).

The children are forked, one per file, from a small helper process (``python -c ...``, started on first use, kept
for the life of the caller, fed requests on a pipe). Unlike ``multiprocessing`` this never re-imports the caller's
``__main__``: a user script needs no ``if __name__ == "__main__"`` guard, and its top-level code never runs
twice. The helper has no threads, so forking it is safe, and forking costs a few milliseconds per file. Where
``os.fork`` does not exist (Windows), the parser runs in-process.
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .. import weights as weights_io
from ._common import ConversionError, fail

_PACKAGE_ROOT = Path(__file__).resolve().parents[2]
_SERVER_CODE = "from implementations.interop.isolated import serve; serve()"
_lock = threading.Lock()
_server: subprocess.Popen[bytes] | None = None


def _resolve(target: str) -> Any:
    """``'package.module:function'`` -> the function."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def parse_isolated(target: str, path: str | os.PathLike, timeout_s: float, preload: tuple[str, ...] = ()) \
        -> weights_io.Weights:
    """``target(path)`` (``'module:function'``, returning Weights, raising ConversionError on a bad file) run in a
    forked child. A child that crashes or runs past ``timeout_s`` seconds makes the file be refused with a
    ConversionError; ``preload`` names modules the helper imports once (h5py), so children start warm."""
    path = Path(path)
    if not hasattr(os, "fork"):  # pragma: no cover - Windows
        return _resolve(target)(path)
    with _lock, tempfile.TemporaryDirectory(prefix="convlstm-isolated-") as tmp:
        out = Path(tmp) / "weights.npz"
        request = {"target": target, "path": str(path), "out": str(out), "timeout_s": timeout_s}
        reply = None
        for attempt in range(2):  # a helper that died between calls is restarted once
            server = _ensure_server(preload)
            try:
                reply = _ask(server, request, timeout_s + 30.0)
                break
            except (BrokenPipeError, EOFError, TimeoutError) as exc:
                _stop_server()
                if attempt == 1:
                    fail(str(path), f"the isolated reader process failed ({type(exc).__name__}: {exc})")
        assert reply is not None
        status = reply.get("status")
        if status == "ok":
            try:
                return weights_io.load(out)
            except weights_io.WeightFileError as exc:  # pragma: no cover - the child wrote it with save()
                fail(str(path), f"the isolated reader returned unreadable weights ({exc})")
        if status == "error":
            raise ConversionError(reply["message"])
        if status == "timeout":
            fail(str(path), f"reading it did not finish within {timeout_s:g} s: the file is damaged (the parser "
                            "loops on it)")
        fail(str(path), f"crashed the parser ({reply.get('how', 'unknown')}): the file is damaged")


def _ensure_server(preload: tuple[str, ...]) -> subprocess.Popen[bytes]:
    global _server
    if _server is not None and _server.poll() is None:
        return _server
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PACKAGE_ROOT), env.get("PYTHONPATH")]))
    env["CONVLSTM_ISOLATED_PRELOAD"] = ",".join(preload)
    _server = subprocess.Popen([sys.executable, "-c", _SERVER_CODE], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, env=env, bufsize=0)
    return _server


def _stop_server() -> None:
    global _server
    if _server is not None:
        if _server.poll() is None:
            _server.kill()
        _server.wait()
        for stream in (_server.stdin, _server.stdout):
            if stream is not None:
                stream.close()
        _server = None


atexit.register(_stop_server)


def _ask(server: subprocess.Popen[bytes], request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Send one JSON request line, read one JSON reply line (at most ``timeout_s`` seconds)."""
    assert server.stdin is not None and server.stdout is not None
    server.stdin.write((json.dumps(request) + "\n").encode())
    server.stdin.flush()
    return json.loads(_read_line(server.stdout.fileno(), timeout_s))


def _read_line(fd: int, timeout_s: float) -> bytes:
    """Bytes from ``fd`` up to a newline; EOFError if the writer closed, TimeoutError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    data = b""
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no reply within {timeout_s:g} s")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise EOFError("the reader process exited")
            data += chunk
    return data


# ---------------------------------------------------------------------------------------------
# The helper process
# ---------------------------------------------------------------------------------------------

def serve() -> None:
    """Helper main loop: one JSON request per stdin line, one JSON reply per line on the original stdout.

    Anything a library prints goes to stderr (file descriptor 1 is pointed there), so it cannot garble replies.
    """
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    for module in filter(None, os.environ.get("CONVLSTM_ISOLATED_PRELOAD", "").split(",")):
        importlib.import_module(module)
    for line in sys.stdin:
        replies.write(json.dumps(_handle(json.loads(line))) + "\n")


def _handle(request: dict[str, Any]) -> dict[str, Any]:
    """Fork a child to run the request; wait for its message, its death or the timeout."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_end)
        try:
            os.write(write_end, json.dumps(_run(request)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        message = _read_all(read_end, pid, request["timeout_s"])
    finally:
        os.close(read_end)
    if message is None:
        return {"status": "timeout"}
    _, status = os.waitpid(pid, 0)
    if message:
        return json.loads(message)
    if os.WIFSIGNALED(status):
        return {"status": "crash", "how": f"killed by signal {os.WTERMSIG(status)}"}
    return {"status": "crash", "how": f"exit code {os.waitstatus_to_exitcode(status)}"}


def _run(request: dict[str, Any]) -> dict[str, Any]:
    """Child body: parse, save the weights to ``request['out']``, describe the outcome."""
    try:
        weights_io.save(request["out"], _resolve(request["target"])(Path(request["path"])))
        return {"status": "ok"}
    except ConversionError as exc:
        return {"status": "error", "message": str(exc)}
    except BaseException as exc:  # noqa: BLE001 - anything else is reported as an error, never raised
        return {"status": "error", "message": f"{request['path']}: unexpected {type(exc).__name__}: {exc}"}


def _read_all(fd: int, pid: int, timeout_s: float) -> bytes | None:
    """Everything the child writes before it exits, or None (child killed) after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    chunks = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return None
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
