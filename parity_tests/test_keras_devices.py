"""The Keras backend facts shared by the runner and the benchmarks (:mod:`implementations.keras_impl.runner`):
the device list of each Keras backend (with stand-in backend modules: no GPU here), the device choice, and the
precision context, which must switch TF32 off on a GPU and restore the backend's setting after."""

from __future__ import annotations

import os
import types

import pytest

from implementations import api

keras = pytest.importorskip("keras", reason="keras is not installed")
pytestmark = pytest.mark.keras


def _fake_tf(gpus: int) -> types.SimpleNamespace:
    config = types.SimpleNamespace(
        list_physical_devices=lambda kind: [f"/physical_device:GPU:{i}" for i in range(gpus)] if kind == "GPU" else [],
        list_logical_devices=lambda kind: [f"/device:GPU:{i}" for i in range(gpus)] if kind == "GPU" else [],
        experimental=types.SimpleNamespace(get_device_details=lambda d: {"device_name": "Fake A100"}),
    )
    return types.SimpleNamespace(config=config)


def _fake_jax(gpus: int) -> types.SimpleNamespace:
    def device(platform: str, i: int, kind: str) -> types.SimpleNamespace:
        return types.SimpleNamespace(platform=platform, id=i, device_kind=kind)

    cpu = [device("cpu", 0, "cpu")]
    accel = [device("gpu", i, "Fake H100") for i in range(gpus)]
    return types.SimpleNamespace(devices=lambda backend=None: cpu if backend == "cpu" else (accel or cpu))


def _fake_torch(gpus: int) -> types.SimpleNamespace:
    cuda = types.SimpleNamespace(
        is_available=lambda: gpus > 0, device_count=lambda: gpus, get_device_name=lambda i: f"Fake GPU {i}"
    )
    return types.SimpleNamespace(cuda=cuda)


@pytest.mark.parametrize("gpus", [0, 2])
@pytest.mark.parametrize(
    "backend, fake, gpu_name, gpu_handle, cpu_handle",
    [
        ("tensorflow", _fake_tf, "Fake A100", "GPU:0", "CPU:0"),
        ("jax", _fake_jax, "Fake H100", None, None),
        ("torch", _fake_torch, "Fake GPU 0", "cuda:0", "cpu"),  # not "cpu:0": non-leaf variables on torch
    ],
)
def test_devices_of_every_backend(gpus, backend, fake, gpu_name, gpu_handle, cpu_handle):
    from implementations.keras_impl import runner

    found = runner.devices(backend, fake(gpus))
    assert [c.id for c in found] == [*(f"gpu:{i}" for i in range(gpus)), "cpu"]
    choice = api.choose_device(found)
    want = ("gpu:0", gpu_name, gpu_handle) if gpus else ("cpu", api.cpu_name(), cpu_handle)
    assert (choice.id, choice.name) == want[:2]
    if want[2] is not None:
        assert choice.handle == want[2]
    assert api.choose_device(found, "cpu").kind == "cpu"


def test_resolve_device_errors_are_input_errors():
    from implementations.keras_impl import resolve_device

    assert resolve_device(None).id in ("cpu", "gpu:0")
    assert resolve_device("cpu").id == "cpu"
    for bad in ("tpu", "gpu:99", 3):
        with pytest.raises(api.InputError):
            resolve_device(bad)


def _tf32_state() -> object:
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.config.experimental.tensor_float_32_execution_enabled()
    if backend == "jax":
        import jax

        return jax.config.jax_default_matmul_precision
    import torch

    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        return conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


FULL_FP32 = {"tensorflow": False, "jax": "highest", "torch": (("ieee", "ieee"), (False, False))}


def test_precision_is_full_fp32_on_a_gpu_and_restored():
    from implementations.keras_impl import precision

    backend = keras.backend.backend()
    assert backend == os.environ.get("KERAS_BACKEND", "tensorflow")
    before = _tf32_state()
    with precision(api.DeviceCandidate("cpu", 0, "cpu"), allow_tf32=False):
        assert _tf32_state() == before  # no-op on the CPU
    with precision(api.DeviceCandidate("gpu", 0, "stand-in GPU"), allow_tf32=False):
        inside = _tf32_state()
    want = FULL_FP32[backend]
    assert inside in want if backend == "torch" else inside == want
    assert _tf32_state() == before
