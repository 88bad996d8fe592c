"""The parity grid: small cases that together cover every option of the spec.

Each case is a spec, an input shape and runtime options. Shapes are tiny on purpose (CI on 2 cores);
the paper-sized configurations belong to the benchmarks.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from implementations.api import LossProbe
from implementations.spec import LayerSpec, StackSpec
from implementations.weights import Weights, random_weights


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    spec: StackSpec
    input_shape: tuple[int, ...]
    go_backwards: bool = False
    initial_state: bool = False
    return_sequences: bool = True

    def weights(self, dtype: str = "float64") -> Weights:
        return random_weights(self.spec, seed=len(self.id), dtype=dtype, input_spatial=self.input_shape[2:-1])

    def inputs(self, dtype: str = "float64") -> np.ndarray:
        return np.random.default_rng(7).standard_normal(self.input_shape).astype(dtype)

    def state0(self, dtype: str = "float64") -> list[tuple[np.ndarray, np.ndarray]] | None:
        if not self.initial_state:
            return None
        rng = np.random.default_rng(11)
        b = self.input_shape[0]
        states = self.spec.state_spatials(self.input_shape[2:-1])
        return [
            tuple(rng.standard_normal((b, *s, layer.filters)).astype(dtype) for _ in range(2))
            for s, layer in zip(states, self.spec.layers)
        ]

    def probe(self) -> LossProbe:
        return LossProbe.random(self.spec, self.input_shape, seed=3)

    def run_kwargs(self, dtype: str = "float64") -> dict[str, Any]:
        return {"initial_state": self.state0(dtype), "go_backwards": self.go_backwards}


def _stack(c: int, *layers: LayerSpec) -> StackSpec:
    return StackSpec(c, layers)


L = LayerSpec
CASES: list[Case] = [
    Case("1layer_k3_same", _stack(2, L(3, (3, 3))), (2, 3, 6, 5, 2)),
    Case("2layers_even_k2x4", _stack(2, L(3, (2, 4)), L(2, (2, 2))), (2, 3, 5, 6, 2)),
    Case("3layers_mixed", _stack(1, L(2, (3, 3)), L(3, (1, 1)), L(2, (3, 2))), (1, 2, 5, 5, 1)),
    Case("valid_strides2", _stack(2, L(3, (3, 3), strides=2, padding="valid")), (2, 3, 7, 8, 2)),
    Case("same_strides2_even", _stack(2, L(3, (2, 3), strides=(2, 2), padding="same"), L(2, (3, 3))), (2, 3, 7, 6, 2)),
    Case("dilation2_same", _stack(2, L(3, (3, 3), dilation_rate=2)), (2, 3, 7, 7, 2)),
    Case("dilation2_valid", _stack(2, L(2, (2, 3), dilation_rate=(2, 1), padding="valid")), (2, 3, 7, 6, 2)),
    Case("no_bias", _stack(2, L(3, (3, 3), use_bias=False), L(2, (3, 3), use_bias=False)), (2, 3, 5, 5, 2)),
    Case("peephole_channel", _stack(2, L(3, (3, 3), peephole="channel")), (2, 4, 5, 5, 2)),
    Case(
        "peephole_full_valid",
        _stack(2, L(3, (3, 3), peephole="full", padding="valid"), L(2, (2, 2), peephole="full")),
        (2, 3, 6, 7, 2),
    ),
    Case("hard_sigmoid", _stack(2, L(3, (3, 3), recurrent_activation="hard_sigmoid")), (2, 3, 5, 5, 2)),
    Case(
        "hard_sigmoid_keras2_relu",
        _stack(2, L(3, (3, 3), recurrent_activation="hard_sigmoid_keras2", activation="relu")),
        (2, 3, 5, 5, 2),
    ),
    Case("linear_activation", _stack(2, L(3, (3, 3), activation="linear")), (2, 3, 5, 5, 2)),
    Case("go_backwards_2layers", _stack(2, L(3, (3, 3)), L(2, (3, 3))), (2, 4, 5, 5, 2), go_backwards=True),
    Case(
        "initial_state_2layers",
        _stack(2, L(3, (3, 3)), L(2, (3, 3), strides=2)),
        (2, 3, 6, 6, 2),
        initial_state=True,
    ),
    Case("last_step_only", _stack(2, L(3, (3, 3))), (2, 3, 5, 5, 2), return_sequences=False),
    Case("rank1", _stack(2, L(3, (3,), strides=2), L(2, (2,))), (2, 3, 9, 2)),
    Case("rank3", _stack(2, L(2, (3, 2, 3), peephole="channel")), (1, 2, 4, 4, 3, 2)),
    # One input channel: torch on CPU pads it with a zero channel (oneDNN's single-channel conv is slow).
    Case("rank3_1channel", _stack(1, L(2, (3, 3, 2))), (1, 2, 4, 3, 4, 1)),
]
CASES_BY_ID = {c.id: c for c in CASES}
#: The subset used for gradient checks (each check runs many finite differences).
GRAD_CASE_IDS = [
    "2layers_even_k2x4",
    "valid_strides2",
    "dilation2_same",
    "no_bias",
    "peephole_channel",
    "peephole_full_valid",
    "hard_sigmoid",
    "hard_sigmoid_keras2_relu",
    "linear_activation",
    "go_backwards_2layers",
    "initial_state_2layers",
    "rank1",
    "3layers_mixed",
    "rank3_1channel",
]
