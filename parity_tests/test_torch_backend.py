"""The torch backend shared by the runner and the benchmarks (:mod:`implementations.torch_impl.runner`): device
enumeration and choice, the float32 precision switch of CUDA kernels, the versions; checked without a GPU."""

from __future__ import annotations

import types

import numpy as np
import pytest

from implementations import api


def _runner_module():
    pytest.importorskip("torch", reason="torch is not installed")
    from implementations.torch_impl import runner

    return runner


def _fake_torch(n_gpus: int) -> types.SimpleNamespace:
    cuda = types.SimpleNamespace(
        is_available=lambda: n_gpus > 0, device_count=lambda: n_gpus, get_device_name=lambda i: f"Fake GPU {i}"
    )
    return types.SimpleNamespace(cuda=cuda, device=lambda kind, index=None: (kind, index))


@pytest.mark.parametrize("gpus", [0, 2])
def test_devices_lists_cuda_devices_then_the_cpu(gpus):
    runner = _runner_module()
    found = runner.devices(_fake_torch(gpus))
    assert [(c.kind, c.id, c.name, c.handle) for c in found] == [
        *(("gpu", f"gpu:{i}", f"Fake GPU {i}", ("cuda", i)) for i in range(gpus)),
        ("cpu", "cpu", api.cpu_name(), ("cpu", None)),
    ]
    choice = api.choose_device(found)
    assert choice.id == ("gpu:0" if gpus else "cpu")
    if gpus:
        assert api.choose_device(found, "cuda:1").id == "gpu:1"


def test_resolve_device_and_the_runner_device():
    runner = _runner_module()
    import torch

    cpu = runner.resolve_device("cpu")
    assert (cpu.id, cpu.handle) == ("cpu", torch.device("cpu"))
    if not torch.cuda.is_available():
        assert runner.resolve_device(None).id == "cpu"
        with pytest.raises(NotImplementedError):
            runner.resolve_device("gpu")
    with pytest.raises(ValueError):
        runner.resolve_device("tpu")
    from implementations import init_weights, stack_from_dict

    spec = stack_from_dict({"input_channels": 1, "layers": [{"filters": 2, "kernel_size": [3, 3]}]})
    r = runner.Runner(init_weights(spec, seed=0), device="cpu")
    assert r.device == "cpu"
    versions = r.versions()
    assert versions["torch"] == torch.__version__ and versions["device"] == "cpu"
    assert versions["numpy"] == np.__version__


@pytest.mark.parametrize("allow_tf32", [False, True])
def test_precision_sets_and_restores_the_tf32_switches(allow_tf32):
    """On a CUDA device (a CPU build of torch holds the same switches) the switches are set inside the block and
    restored after it, even when it raises; on the CPU nothing is touched."""
    runner = _runner_module()
    import torch

    switches = runner._tf32_switches(allow_tf32)
    before = [getattr(obj, name) for obj, name, _ in switches]
    with runner.precision(torch.device("cpu"), allow_tf32):
        assert [getattr(obj, name) for obj, name, _ in switches] == before
    with pytest.raises(KeyError), runner.precision(torch.device("cuda", 0), allow_tf32):
        assert [getattr(obj, name) for obj, name, _ in switches] == [value for _, _, value in switches]
        raise KeyError("inside")
    assert [getattr(obj, name) for obj, name, _ in switches] == before
