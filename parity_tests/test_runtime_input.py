"""Bad and unusual runtime input, for every framework (``test_roundtrip_and_inputs.py`` and
``test_forward_parity.py`` already cover wrong rank/channels, int64/bool, lists, a 'valid' frame too small for
one layer, 'full' peephole sizes, T=0, bad initial-state counts/shapes, one Fortran and one strided float64
input, and NaN at step 1 of a float64 forward pass).

Behaviour documented and tested here:

* Rejected with :class:`InputError` before any framework sees the data: complex, unsigned/signed int, object,
  string and datetime dtypes; masked arrays (their mask would be silently ignored); B = 0; a frame axis of size
  0; a frame that a later layer's strides/'valid' reduce to nothing; initial states of a non-float dtype.
* Accepted and bit-identical to the C-contiguous float result: Fortran-ordered, reversed (negative strides),
  transposed-back and sliced views, read-only and big-endian arrays, in float32 and float64 runners, for the
  input and for initial states; float16 input equals casting it to the runner dtype first.
* NaN/Inf: **propagate by default** in every runner (they are values like any other: no check, no cost). The
  NaN reaches exactly the outputs that depend on it -- later steps of the same sample in processing order
  (earlier frames with ``go_backwards``), never another sample. An Inf input saturates tanh/sigmoid and may
  produce NaN (inf - inf) downstream; it never leaks across samples either. Callers who want a hard error use
  ``api.check_input(..., check_finite=True)``, which raises InputError (the runners' ``forward`` does not offer
  the option).
"""

from __future__ import annotations

import numpy as np
import pytest

from implementations import api, reference
from implementations.api import InputError
from implementations.spec import LayerSpec, StackSpec
from implementations.weights import random_weights

from .cases import CASES_BY_ID
from .conftest import FRAMEWORKS, get_runner

DTYPES = ["float32", "float64"]
CASE = CASES_BY_ID["initial_state_2layers"]  # 2 layers, second strided: (2, 3, 6, 6, 2) -> states 6x6 and 3x3


def runner_for(framework: str, dtype: str, case=CASE):
    return get_runner(framework, case.id, case.weights(dtype), dtype)


BAD_DTYPES = {
    "complex128": lambda x: x.astype(np.complex128),
    "complex64": lambda x: x.astype(np.complex64),
    "uint8": lambda x: (x > 0).astype(np.uint8),
    "int32": lambda x: x.astype(np.int32),
    "object": lambda x: x.astype(object),
    "str": lambda x: x.astype(str),
    "datetime64": lambda x: np.zeros(x.shape, "datetime64[s]"),
}


@pytest.mark.parametrize("name", list(BAD_DTYPES))
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_non_float_input_is_refused(framework, name):
    runner = runner_for(framework, "float64")
    with pytest.raises(InputError, match=r"input: expected a floating dtype \(float16/32/64\), found"):
        runner.forward(BAD_DTYPES[name](CASE.inputs()))


BAD_SHAPES = {
    "zero batch": (lambda x: x[:0], r"input: batch and time must be >= 1, found shape \(0, 3, 6, 6, 2\)"),
    "zero-size frame axis": (lambda x: x[:, :, :0], r"input: layer 0: input spatial shape \(0, 6\) is too small"),
    "0-d": (lambda x: np.ones(()), r"input: expected rank 5 .* found shape \(\)"),
    "rank 6": (lambda x: x[..., None], r"input: expected rank 5"),
}


@pytest.mark.parametrize("name", list(BAD_SHAPES))
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_degenerate_shapes_are_refused(framework, name):
    edit, pattern = BAD_SHAPES[name]
    with pytest.raises(InputError, match=pattern):
        runner_for(framework, "float64").forward(edit(CASE.inputs()))


STRIDED_AWAY = StackSpec(2, (LayerSpec(2, (3, 3), strides=2, padding="valid"), LayerSpec(2, (3, 3), padding="valid")))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_frame_that_strides_reduce_to_nothing_is_refused(framework):
    """5x5 -> 'valid' 3x3 stride 2 -> 2x2 -> 'valid' 3x3 -> 0x0: refused, naming the layer and the sizes."""
    weights = random_weights(STRIDED_AWAY, seed=0)
    runner = get_runner(framework, "strided-away", weights, "float64")
    x = np.zeros((1, 2, 5, 5, 2))
    with pytest.raises(InputError, match=r"input: layer 1: input spatial shape \(2, 2\) is too small .* "
                                         r"the output would be \(0, 0\)"):
        runner.forward(x)
    assert runner.forward(np.zeros((1, 2, 7, 7, 2))).outputs.shape == (1, 2, 1, 1, 2)  # 7 -> 3 -> 1: fine


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_masked_array_is_refused(framework):
    x = np.ma.masked_array(CASE.inputs(), mask=CASE.inputs() > 2)
    with pytest.raises(InputError, match=r"input: expected a plain NumPy array, found a masked array"):
        runner_for(framework, "float64").forward(x)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_non_float_initial_state_is_refused(framework):
    runner = runner_for(framework, "float64")
    state = CASE.state0()
    for bad, found in ((state[1][1].astype(np.int64), "int64"), (state[1][1].astype(np.complex128), "complex128")):
        with pytest.raises(InputError, match=rf"initial_state\[1\].c: expected a floating dtype, found {found}"):
            runner.forward(CASE.inputs(), initial_state=[state[0], (state[1][0], bad)])


