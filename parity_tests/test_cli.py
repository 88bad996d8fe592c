"""The `convlstm-bench` console script: init, run, parity, and its error reporting.

The outside-script test writes weights by the README's format with plain NumPy (no project code),
runs every framework through the CLI in a subprocess, and checks the numbers against its own
small reference written here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import implementations
from convlstm_bench import cli
from implementations import reference
from implementations.tolerances import Tolerance

from .conftest import FRAMEWORKS, runner_class

ROOT = Path(__file__).resolve().parent.parent


def cli_command() -> list[str]:
    script = Path(sys.executable).with_name("convlstm-bench")
    return [str(script)] if script.exists() else [sys.executable, "-m", "convlstm_bench"]


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*cli_command(), *args], capture_output=True, text=True, timeout=300, cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def outside_reference(K, R, b, x):
    """An independent single-layer ConvLSTM ('same', stride 1, odd kernel, sigmoid/tanh)."""
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    kh, kw, _, f4 = K.shape
    f = f4 // 4

    def conv(a, k):
        p = np.pad(a, [(0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)])
        win = np.lib.stride_tricks.sliding_window_view(p, (kh, kw), axis=(1, 2))  # B,H,W,C,kh,kw
        return np.einsum("bhwcij,ijco->bhwo", win, k)

    h = np.zeros(x.shape[:1] + x.shape[2:4] + (f,))
    c = np.zeros_like(h)
    seq = []
    for t in range(x.shape[1]):
        z = conv(x[:, t], K) + conv(h, R) + b
        i, fg, g, o = (z[..., j * f:(j + 1) * f] for j in range(4))
        c = sig(fg) * c + sig(i) * np.tanh(g)
        h = sig(o) * np.tanh(c)
        seq.append(h)
    return np.stack(seq, 1), h, c


@pytest.fixture(scope="module")
def outside_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("outside")
    rng = np.random.default_rng(0)
    C, F = 2, 3
    K, R, b = rng.normal(0, 0.5, (3, 3, C, 4 * F)), rng.normal(0, 0.5, (3, 3, F, 4 * F)), rng.normal(0, 0.5, 4 * F)
    meta = {"format": "convlstm-npz", "version": 1, "gate_order": "ifco", "input_channels": C,
            "layers": [{"filters": F, "kernel_size": [3, 3], "strides": [1, 1], "padding": "same",
                        "dilation_rate": [1, 1], "use_bias": True, "peephole": None, "activation": "tanh",
                        "recurrent_activation": "sigmoid"}]}
    np.savez(d / "w.npz", meta=np.array(json.dumps(meta)), **{"layers/0/kernel": K, "layers/0/recurrent_kernel": R,
                                                                "layers/0/bias": b})
    x = rng.standard_normal((2, 4, 6, 5, C))
    np.save(d / "x.npy", x)
    return d, outside_reference(K, R, b, x)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_outside_script_gets_its_own_numbers(framework, outside_files):
    runner_class(framework)
    d, (seq, h, c) = outside_files
    out = d / f"out-{framework}.npz"
    proc = run_cli("run", "--framework", framework, "--weights", str(d / "w.npz"), "--input", str(d / "x.npy"),
                   "-o", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(out, allow_pickle=False) as z:
        assert sorted(z.files) == ["c/0", "h/0", "outputs"]
        assert z["outputs"].dtype == np.float64
        for name, want in (("outputs", seq), ("h/0", h), ("c/0", c)):
            err = np.abs(z[name] - want).max()
            assert err < 1e-10, f"{framework}: {name} max-abs {err:.3e} vs the outside reference"


def test_init_preset_and_config(tmp_path):
    assert cli.main(["init", "--preset", "radar", "--seed", "3", "-o", str(tmp_path / "r.npz")]) == 0
    w = implementations.load(tmp_path / "r.npz")
    assert [layer.filters for layer in w.spec.layers] == [64, 64] and w.dtype == np.float32
    spec = {"input_channels": 1, "layer_defaults": {"kernel_size": [3, 3], "peephole": "full"},
            "layers": [{"filters": 2}, {"filters": 3, "padding": "valid"}]}
    (tmp_path / "s.json").write_text(json.dumps(spec))
    args = ["init", "--config", str(tmp_path / "s.json"), "--seed", "1", "--dtype", "float64",
            "--input-spatial", "6", "6", "-o", str(tmp_path / "s.npz")]
    assert cli.main(args) == 0
    w = implementations.load(tmp_path / "s.npz")
    assert w.arrays["layers/1/peephole_o"].shape == (4, 4, 3) and w.dtype == np.float64


@pytest.mark.parametrize(
    "setup,pattern",
    [
        (lambda d: (d / "w.npz").write_bytes(b"PK\x03\x04garbage"), "expected a .npz"),
        (lambda d: np.save(d / "x.npy", np.zeros((1, 2, 8, 8, 5), np.float32)), "expected 2 channels"),
        (lambda d: np.save(d / "x.npy", np.zeros((1, 2, 8, 8, 2), np.int32)), "expected a floating dtype"),
        (lambda d: np.save(d / "x.npy", np.zeros((2, 8, 8, 2), np.float32)), "expected rank 5"),
        (lambda d: np.save(d / "x.npy", np.array([None, 1]), allow_pickle=True), "expected a .npy array"),
    ],
)
def test_cli_errors_are_one_clear_line(tmp_path, capsys, setup, pattern):
    cli.main(["init", "--preset", "tiny", "--seed", "0", "-o", str(tmp_path / "w.npz")])
    np.save(tmp_path / "x.npy", np.zeros((1, 2, 8, 8, 2), np.float32))
    setup(tmp_path)
    capsys.readouterr()
    rc = cli.main(["parity", "--weights", str(tmp_path / "w.npz"), "--input", str(tmp_path / "x.npy")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and pattern in err, err


def test_parity_command_passes_and_fails(tmp_path, capsys, monkeypatch):
    cli.main(["init", "--preset", "tiny", "--seed", "0", "-o", str(tmp_path / "w.npz")])
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((1, 2, 8, 8, 2)).astype(np.float32))
    assert cli.main(["parity", "--weights", str(tmp_path / "w.npz"), "--input", str(tmp_path / "x.npy")]) == 0
    out = capsys.readouterr().out
    for fw in FRAMEWORKS:
        assert fw in out
    # With a zero tolerance the float32 runs cannot match the float64 reference: exit 1.
    monkeypatch.setattr(cli, "tolerance", lambda q, d: Tolerance(0.0, 0.0, "test"))
    args = ["parity", "--weights", str(tmp_path / "w.npz"), "--input", str(tmp_path / "x.npy"), "--dtype", "float32"]
    if not implementations.available_frameworks():
        pytest.skip("no framework installed")
    assert cli.main(args) == 1
    assert "BEYOND TOLERANCE" in capsys.readouterr().out


def test_run_writes_atomically_and_matches_reference(tmp_path):
    framework = "torch" if "torch" in implementations.available_frameworks() else None
    if framework is None:
        pytest.skip("torch not installed")
    cli.main(["init", "--preset", "tiny", "--seed", "0", "--dtype", "float64", "-o", str(tmp_path / "w.npz")])
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8, 2))
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "o.npz"
    out.write_bytes(b"previous")
    assert cli.main(["run", "--framework", framework, "--weights", str(tmp_path / "w.npz"),
                     "--input", str(tmp_path / "x.npy"), "-o", str(out), "--go-backwards"]) == 0
    ref = reference.forward(implementations.load(tmp_path / "w.npz"), x, go_backwards=True)
    with np.load(out, allow_pickle=False) as z:
        np.testing.assert_allclose(z["outputs"], ref.outputs, atol=1e-10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.npz", "w.npz", "x.npy"]
