"""Nothing lost: every writer of the project replaces its target atomically.

Writers covered: ``weights.save`` / ``weights.atomic_write`` (also used by the parity/report JSON of conftest),
and the converter writers ``write_torch_fused_file``, ``write_flax_file`` (atomic_write) and
``write_keras_file`` (``fileio.atomic_path``); ``weights.atomic_write`` and ``interop.atomic_path`` are
:mod:`implementations.fileio`'s, re-exported.

* A writer process SIGKILLed part-way leaves the previous file byte-identical and loadable. The kill is
  deterministic: the child patches the file object the writer writes through so that, after a given number of
  bytes, it drops a marker file and blocks; the parent waits for the marker and kills. A second hook point blocks
  at the fsync before the rename (for the keras writer, which writes through a path, this is the only one). The
  half-written temp file a SIGKILL leaves behind cannot be cleaned up by the dead process; it is a dot-file
  ending in ``.tmp``, so a loader globbing ``*.npz`` / ``*.pt`` ... never sees it.
* Two processes saving different weights to the same path many times while this process keeps loading it:
  every load succeeds and yields one of the two, and the final file is the last one written.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from implementations import interop
from implementations import weights as wf
from implementations.spec import LayerSpec, StackSpec

from .conftest import ROOT

SPEC = StackSpec(2, (LayerSpec(2, (3, 3)),))
BIG_SPEC = StackSpec(8, (LayerSpec(64, (3, 3)),))  # ~2.5 MB in float64: written in many chunks

CHILD = textwrap.dedent("""
    import builtins, os, sys, time
    from pathlib import Path
    from implementations import interop
    from implementations import weights as wf
    from implementations.spec import LayerSpec, StackSpec

    fmt, path, hook, after, marker = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]

    def block():
        Path(marker).write_text("writing")
        while True:
            time.sleep(1)

    if hook == "mid-write":  # block after `after` bytes went through the writer's file object
        real_fdopen = os.fdopen

        class Slow:
            def __init__(self, fh):
                self.fh, self.n = fh, 0
            def write(self, data):
                if self.n + len(data) > after:
                    self.fh.write(bytes(memoryview(data)[: max(after - self.n, 0)]))
                    self.fh.flush()
                    block()
                self.n += len(data)
                return self.fh.write(data)
            def __getattr__(self, name):
                return getattr(self.fh, name)
            def __enter__(self):
                return self
            def __exit__(self, *exc):
                return self.fh.__exit__(*exc)

        os.fdopen = lambda *a, **k: Slow(real_fdopen(*a, **k))
    else:  # block when the complete temp file is fsynced, just before the rename
        os.fsync = lambda fd: block()

    spec = StackSpec(8, (LayerSpec(64, (3, 3)),)) if fmt == "npz" else StackSpec(2, (LayerSpec(2, (3, 3)),))
    new = wf.random_weights(spec, seed=99, dtype="float64")
    if fmt == "npz":
        wf.save(path, new)
    elif fmt == "keras":
        interop.write_keras_file(new.astype("float32"), path, (4, 4))
    else:
        interop.write_weights(new, path)
    print("finished without blocking", flush=True)
