"""Property-based forward parity: random valid specs over every option of the spec, each run through every
available implementation in float64 and float32 and compared with the float64 reference under the tolerance
table (``forward``) -- nothing loosened.

Generated: 1-2 layers of spatial rank 1-3; kernel sizes 1-4 (even ones included); strides or dilation 1-2
(never both, the spec forbids it); padding same/valid; bias on/off; peepholes none/channel/full; every
activation and recurrent activation; go_backwards; return_sequences; initial states; B, T in 1-3. Frame sizes
are drawn backwards from the last layer's output size (1-3 per axis), so every spec is valid and 'valid'
padding producing a 1x1 output, 1x1 frames and kernels larger than the frame under 'same' come up often;
the explicit ``@example`` cases pin those edge shapes regardless of the draw.

Budget: ``CONVLSTM_HYPOTHESIS_EXAMPLES`` (default 40 per framework, plus the explicit examples), or
``HYPOTHESIS_PROFILE=nightly`` (200). Examples are derandomized (the same cases every run). One runner is built
per example and dtype (a new shape means a new jit trace anyway). The number of cases tried per framework is
printed in the test summary and written to ``reports/parity/properties-<KERAS_BACKEND>.json``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
import pytest

from implementations import reference
from implementations.spec import ACTIVATIONS, PEEPHOLES, RECURRENT_ACTIVATIONS, LayerSpec, StackSpec
from implementations.tolerances import compare, tolerance
from implementations.weights import random_weights

from .conftest import FRAMEWORKS, SUMMARY, framework_label, record, runner_class, write_json_report

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "default")
EXAMPLES = int(os.environ.get("CONVLSTM_HYPOTHESIS_EXAMPLES", 200 if PROFILE == "nightly" else 40))
#: Keras runs a quarter of them: ``make test`` reruns it on three backends, and on JAX each new shape compiles.
KERAS_EXAMPLES = int(os.environ.get("CONVLSTM_HYPOTHESIS_KERAS_EXAMPLES", max(EXAMPLES // 4, 1)))
TRIED: dict[str, dict[str, int]] = {}


@dataclasses.dataclass(frozen=True)
class PropCase:
    spec: StackSpec
    input_shape: tuple[int, ...]
    go_backwards: bool
    return_sequences: bool
    initial_state: bool
    seed: int

    def __repr__(self) -> str:  # what hypothesis prints for a falsifying example
        layers = ", ".join(
            f"L(F={la.filters}, k={la.kernel_size}, s={la.strides}, d={la.dilation_rate}, {la.padding}, "
            f"bias={la.use_bias}, peep={la.peephole}, {la.activation}/{la.recurrent_activation})"
            for la in self.spec.layers
        )
        return (f"PropCase(C={self.spec.input_channels}, [{layers}], x={self.input_shape}, back={self.go_backwards}, "
                f"seq={self.return_sequences}, init={self.initial_state}, seed={self.seed})")

    @property
    def spatial(self) -> tuple[int, ...]:
        return self.input_shape[2:-1]


def _input_range(out: int, k: int, s: int, d: int, padding: str) -> tuple[int, int]:
    """The input sizes n giving output size ``out`` (TF/XLA rule, see spec.conv_output_size)."""
    if padding == "same":
        return (out - 1) * s + 1, out * s
    lo = (out - 1) * s + (k - 1) * d + 1
    return lo, lo + s - 1


@st.composite
def prop_cases(draw: Any) -> PropCase:
    rank = draw(st.sampled_from([2, 2, 1, 3]))
    n_layers = draw(st.integers(1, 2))
    layers = []
    for _ in range(n_layers):
        kmax = 4 if rank < 3 else 2
        kernel = tuple(draw(st.integers(1, kmax)) for _ in range(rank))
        mode = draw(st.sampled_from(["plain", "strides", "dilation"]))
        strides = tuple(draw(st.integers(1, 2)) for _ in range(rank)) if mode == "strides" else 1
        dilation = tuple(draw(st.integers(1, 2)) for _ in range(rank)) if mode == "dilation" else 1
        layers.append(LayerSpec(
            filters=draw(st.integers(1, 3)),
            kernel_size=kernel,
            strides=strides,
            padding=draw(st.sampled_from(["same", "valid"])),
            dilation_rate=dilation,
            use_bias=draw(st.booleans()),
            peephole=draw(st.sampled_from(PEEPHOLES)),
            activation=draw(st.sampled_from(ACTIVATIONS)),
            recurrent_activation=draw(st.sampled_from(RECURRENT_ACTIVATIONS)),
        ))
    # Frame size drawn backwards from the last output (1-3 per axis): always valid, often minimal.
    sizes = [draw(st.integers(1, 3 if rank < 3 else 2)) for _ in range(rank)]
    for layer in reversed(layers):
        sizes = [draw(st.integers(*_input_range(o, k, s, d, layer.padding)))
                 for o, k, s, d in zip(sizes, layer.kernel_size, layer.strides, layer.dilation_rate)]
    spec = StackSpec(draw(st.integers(1, 3)), tuple(layers))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 3)), *sizes, spec.input_channels)
    return PropCase(spec, shape, draw(st.booleans()), draw(st.booleans()), draw(st.booleans()),
                    draw(st.integers(0, 2**16)))


L = LayerSpec
EDGE_CASES = [
    # T=1, B=1, 1x1 frame, a 3x4 kernel larger than the frame under 'same' (rank 2)
    PropCase(StackSpec(1, (L(2, (3, 4), peephole="full"),)), (1, 1, 1, 1, 1), False, True, False, 1),
    # 'valid' producing a 1x1 output, then a second layer on that 1x1 state; initial states; backwards
    PropCase(StackSpec(2, (L(3, (3, 2), padding="valid", peephole="channel"), L(2, (2, 2), activation="relu"))),
             (2, 3, 3, 2, 2), True, False, True, 2),
    # strided 'valid' down to 1x1 with an even kernel, hard sigmoids, linear, no bias
    PropCase(StackSpec(2, (L(2, (2, 4), strides=2, padding="valid", use_bias=False, activation="linear",
                                 recurrent_activation="hard_sigmoid_keras2"),)), (1, 2, 3, 5, 2), False, True, True, 3),
    # dilation 2 under 'same' on a frame smaller than the dilated kernel; rank 1 and rank 3
    PropCase(StackSpec(1, (L(2, (3,), dilation_rate=2, recurrent_activation="hard_sigmoid"),)), (3, 2, 2, 1), True,
             True, False, 4),
    PropCase(StackSpec(1, (L(1, (2, 1, 2), padding="valid", peephole="full"),)), (1, 1, 2, 1, 2, 1), False, True,
             True, 5),
]


def _inputs(case: PropCase, dtype: str) -> tuple[np.ndarray, list | None]:
    rng = np.random.default_rng(case.seed)
    x = rng.standard_normal(case.input_shape)
    state = None
    if case.initial_state:
        b = case.input_shape[0]
        state = [tuple(rng.standard_normal((b, *s, la.filters)) for _ in range(2))
                 for s, la in zip(case.spec.state_spatials(case.spatial), case.spec.layers)]
    if dtype == "float64":
        return x, state
    return x.astype(dtype), None if state is None else [tuple(a.astype(dtype) for a in p) for p in state]


def _check(framework: str, case: PropCase) -> None:
    runner_cls = runner_class(framework)
    weights64 = random_weights(case.spec, seed=case.seed, dtype="float64", input_spatial=case.spatial)
    x, state = _inputs(case, "float64")
    kwargs = {"go_backwards": case.go_backwards, "return_sequences": case.return_sequences}
    expected = reference.forward(weights64, x, initial_state=state, **kwargs).tensors()
    counts = TRIED.setdefault(framework_label(framework), {"examples": 0, "comparisons": 0})
    counts["examples"] += 1
    failures = []
    for dtype in ("float64", "float32"):
        runner = runner_cls(weights64.astype(dtype), dtype=dtype)
        xd, sd = _inputs(case, dtype)
        actual = runner.forward(xd, initial_state=sd, **kwargs).tensors()
        tol = tolerance("forward", dtype)
        assert sorted(actual) == sorted(expected)
        comps = [compare(name, actual[name], expected[name], tol) for name in expected]
        for name, arr in actual.items():
            assert arr.dtype == np.dtype(dtype), f"{name} came back as {arr.dtype}, not {dtype}"
        counts["comparisons"] += len(comps)
        if any(not c.passed for c in comps):
            record("property", framework, "reference", repr(case), dtype, comps, tol)
            failures += [f"{dtype} {c.describe()}" for c in comps if not c.passed]
    assert not failures, f"{framework_label(framework)} vs reference, {case!r}:\n  " + "\n  ".join(failures)


def _with_examples(fn: Any) -> Any:
    for case in EDGE_CASES:
        fn = example(case=case)(fn)
    return fn


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_random_specs_match_the_reference(framework):
    runner_class(framework)  # skip early when the framework is missing

    @settings(max_examples=KERAS_EXAMPLES if framework == "keras" else EXAMPLES, derandomize=True, deadline=None,
              database=None, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(case=prop_cases())
    @_with_examples
    def check(case: PropCase) -> None:
        _check(framework, case)

    check()
    tried = TRIED[framework_label(framework)]
    budget = KERAS_EXAMPLES if framework == "keras" else EXAMPLES
    assert tried["examples"] >= len(EDGE_CASES) + min(budget, 10), f"only {tried} cases ran"


def test_strategy_covers_the_edge_shapes():
    """The generator itself reaches the edge shapes (not only the explicit examples)."""
    seen: set[str] = set()

    @settings(max_examples=max(EXAMPLES, 20) * 5, derandomize=True, database=None, deadline=None)
    @given(case=prop_cases())
    def collect(case: PropCase) -> None:
        spec, shape = case.spec, case.input_shape
        out = spec.state_spatials(case.spatial)
        if shape[1] == 1:
            seen.add("T=1")
        if shape[0] == 1:
            seen.add("B=1")
        if all(n == 1 for n in case.spatial):
            seen.add("1x1 frame")
        first = spec.layers[0]
        if first.padding == "same" and any(k > n for k, n in zip(first.kernel_size, case.spatial)):
            seen.add("kernel > frame under same")
        if any(la.padding == "valid" and all(o == 1 for o in s) for la, s in zip(spec.layers, out)):
            seen.add("valid -> 1x1")
        if any(k % 2 == 0 for la in spec.layers for k in la.kernel_size):
            seen.add("even kernel")
        seen.update(f"peephole={la.peephole}" for la in spec.layers)
        seen.update(f"rank={spec.rank}" for _ in [0])

    collect()
    want = {"T=1", "B=1", "1x1 frame", "kernel > frame under same", "valid -> 1x1", "even kernel",
            "peephole=None", "peephole=channel", "peephole=full", "rank=1", "rank=2", "rank=3"}
    assert want <= seen, f"never generated: {sorted(want - seen)}"


@pytest.fixture(scope="module", autouse=True)
def _report_counts():
    yield
    if TRIED:
        SUMMARY.append(f"hypothesis parity (profile {PROFILE}, max {EXAMPLES} generated ({KERAS_EXAMPLES} for keras) + "
                       f"{len(EDGE_CASES)} explicit examples per framework): {TRIED}")
        write_json_report("properties", {"profile": PROFILE, "max_examples": EXAMPLES,
                                         "keras_max_examples": KERAS_EXAMPLES,
                                         "explicit_examples": len(EDGE_CASES), "tried": TRIED})
