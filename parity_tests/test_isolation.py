"""`import implementations` must work with every framework missing; a missing one is a clean skip."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys
    BLOCKED = {"torch", "tensorflow", "keras", "jax", "jaxlib", "flax", "optax", "h5py"}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked for this test: {name}")
            return None

    sys.meta_path.insert(0, Block())
    # find_spec-based availability checks must see them as missing too
    import importlib.util
    _orig = importlib.util.find_spec
    importlib.util.find_spec = lambda name, *a: None if name.split(".")[0] in BLOCKED else _orig(name, *a)
    """
)


def run_blocked(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_core_imports_and_runs_without_any_framework():
    proc = run_blocked(
        """
        import numpy as np
        import implementations
        from convlstm_bench import cli
        from implementations import reference, tolerances, workloads, api, weights, spec
        w = implementations.init_weights(workloads.WORKLOADS["tiny"].spec, seed=0)
        out = reference.forward(w, workloads.WORKLOADS["tiny"].make_input())
        assert out.outputs.shape == (2, 3, 8, 8, 4)
        assert implementations.available_frameworks() == []
        for fw in implementations.FRAMEWORKS:
            try:
                implementations.get_runner(fw)
            except implementations.FrameworkUnavailable as exc:
                assert "not installed" in str(exc), exc
            else:
                raise AssertionError(fw + " should be unavailable")
        mods = [m for m in sys.modules if m.split(".")[0] in ("torch", "tensorflow", "keras", "jax", "flax")]
        assert not mods, mods
        print("ok")
        """
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


def test_cli_reports_missing_framework_cleanly(tmp_path):
    proc = run_blocked(
        f"""
        import numpy as np
        from convlstm_bench import cli
        assert cli.main(["init", "--preset", "tiny", "--seed", "0", "-o", r"{tmp_path}/w.npz"]) == 0
        np.save(r"{tmp_path}/x.npy", np.zeros((1, 2, 8, 8, 2), np.float32))
        rc = cli.main(["run", "--framework", "torch", "--weights", r"{tmp_path}/w.npz",
                       "--input", r"{tmp_path}/x.npy", "-o", r"{tmp_path}/o.npz"])
        assert rc == 2, rc
        assert cli.main(["parity", "--weights", r"{tmp_path}/w.npz", "--input", r"{tmp_path}/x.npy"]) == 0
        print("ok")
        """
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert "torch: package(s) ['torch'] not installed" in proc.stderr
    assert "n/a" in proc.stdout
