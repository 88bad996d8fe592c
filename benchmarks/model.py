"""What the adapters (:mod:`benchmarks.adapters`) implement and share: the :class:`Model` surface every
``build`` returns, and the sizes and timing rule of the peak probes (the framework's own matmul and bare gate
convolution, measured in the same process, on the same device and dtype, as the model).
Imports no framework.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from implementations.workloads import Workload

from .grid import VARIANT_TABLE, active_profile

# ---------------------------------------------------------------------------------------------
# The adapters' surface
# ---------------------------------------------------------------------------------------------


class Model:
    """What every adapter's ``build(workload, variant, dtype, weights, x, target)`` returns.

    The input batch and the training target live on the device already, in the framework's layout.
    ``forward()`` / ``train_step()`` start one inference pass / one training step (forward, MSE against the
    target, backward, SGD update) and keep its results; ``sync()`` waits until they are computed
    (torch.cuda.synchronize, block_until_ready, or a host copy for TensorFlow). ``outputs()`` is the last
    output sequence as NumPy (B, T, *S', F) channels-last; ``loss()`` the last training loss.
    """

    variant: str = "?"
    framework: str = "?"
    device: str = "cpu"
    device_kind: str = "cpu"
    device_name: str = "cpu"
    #: True when train_step() also yields the outputs of its forward pass (pre-update weights).
    train_returns_outputs: bool = True

    def prepare(self, mode: str) -> None:
        """Untimed set-up before the first call of ``mode`` (e.g. creating the optimizer for ``train``)."""

    def forward(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def train_step(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def sync(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def outputs(self) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def loss(self) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def device_peak_bytes(self) -> int | None:
        """Peak bytes of the framework's device allocator in this process; None on the CPU."""
        return None

    def live_train_bytes(self) -> tuple[int, str]:
        """Live tensor memory of one training step, in bytes, and how it was measured (``benchmarks.live_memory``).

        Call after a warm-up step. NotImplementedError where the framework exposes no such figure on the device.
        """
        raise NotImplementedError(f"{self.variant}: no live-tensor memory figure for this framework")

    def first_weight(self) -> np.ndarray:  # pragma: no cover - abstract
        """A host copy of one trainable weight array (to check that training updates the weights)."""
        raise NotImplementedError

    def peak_gflops(self) -> dict[str, float]:  # pragma: no cover - abstract
        """``{"matmul": GFLOP/s, "conv": GFLOP/s}`` of the framework's own kernels, same device and dtype."""
        raise NotImplementedError

    def versions(self) -> dict[str, str]:
        return {}

    def options(self) -> dict[str, Any]:
        return {}


def get_adapter(variant: str) -> Any:
    """The adapter module of ``variant`` (imports the adapter, which imports no framework at import)."""
    return importlib.import_module(f"{__package__}.adapters.{VARIANT_TABLE[variant].adapter}")


# ---------------------------------------------------------------------------------------------
# Probe sizes for the peak measurements
# ---------------------------------------------------------------------------------------------


def matmul_size(device_kind: str) -> int:
    """Side n of the square matmul probe (2 n^3 FLOPs): big enough to saturate the device, short on a CPU."""
    return 8192 if device_kind == "gpu" else 1024


@dataclasses.dataclass(frozen=True)
class ConvProbe:
    """The bare gate convolution of one layer: (N, *S', C_in + F) -> (N, *S', 4F), kernel k, stride 1, 'same'."""

    batch: int
    spatial: tuple[int, ...]
    in_channels: int
    out_channels: int
    kernel: tuple[int, ...]

    @property
    def flops(self) -> int:
        return 2 * self.batch * math.prod(self.spatial) * math.prod(self.kernel) * self.in_channels * self.out_channels


def conv_probe(workload: Workload, device_kind: str) -> ConvProbe:
    """The gate-sized convolution of the workload's costliest layer, batch capped to keep one call short.

    Uncapped the batch is B*T (the workload's own); on a CPU it is cut to ~4 GFLOP per call (on a GPU
    ~500 GFLOP), which does not change the achievable rate of the kernel.
    """
    spec = workload.spec
    states = spec.state_spatials(workload.input_shape[2:-1])
    best = None
    for i, (layer, spatial) in enumerate(zip(spec.layers, states)):
        probe = ConvProbe(
            workload.batch * workload.steps,
            tuple(spatial),
            spec.layer_input_channels(i) + layer.filters,
            4 * layer.filters,
            tuple(layer.kernel_size),
        )
        if best is None or probe.flops > best.flops:
            best = probe
    assert best is not None
    target = 5e11 if device_kind == "gpu" else 4e9
    per_image = best.flops / best.batch
    batch = max(1, min(best.batch, int(target // per_image)))
    return dataclasses.replace(best, batch=batch)


def best_rate(
    run: Callable[[], None], flops: float, *, min_calls: int = 3, seconds: float | None = None
) -> float:
    """GFLOP/s of the fastest synced call of ``run``: a warm-up of ``seconds`` (default: the active profile's
    ``peak_seconds``), then at least ``min_calls`` calls and more until ``seconds`` (at most 1000): on a shared
    machine the best call is the one least disturbed by other processes."""
    budget = active_profile().peak_seconds if seconds is None else seconds
    start = time.perf_counter()
    calls = 0
    while calls < 2 or (time.perf_counter() - start < budget and calls < 1000):
        run()
        calls += 1
    best = math.inf
    start = time.perf_counter()
    for i in range(1000):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
        if i + 1 >= min_calls and time.perf_counter() - start > budget:
            break
    return flops / best / 1e9

