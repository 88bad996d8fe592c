"""Numerical stability: long sequences and saturating inputs, every framework against the float64 reference.

* A smooth tiny stack (tanh/sigmoid, channel peepholes) over T = 200 (and T = 1000, marked ``slow``) stays finite
  and within the tolerance table's ``forward`` bounds in float64 *and* float32: the LSTM's gates keep the state
  bounded and errors damp out, so no long-sequence tolerance is needed.
* A kinked stack (relu activation, then hard_sigmoid gates) over T = 300 (and T = 1000, ``slow``): float64 stays
  within the table; in float32 the error jumps once (at step ~267 for this seed) from ~3e-6 to ~1e-4 and then
  stays flat. The jump is a regime change at a relu/hard-sigmoid kink: running the float64 reference on the
  float32-rounded weights and inputs alone already moves the outputs by 1.3e-5 (> the table's 1e-5), so it
  is the problem's conditioning at a kink, not error growth per step, and no implementation in float32 could
  meet the table there. We therefore do not add a tolerance for it (a bound would only restate this seed);
  the test asserts float64 parity and float32 finiteness, and records the float32 curve.
* Inputs of +-1e4 saturate every gate: outputs equal the reference's saturated values within the table, and
  nothing becomes NaN.

Every sequence is a prefix of the same T = 1000 input, so a shorter run is exactly the start of the long one
(outputs are causal). The shorter lengths keep what each test proves (see the comments at ``SHORT``); the
T = 1000 runs (minutes and gigabytes under Keras on JAX, which builds the loop step by step) carry the ``slow``
marker: ``make test-slow`` runs them, ``make test`` does not.

The float32 error growth (max-abs error over the first T steps, T = 1, 10, 100 and the run's length) is printed in
the test summary and written to ``reports/parity/stability-<KERAS_BACKEND>.json``. Long sequences run with JAX's
scan not unrolled (``unroll=1``) and Keras without tracing (``jit=False``): both implementations unroll or trace
per step, and a 1000-step trace takes minutes to compile; the arithmetic is the same.
"""

from __future__ import annotations

import numpy as np
import pytest

from implementations import reference
from implementations.spec import LayerSpec, StackSpec
from implementations.tolerances import tolerance
from implementations.weights import random_weights

from .conftest import FRAMEWORKS, SUMMARY, assert_all_close, framework_label, get_runner, write_json_report

T_LONG = 1000
#: The lengths run by default, and what each test would still detect at that length.
SHORT = {
    # Undamped error accumulation: one step's float32 error is 5e-8 to 9e-8 here (T = 1), so an error that added
    # up step after step instead of damping out would exceed the table's 1e-5 within 110-180 steps; the measured
    # float32 error has plateaued by then (~4e-7 at T = 100 and 200, ~7e-7 at T = 1000).
    "smooth": 200,
    # This seed's relu/hard-sigmoid regime change happens at step ~267 (float32 rounding of the data alone moves
    # the reference by 1.3e-5 from step 268 on, and the float32 errors of torch, JAX and Keras on TF jump there
    # from ~3e-6 to ~2e-5): 300 steps carry float64 parity and float32 finiteness through it, and the float32
    # bound up to T = 100 is checked as before.
    "kinked": 300,
    # Rounding the data to float32 moves the reference by 1.3e-5 from step 268 on (7e-7 before), the same as
    # at T = 1000: at 300 steps the justification below is already true.
    "conditioning": 300,
}
#: Where the float32 error curve is read (plus the run's own length).
CHECKPOINTS = (1, 10, 100)
SPECS = {
    "smooth": StackSpec(2, (LayerSpec(3, (3, 3), peephole="channel"),)),
    "kinked": StackSpec(2, (LayerSpec(3, (3, 3), activation="relu"),
                            LayerSpec(2, (3, 3), recurrent_activation="hard_sigmoid"))),
}
#: framework label -> stack name -> {T: float32 max-abs error over the first T steps}.
CURVES: dict[str, dict[str, dict[int, float]]] = {}
_REF: dict[tuple[str, int], dict[str, np.ndarray]] = {}


def lengths(test: str) -> list[object]:
    """The ``steps`` parameters of a test: its default length, and T = 1000 marked ``slow``."""
    return [SHORT[test], pytest.param(T_LONG, marks=pytest.mark.slow)]


def long_options(framework: str) -> dict[str, object]:
    return {"jax": {"unroll": 1}, "keras": {"jit": False}}.get(framework, {})


def long_input(steps: int = T_LONG) -> np.ndarray:
    """The first ``steps`` frames of one fixed T = 1000 sequence."""
    return np.random.default_rng(1).standard_normal((1, T_LONG, 4, 4, 2))[:, :steps].copy()


def reference_long(name: str, steps: int = T_LONG) -> dict[str, np.ndarray]:
    if (name, steps) not in _REF:
        _REF[name, steps] = reference.forward(random_weights(SPECS[name], seed=0), long_input(steps)).tensors()
    return _REF[name, steps]


def run_long(framework: str, name: str, dtype: str, steps: int = T_LONG) -> dict[str, np.ndarray]:
    weights = random_weights(SPECS[name], seed=0).astype(dtype)
    runner = get_runner(framework, f"long-{name}", weights, dtype, **long_options(framework))
    return runner.forward(long_input(steps).astype(dtype)).tensors()