def _layouts(x: np.ndarray) -> dict[str, np.ndarray]:
    """The same values in memory layouts a caller may hand over."""
    reversed_view = np.ascontiguousarray(x[:, ::-1])[:, ::-1]
    transposed = np.ascontiguousarray(np.moveaxis(x, -1, 0))
    readonly = x.copy()
    readonly.flags.writeable = False
    wide = np.zeros(x.shape[:-1] + (3 * x.shape[-1],), x.dtype)
    wide[..., 1::3] = x
    return {
        "fortran": np.asfortranarray(x),
        "negative strides": reversed_view,
        "moved axis": np.moveaxis(transposed, 0, -1),
        "strided slice": wide[..., 1::3],
        "read-only": readonly,
        "big-endian": x.astype(x.dtype.newbyteorder(">")),
    }


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_any_memory_layout_gives_the_contiguous_result_exactly(framework, dtype):
    runner = runner_for(framework, dtype)
    x, state = CASE.inputs(dtype), CASE.state0(dtype)
    expected = runner.forward(x, initial_state=state).tensors()
    for name, xv in _layouts(x).items():
        assert not np.shares_memory(xv, x) or name == "read-only"
        for state_name, sv in (("contiguous", state), (name, [tuple(_layouts(a)[name] for a in p) for p in state])):
            got = runner.forward(xv, initial_state=sv).tensors()
            for key, want in expected.items():
                assert got[key].dtype == np.dtype(dtype)
                assert np.array_equal(got[key], want), f"{framework}/{dtype}: input {name}, state {state_name}: {key}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_float16_input_equals_casting_it_first(framework, dtype):
    runner = runner_for(framework, dtype)
    x16 = CASE.inputs().astype(np.float16)
    got = runner.forward(x16).outputs
    assert got.dtype == np.dtype(dtype)
    assert np.array_equal(got, runner.forward(x16.astype(dtype)).outputs)


@pytest.mark.parametrize("go_backwards", [False, True], ids=["forwards", "backwards"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_nan_input_propagates_to_exactly_its_dependents(framework, dtype, go_backwards):
    case = CASES_BY_ID["1layer_k3_same"]  # (2, 3, 6, 5, 2), one layer, 'same'
    runner = get_runner(framework, case.id, case.weights(dtype), dtype)
    x = case.inputs(dtype)
    x[0, 1, 2, 2, 0] = np.nan
    out = runner.forward(x, go_backwards=go_backwards).outputs
    ref = reference.forward(case.weights(), x.astype(np.float64), go_backwards=go_backwards).outputs
    assert np.array_equal(np.isnan(out), np.isnan(ref)), "NaN reached different outputs than in the reference"
    # processing order: forwards frame 1 is step 1; backwards (T=3) frame 1 is step 1 as well (frames 2, 1, 0)
    assert np.isnan(out[0, 1:]).any() and not np.isnan(out[0, :1]).any()
    assert np.isfinite(out[1]).all(), "a NaN in sample 0 reached sample 1"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_inf_input_and_nan_initial_state_stay_within_their_sample(framework):
    runner = runner_for(framework, "float64")
    x, state = CASE.inputs(), CASE.state0()
    x[1, 0, 3, 3, 1] = np.inf
    state[0] = (state[0][0], state[0][1].copy())
    state[0][1][0, 2, 2, 0] = np.nan
    got = runner.forward(x, initial_state=state).tensors()
    ref = reference.forward(CASE.weights(), x, initial_state=state).tensors()
    for key, want in ref.items():
        assert np.array_equal(np.isnan(got[key]), np.isnan(want)), f"{framework}: {key}: NaN pattern differs"
        assert np.array_equal(np.isinf(got[key]), np.isinf(want)), f"{framework}: {key}: Inf pattern differs"
        finite = np.isfinite(want)
        assert np.allclose(got[key][finite], want[finite], rtol=0, atol=1e-10), f"{framework}: {key}"
    assert np.isnan(got["outputs"][0]).any(), "the NaN initial state of sample 0 must reach its outputs"


def test_check_finite_raises_where_offered():
    weights = CASE.weights()
    x = CASE.inputs()
    for bad in (np.nan, np.inf, -np.inf):
        x2 = x.copy()
        x2[0, 0, 0, 0, 0] = bad
        with pytest.raises(InputError, match=r"input: expected finite values, found NaN/Inf"):
            api.check_input(weights, x2, "float64", check_finite=True)
        checked, _ = api.check_input(weights, x2, "float64")  # the default lets it through unchanged
        assert np.array_equal(checked, x2, equal_nan=True)