""")

WRITERS = {
    "npz": (".npz", "mid-write"),
    "torch-fused": (".pt", "mid-write"),
    "flax": (".msgpack", "mid-write"),
    "npz-before-rename": (".npz", "before-rename"),
    "keras-before-rename": (".keras", "before-rename"),
}


def _write_original(fmt: str, path: Path) -> None:
    if fmt == "npz":
        wf.save(path, wf.random_weights(BIG_SPEC, seed=1, dtype="float64"))
    elif fmt == "keras":
        interop.write_keras_file(wf.random_weights(SPEC, seed=1, dtype="float32"), path, (4, 4))
    else:
        interop.write_weights(wf.random_weights(SPEC, seed=1, dtype="float64"), path)


@pytest.mark.parametrize("name", list(WRITERS))
def test_sigkill_mid_write_leaves_the_previous_file_intact(tmp_path, name):
    fmt = name.split("-before")[0]
    suffix, hook = WRITERS[name]
    if fmt in ("keras", "torch-fused", "flax"):
        pytest.importorskip({"keras": "keras", "torch-fused": "torch", "flax": "flax"}[fmt])
    path = tmp_path / f"weights{suffix}"
    _write_original(fmt, path)
    before = path.read_bytes()
    original = interop.read_weights(path)
    marker = tmp_path / "marker"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    after = len(before) // 2  # half of a file the size of the old one
    child = subprocess.Popen([sys.executable, "-c", CHILD, fmt, str(path), hook, str(after), str(marker)],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, f"the writer exited early: {child.communicate()}"
            assert time.monotonic() < deadline, "the writer never reached the hook"
            time.sleep(0.02)
        temps = [p for p in tmp_path.rglob("*") if p.is_file() and ".tmp" in str(p.relative_to(tmp_path))]
        assert temps and all(p.stat().st_size > 0 for p in temps), "the kill must hit a partially written temp"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    assert child.returncode == -signal.SIGKILL
    assert path.read_bytes() == before, "the target changed although the writer died before its rename"
    reloaded = interop.read_weights(path)
    assert all(np.array_equal(reloaded.arrays[k], original.arrays[k]) for k in original.arrays)
    visible = sorted(p.name for p in tmp_path.glob(f"*{suffix}"))
    assert visible == [path.name], f"a loader globbing *{suffix} would see {visible}"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in (path.name, "marker")]
    assert leftovers and all(n.startswith(f".{path.name}.") and n.endswith(".tmp") for n in leftovers), leftovers


WRITER_LOOP = textwrap.dedent("""
    import os, sys, time
    from implementations import weights as wf
    from implementations.spec import LayerSpec, StackSpec
    path, seed, started, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    spec = StackSpec(8, (LayerSpec(32, (3, 3)),))
    w = wf.random_weights(spec, seed=seed, dtype="float64")
    deadline = time.monotonic() + 120
    wf.save(path, w)
    open(started, "w").close()
    while not os.path.exists(stop) and time.monotonic() < deadline:
        wf.save(path, w)
""")


def test_concurrent_writers_never_produce_a_corrupt_file(tmp_path):
    """Two processes replace one file in a loop while this one loads it: every load must see one writer's whole
    file. The writers keep writing until told to stop, and the loads start only once both have written, so every
    counted load overlaps both writers whatever the machine's speed."""
    folder = tmp_path / "shared"
    folder.mkdir()
    path = folder / "shared.npz"
    spec = StackSpec(8, (LayerSpec(32, (3, 3)),))
    candidates = {seed: wf.random_weights(spec, seed=seed, dtype="float64") for seed in (11, 12)}
    wf.save(path, candidates[11])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    stop = tmp_path / "stop"
    started = {seed: tmp_path / f"started-{seed}" for seed in candidates}
    writers = [subprocess.Popen([sys.executable, "-c", WRITER_LOOP, str(path), str(seed), str(started[seed]),
                                 str(stop)], env=env) for seed in candidates]
    try:
        deadline = time.monotonic() + 60
        while not all(f.exists() for f in started.values()):
            assert all(w.poll() is None for w in writers), "a writer exited before it started writing"
            assert time.monotonic() < deadline, "the writers did not start within 60 s"
            time.sleep(0.01)
        for _ in range(30):
            loaded = wf.load(path)  # must always succeed: os.replace swaps whole files
            match = [s for s, c in candidates.items() if all(np.array_equal(loaded.arrays[k], c.arrays[k])
                                                             for k in c.arrays)]
            assert match, "a load returned weights that neither writer wrote"
        assert all(w.poll() is None for w in writers), "a writer stopped while the loads ran"
    finally:
        stop.touch()
        codes = [w.wait(60) for w in writers]
    assert codes == [0, 0]
    final = wf.load(path)
    assert any(all(np.array_equal(final.arrays[k], c.arrays[k]) for k in c.arrays) for c in candidates.values())
    assert sorted(p.name for p in folder.iterdir()) == ["shared.npz"], "temp files left behind"


def test_atomic_write_failure_keeps_the_target_and_removes_the_temp(tmp_path):
    """The in-process half of the contract (the report JSON writer of conftest uses atomic_write)."""
    target = tmp_path / "report.json"
    wf.atomic_write(target, lambda fh: fh.write(b'{"old": 1}'))

    def boom(fh):
        fh.write(b'{"new": ')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        wf.atomic_write(target, boom)
    assert target.read_bytes() == b'{"old": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
    with pytest.raises(RuntimeError):
        with interop.atomic_path(tmp_path / "m.keras", ".keras") as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("writer failed")
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