def growth(actual: np.ndarray, expected: np.ndarray) -> dict[int, float]:
    """Max-abs error over the first T steps, T in CHECKPOINTS and the run's length (outputs are causal: the prefix
    of a run is the run of the prefix)."""
    diff = np.abs(actual.astype(np.float64) - expected)
    per_step = diff.reshape(actual.shape[0], actual.shape[1], -1).max(axis=(0, 2))
    return {t: float(per_step[:t].max()) for t in (*CHECKPOINTS, actual.shape[1]) if t <= actual.shape[1]}


def record_curve(framework: str, name: str, curve: dict[int, float]) -> None:
    CURVES.setdefault(framework_label(framework), {}).setdefault(name, {}).update(curve)


@pytest.mark.parametrize("steps", lengths("smooth"))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_smooth_stack_over_long_sequences_stays_within_the_table(framework, dtype, steps):
    actual = run_long(framework, "smooth", dtype, steps)
    expected = reference_long("smooth", steps)
    assert all(np.isfinite(v).all() for v in actual.values())
    if dtype == "float32":
        record_curve(framework, "smooth", growth(actual["outputs"], expected["outputs"]))
    assert_all_close(f"T={steps}", framework, "long-smooth", actual, expected, tolerance("forward", dtype),
                     kind="stability", dtype=dtype)


@pytest.mark.parametrize("steps", lengths("kinked"))
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_kinked_stack_over_long_sequences(framework, steps):
    expected = reference_long("kinked", steps)
    assert_all_close(f"T={steps}", framework, "long-kinked", run_long(framework, "kinked", "float64", steps),
                     expected, tolerance("forward", "float64"), kind="stability", dtype="float64")
    actual32 = run_long(framework, "kinked", "float32", steps)
    bad = [k for k, v in actual32.items() if not np.isfinite(v).all()]
    assert not bad, f"{framework}: float32 over {steps} steps produced NaN/Inf in {bad}"
    curve = growth(actual32["outputs"], expected["outputs"])
    record_curve(framework, "kinked", curve)
    # Up to T=100 (before the kink crossing) float32 is still within the table.
    assert curve[100] <= tolerance("forward", "float32").atol, f"{framework}: {curve}"


@pytest.mark.parametrize("steps", lengths("conditioning"))
def test_kinked_float32_excess_is_conditioning_not_arithmetic(steps):
    """The justification above, checked: float32 rounding of the data alone exceeds the table past the kink."""
    weights = random_weights(SPECS["kinked"], seed=0)
    x = long_input(steps)
    rounded = reference.forward(weights.astype("float32").astype("float64"), x.astype("float32").astype("float64"))
    shift = float(np.max(np.abs(rounded.outputs - reference_long("kinked", steps)["outputs"])))
    assert shift > tolerance("forward", "float32").atol, f"rounding the data moves the outputs by only {shift:.2e}"


SATURATING = {
    "sigmoid": StackSpec(2, (LayerSpec(3, (3, 3), peephole="channel"), LayerSpec(2, (2, 2)))),
    "hard_sigmoid": StackSpec(2, (LayerSpec(3, (3, 3), recurrent_activation="hard_sigmoid", peephole="full"),)),
    "hard_sigmoid_keras2": StackSpec(2, (LayerSpec(3, (2, 3), recurrent_activation="hard_sigmoid_keras2"),)),
}


@pytest.mark.parametrize("name", list(SATURATING))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_saturating_inputs_give_the_saturated_reference_values(framework, dtype, name):
    spec = SATURATING[name]
    rng = np.random.default_rng(2)
    x = 1e4 * np.sign(rng.standard_normal((2, 5, 5, 5, 2)))
    weights = random_weights(spec, seed=3, input_spatial=(5, 5))
    expected = reference.forward(weights, x).tensors()
    assert all(np.isfinite(v).all() for v in expected.values())
    runner = get_runner(framework, f"saturating-{name}", weights.astype(dtype), dtype)
    actual = runner.forward(x.astype(dtype)).tensors()
    assert not any(np.isnan(v).any() for v in actual.values()), f"{framework}: NaN from saturating inputs"
    assert_all_close("inputs +-1e4", framework, f"saturating-{name}", actual, expected, tolerance("forward", dtype),
                     kind="stability", dtype=dtype)
    # saturated for real: the first layer's gates sit at exactly 0/1 and tanh(zc) at +-1, so c holds whole
    # numbers (except where the +-1e4 terms of a pre-activation happen to cancel)
    c0 = expected["c/0"]
    assert np.mean(np.abs(c0 - np.round(c0)) < 1e-12) > 0.95 and np.max(np.abs(c0)) >= 2, "the gates did not saturate"


@pytest.fixture(scope="module", autouse=True)
def _report_growth():
    yield
    if CURVES:
        # [[T, error], ...] in increasing T (the lengths run depend on whether the slow tests ran)
        curves = {fw: {spec: sorted(map(list, curve.items())) for spec, curve in specs.items()}
                  for fw, specs in CURVES.items()}
        lines = [f"{fw} {spec}: " + ", ".join(f"T={t} {e:.2e}" for t, e in curve)
                 for fw, specs in curves.items() for spec, curve in specs.items()]
        SUMMARY.append("float32 max-abs error vs the float64 reference over the first T steps:\n  "
                       + "\n  ".join(lines))
        write_json_report("stability", {"float32_max_abs_error": curves,
                                        "f32_table_atol": tolerance("forward", "float32").atol})
