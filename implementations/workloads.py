"""The shared, framework-free grid of named workloads (used by the CLI, benchmarks, tests, reports).

Each workload is a stack spec plus an input shape (B, T, *S, C). The spatial sizes of ``radar``
and ``moving_mnist`` are the frames cut into 4x4 patches (space-to-depth), as in Shi et al. 2015.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .spec import LayerSpec, StackSpec


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    spec: StackSpec
    input_shape: tuple[int, ...]
    description: str

    @property
    def batch(self) -> int:
        return self.input_shape[0]

    @property
    def steps(self) -> int:
        return self.input_shape[1]

    def make_input(self, seed: int = 0, dtype: str = "float32") -> np.ndarray:
        """Seeded standard-normal frames of ``input_shape``."""
        return np.random.default_rng(seed).standard_normal(self.input_shape).astype(dtype)


def _stack(channels: int, filters: list[int], kernel: int) -> StackSpec:
    return StackSpec(channels, tuple(LayerSpec(f, (kernel, kernel)) for f in filters))


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("tiny", _stack(2, [4, 4], 3), (2, 3, 8, 8, 2), "CI-sized: 2 layers of 4, k3, 8x8x2 frames"),
        Workload(
            "small", _stack(1, [16], 3), (4, 8, 32, 32, 1), "overhead-bound: one layer of 16, k3, 32x32x1 frames"
        ),
        Workload(
            "radar",
            _stack(16, [64, 64], 3),
            (8, 5, 25, 25, 16),
            "100x100 radar frames as 4x4 patches: 2 layers of 64, k3",
        ),
        Workload(
            "moving_mnist",
            _stack(16, [128, 64, 64], 5),
            (16, 10, 16, 16, 16),
            "the paper's Moving MNIST encoder: 64x64 frames as 4x4 patches, layers 128/64/64, k5",
        ),
    )
}


def get_workload(name: str) -> Workload:
    try:
        return WORKLOADS[name]
    except KeyError:
        raise KeyError(f"unknown workload {name!r}: expected one of {sorted(WORKLOADS)}") from None
