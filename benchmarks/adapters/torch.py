"""PyTorch adapter: ``torch`` (our module, eager), ``torch-compile`` (the same under torch.compile), ``torch-fused``
(the fused-conv peer module of :mod:`benchmarks.peers.torch_fused`, loaded with
:func:`implementations.interop.to_torch_fused`) and ``torch-fused-compile`` (that peer under torch.compile).

Data are channels-first inside (inputs (B, T, C, *S), outputs (B, T, F, *S')), converted once in ``build``. Devices,
precision and versions come from the implementation's backend (:mod:`implementations.torch_impl.runner`), the device
choice from :func:`implementations.api.choose_device` with the ``$BENCH_DEVICE`` override. Every call runs inside
:func:`implementations.torch_impl.runner.precision`: float32 convolutions and matmuls in full fp32 on CUDA (no TF32),
as in the parity tests, without touching the process-wide settings between calls.

On a CUDA device two settings differ from the CPU, both benchmark-only (the parity tests run the implementation
directly, with PyTorch's defaults):

- cuDNN autotuning (``torch.backends.cudnn.benchmark = True``): each convolution shape's fastest algorithm is
  picked on its first call, i.e. during the first call and the warm-up, outside the timed region.
- The compiled variants use ``torch.compile(mode="reduce-overhead")`` (CUDA graphs: a step's kernels replayed as
  one graph launch), ours and the fused peer alike; every call starts with
  ``torch.compiler.cudagraph_mark_step_begin()``, so the previous call's outputs may be overwritten.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from implementations import api

from .. import common, threads

VARIANTS = ("torch", "torch-compile", "torch-fused", "torch-fused-compile")
COMPILED = ("torch-compile", "torch-fused-compile")
FUSED = ("torch-fused", "torch-fused-compile")
#: torch.compile mode of the compiled variants on a CUDA device (CUDA graphs); on the CPU inductor's default.
GPU_COMPILE_MODE = "reduce-overhead"
DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def import_framework(variant: str) -> Any:
    """Import what ``variant`` needs (the import-only memory baseline) and select its device."""
    import torch

    threads.configure_torch(torch)
    choose(torch)
    return torch


def device_candidates(torch: Any) -> list[api.DeviceCandidate]:
    """The devices torch offers, CUDA devices first (:func:`implementations.torch_impl.runner.devices`)."""
    from implementations.torch_impl import runner

    return runner.devices(torch)


def choose(torch: Any) -> api.DeviceCandidate:
    """The benchmark's device: :func:`implementations.api.choose_device`, overridden by ``$BENCH_DEVICE``. On CUDA
    also turns on cuDNN autotuning (benchmarks only): algorithms are chosen during the first call and warm-up, not
    timed."""
    choice = api.choose_device(device_candidates(torch), os.environ.get(api.DEVICE_ENV) or None)
    if choice.kind == "gpu":
        torch.backends.cudnn.benchmark = True
    return choice


def compile_mode(device_type: str) -> str | None:
    """``torch.compile``'s ``mode`` for a device type: CUDA graphs on ``cuda``, None (inductor's default) elsewhere."""
    return GPU_COMPILE_MODE if device_type == "cuda" else None


def make_train_step(torch: Any, forward: Any, parameters: Any, x: Any, target: Any, lr: float) -> Any:
    """One SGD step on MSE(forward(x), target); returns ``step() -> (loss, outputs)`` (both detached).

    Shared by every torch variant (the compiled one passes its compiled forward).
    """
    optimizer = torch.optim.SGD(list(parameters), lr=lr)

    def step() -> tuple[Any, Any]:
        optimizer.zero_grad(set_to_none=True)
        out = forward(x)
        loss = torch.mean((out.float() - target) ** 2)
        loss.backward()
        optimizer.step()
        return loss.detach(), out.detach()

    return step


class TorchModel(common.Model):
    framework = "torch"

    def __init__(self, workload: Any, variant: str, dtype: str, weights: Any, x: np.ndarray, target: np.ndarray):
        import torch

        from implementations import torch_impl

        if variant not in VARIANTS:
            raise ValueError(f"not a torch variant: {variant!r}")
        self.torch = torch
        self.variant = variant
        self.dtype = dtype
        threads.configure_torch(torch)
        choice = choose(torch)
        self._device = choice.handle
        self.device, self.device_kind, self.device_name = choice.id, choice.kind, choice.name
        # Every call in full fp32 on CUDA (entered per call, so nothing else in the process is affected).
        self._precision: Callable[[], Any] = contextlib.nullcontext
        if self._device.type == "cuda":
            self._precision = lambda: torch_impl.precision(self._device, allow_tf32=False)
        tdtype = getattr(torch, DTYPES[dtype])
        self._tdtype = tdtype
        if dtype != "float32":
            _probe_dtype(torch, self._device, tdtype)
        if variant in FUSED:
            from ..peers import torch_fused

            module = torch_fused.build(weights).to(device=self._device, dtype=tdtype)
            self._call = module
        else:
            # Built in float32, then cast: the module's initialiser (QR) has no half-precision CPU kernel.
            module = torch_impl.ConvLSTM.from_weights(weights, dtype=torch.float32, device=self._device)
            module = module.to(dtype=tdtype)
            self._call = lambda inp: module(inp)[0]
        self.module = module
        self._compile_mode = compile_mode(self._device.type) if variant in COMPILED else None
        if variant == "torch-compile":
            _cold_inductor_cache()
            compiled = torch.compile(module, mode=self._compile_mode)
            self._call = lambda inp: compiled(inp)[0]
        elif variant == "torch-fused-compile":
            _cold_inductor_cache()
            self._call = torch.compile(module, mode=self._compile_mode)
        cf = np.ascontiguousarray(np.moveaxis(x, -1, 2))  # (B, T, *S, C) -> (B, T, C, *S)
        self.x = torch.from_numpy(cf).to(device=self._device, dtype=tdtype)
        tcf = np.ascontiguousarray(np.moveaxis(target, -1, 2))
        self.target = torch.from_numpy(tcf).to(device=self._device, dtype=torch.float32)
        self._step: Any = None
        self._out: Any = None
        self._loss: Any = None

    def prepare(self, mode: str) -> None:
        if mode == "train" and self._step is None:
            # Creating the first torch optimizer imports torch._dynamo (seconds): set-up, not part of a step.
            self._step = make_train_step(
                self.torch, self._call, self.module.parameters(), self.x, self.target, common.LEARNING_RATE
            )

    def _begin_step(self) -> None:
        """Under CUDA graphs: a new step begins, the previous one's graph outputs may be overwritten (they are read
        before the next call, by ``outputs()``/``loss()``)."""
        if self._compile_mode == "reduce-overhead":
            self.torch.compiler.cudagraph_mark_step_begin()

    def forward(self) -> None:
        self._begin_step()
        with self.torch.no_grad(), self._precision():
            self._out = self._call(self.x)

    def train_step(self) -> None:
        if self._step is None:
            self.prepare("train")
        self._begin_step()
        with self._precision():
            self._loss, self._out = self._step()

    def sync(self) -> None:
        if self._device.type == "cuda":
            self.torch.cuda.synchronize(self._device)

    def outputs(self) -> np.ndarray:
        out = self._out.float().cpu().numpy()
        return np.ascontiguousarray(np.moveaxis(out, 2, -1))

    def loss(self) -> float:
        return float(self._loss.cpu())

    def first_weight(self) -> np.ndarray:
        return next(self.module.parameters()).detach().float().cpu().numpy().copy()

    def device_peak_bytes(self) -> int | None:
        if self._device.type != "cuda":
            return None
        return int(self.torch.cuda.max_memory_allocated(self._device))

    def live_train_bytes(self) -> tuple[int, str]:
        """Peak of the ``torch.profiler`` memory timeline over one training step, minus its value at the start
        (weights, input and target are live before the step and not counted; gradients, saved activations,
        temporaries and the outputs are)."""
        import json
        import os
        import tempfile
        import warnings

        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self._device.type == "cuda" else [])
        with profile(activities=activities, profile_memory=True, record_shapes=True, with_stack=True) as prof:
            self.train_step()
            self.sync()
        device = "cpu" if self._device.type == "cpu" else f"cuda:{self._device.index or 0}"
        fd, path = tempfile.mkstemp(suffix=".raw.json")
        os.close(fd)
        try:
            with warnings.catch_warnings():  # deprecated in favour of CUDA-only snapshots; the CPU has no other
                warnings.simplefilter("ignore", FutureWarning)
                prof.export_memory_timeline(path, device=device)
            with open(path) as fh:
                _times, sizes = json.load(fh)
        finally:
            os.unlink(path)
        totals = [sum(row) for row in sizes]
        if not totals:
            raise NotImplementedError(f"{self.variant}: the profiler recorded no memory events on {device}")
        return max(totals) - totals[0], "torch.profiler memory timeline: peak minus start of one step"

    def peak_gflops(self) -> dict[str, float]:
        with self._precision():
            return peak_gflops(self.torch, self._device, self._tdtype, self.device_kind, self.workload_probe)

    workload_probe: Any = None

    def versions(self) -> dict[str, str]:
        from implementations.torch_impl import Runner

        return Runner.framework_versions()

    def options(self) -> dict[str, Any]:
        return {
            "compile": self.variant in COMPILED,
            "compile_mode": (self._compile_mode or "default (inductor)") if self.variant in COMPILED else None,
            "cudnn_benchmark": bool(self.torch.backends.cudnn.benchmark) if self._device.type == "cuda" else None,
            "inductor_cache": "cold (fresh TORCHINDUCTOR_CACHE_DIR)" if self.variant in COMPILED else None,
            "threads": self.torch.get_num_threads(),
            "tf32": False,
            "optimizer": f"SGD(lr={common.LEARNING_RATE})",
            "layout": "channels-first (B, T, C, H, W)",
        }


def _cold_inductor_cache() -> None:
    """A fresh, empty inductor cache directory for this process (removed at exit), so the first call measures a
    cold compile: inductor otherwise reuses compiled graphs from ~/.cache or /tmp across processes and runs."""
    import atexit
    import os
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="convlstm-bench-inductor-")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = folder
    atexit.register(shutil.rmtree, folder, True)


def _probe_dtype(torch: Any, device: Any, tdtype: Any) -> None:
    """NotImplementedError where the device has no conv kernel for the dtype."""
    try:
        torch.nn.functional.conv2d(
            torch.zeros(1, 2, 4, 4, device=device, dtype=tdtype), torch.zeros(4, 2, 3, 3, device=device, dtype=tdtype)
        )
    except (RuntimeError, NotImplementedError) as exc:
        raise NotImplementedError(f"torch has no {tdtype} convolution on {device}: {exc}") from None


def peak_gflops(torch: Any, device: Any, tdtype: Any, device_kind: str, probe: common.ConvProbe) -> dict[str, float]:
    """The framework's own large matmul and the workload's bare gate convolution, GFLOP/s (best of a few)."""
    n = common.matmul_size(device_kind)
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=tdtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=tdtype)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def matmul() -> None:
        with torch.no_grad():
            torch.mm(a, b)
        sync()

    conv = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d, 3: torch.nn.functional.conv3d}
    fn = conv[len(probe.spatial)]
    xi = torch.randn(probe.batch, probe.in_channels, *probe.spatial, generator=gen).to(device=device, dtype=tdtype)
    w = torch.randn(probe.out_channels, probe.in_channels, *probe.kernel, generator=gen).to(device=device, dtype=tdtype)
    pad = tuple(k // 2 for k in probe.kernel)

    def gate_conv() -> None:
        with torch.no_grad():
            fn(xi, w, padding=pad)
        sync()

    return {
        "matmul": common.best_rate(matmul, 2.0 * n**3),
        "conv": common.best_rate(gate_conv, probe.flops),
    }


def build(workload: Any, variant: str, dtype: str, weights: Any, x: np.ndarray, target: np.ndarray) -> TorchModel:
    model = TorchModel(workload, variant, dtype, weights, x, target)
    model.workload_probe = common.conv_probe(workload, model.device_kind)
    return model
