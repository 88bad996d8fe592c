"""A ``.keras`` file written outside the project converts with the installed ``convlstm-bench`` command and
reproduces the Keras outputs through every one of our frameworks.

The file is made by a standalone script that imports only Keras and NumPy (run in a subprocess from a
directory outside the repository), the conversion is the console script in a second subprocess, and only the
comparison runs in this process: nothing of ours touches the file before the user-facing command does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from implementations.tolerances import tolerance
from implementations.weights import load

from .conftest import FRAMEWORKS, assert_all_close, get_runner

pytest.importorskip("keras", reason="keras is not installed: the outside .keras file cannot be made")

SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import keras

    out = sys.argv[1]
    keras.utils.set_random_seed(11)
    model = keras.Sequential([
        keras.Input(shape=(4, 9, 8, 3)),
        keras.layers.ConvLSTM2D(5, (3, 3), padding="same", return_sequences=True, name="enc1"),
        keras.layers.ConvLSTM2D(4, (2, 3), strides=(2, 1), padding="valid", dilation_rate=1,
                                recurrent_activation="hard_sigmoid", activation="relu",
                                return_sequences=True, name="enc2"),
        keras.layers.ConvLSTM2D(3, (3, 3), padding="same", use_bias=False, return_sequences=False,
                                name="enc3"),
    ])
    for layer in model.layers:  # non-default biases, so the bias copy is exercised
        w = layer.get_weights()
        layer.set_weights([a + np.random.default_rng(3).uniform(-0.3, 0.3, a.shape).astype(a.dtype) for a in w])
    x = np.random.default_rng(0).standard_normal((2, 4, 9, 8, 3)).astype("float32")
    np.save(out + "/x.npy", x)
    np.save(out + "/y.npy", keras.ops.convert_to_numpy(model(x)))
    model.save(out + "/outside.keras")
    """
)


def _console_script() -> list[str]:
    exe = Path(sys.executable).with_name("convlstm-bench")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("convlstm-bench")
    assert found, "the convlstm-bench console script is not installed: run `make setup` (pip install -e .)"
    return [found]


@pytest.fixture(scope="module")
def outside(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("outside")
    (folder / "make_model.py").write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "make_model.py", str(folder)], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    done = subprocess.run([*_console_script(), "convert", "outside.keras", "-o", "converted.npz"], cwd=folder,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "wrote converted.npz" in done.stdout
    return folder


def test_the_outside_file_converts_to_the_expected_spec(outside):
    weights = load(outside / "converted.npz")
    layers = weights.spec.layers
    assert [la.filters for la in layers] == [5, 4, 3]
    assert layers[1].kernel_size == (2, 3) and layers[1].strides == (2, 1) and layers[1].padding == "valid"
    assert layers[1].recurrent_activation == "hard_sigmoid" and layers[1].activation == "relu"
    assert [la.use_bias for la in layers] == [True, True, False]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_the_outside_file_reproduces_keras_in_every_framework(framework, outside):
    weights = load(outside / "converted.npz")
    x, y = np.load(outside / "x.npy"), np.load(outside / "y.npy")
    runner = get_runner(framework, "outside-keras-file", weights, "float32")
    got = runner.forward(x, return_sequences=False).outputs
    assert_all_close("outside .keras file via the CLI", framework, "outside-keras-file", {"outputs": got},
                     {"outputs": y}, tolerance("forward", "float32"), other="keras-file", kind="interop",
                     dtype="float32")
