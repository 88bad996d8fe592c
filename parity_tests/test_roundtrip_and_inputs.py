"""Per framework: save -> load -> build -> export is bit-exact; bad runtime input raises InputError."""

from __future__ import annotations

import numpy as np
import pytest

from implementations import weights as wf
from implementations.api import InputError

from .cases import CASES_BY_ID
from .conftest import FRAMEWORKS, get_runner

ROUNDTRIP_CASES = ["peephole_full_valid", "no_bias", "rank3", "2layers_even_k2x4"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case_id", ROUNDTRIP_CASES)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_save_load_export_is_bit_exact(tmp_path, framework, case_id, dtype):
    case = CASES_BY_ID[case_id]
    original = case.weights(dtype)
    notes = [{"note": i} for i in range(len(case.spec.layers))]
    original.meta_extra = {"top": {"trained_on": "nothing"}, "layers": notes}
    wf.save(tmp_path / "a.npz", original)
    loaded = wf.load(tmp_path / "a.npz")
    exported = get_runner(framework, case.id + "-rt", loaded, dtype).export_weights()
    assert exported.spec == original.spec
    assert sorted(exported.arrays) == sorted(original.arrays)
    for key, arr in original.arrays.items():
        got = exported.arrays[key]
        assert got.dtype == arr.dtype and got.shape == arr.shape, f"{framework}: {key} {got.dtype}{got.shape}"
        assert np.array_equal(got, arr), f"{framework} / {case_id} / {dtype}: {key} differs after export"
    wf.save(tmp_path / "b.npz", exported)
    again = wf.load(tmp_path / "b.npz")
    assert again.meta() == original.meta()


BAD_INPUTS = {
    "rank": (lambda x: x[0], r"input: expected rank 5"),
    "channels": (lambda x: np.concatenate([x, x], -1), r"input: expected 2 channels \(last axis\), found 4"),
    "int dtype": (lambda x: x.astype(np.int64), r"input: expected a floating dtype"),
    "bool dtype": (lambda x: x > 0, r"input: expected a floating dtype"),
    "not an array": (lambda x: x.tolist(), r"input: expected a NumPy array, found list"),
    "too small for valid": (lambda x: x[:, :, :2, :2], r"input: layer 0: input spatial shape \(2, 2\) is too small"),
    "full peephole size": (lambda x: x[:, :, :5], r"'full' peepholes for a \(4, 5\) state"),
    "empty time": (lambda x: x[:, :0], r"batch and time must be >= 1"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_bad_runtime_input_raises_clear_error(framework, name):
    case = CASES_BY_ID["peephole_full_valid"]
    runner = get_runner(framework, case.id, case.weights("float64"), "float64")
    fn, pattern = BAD_INPUTS[name]
    with pytest.raises(InputError, match=pattern):
        runner.forward(fn(case.inputs()))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_bad_initial_state_raises_clear_error(framework):
    case = CASES_BY_ID["initial_state_2layers"]
    runner = get_runner(framework, case.id, case.weights("float64"), "float64")
    state = case.state0()
    with pytest.raises(InputError, match=r"initial_state: expected one \(h, c\) pair per layer \(2\), found 1"):
        runner.forward(case.inputs(), initial_state=state[:1])
    bad = [state[0], (state[1][0][:, :1], state[1][1])]
    with pytest.raises(InputError, match=r"initial_state\[1\].h: expected shape \(2, 3, 3, 2\), found \(2, 1, 3, 2\)"):
        runner.forward(case.inputs(), initial_state=bad)


def test_float16_input_is_accepted_and_cast():
    case = CASES_BY_ID["1layer_k3_same"]
    from implementations import reference

    x16 = case.inputs().astype(np.float16)
    out = reference.forward(case.weights(), x16)
    np.testing.assert_allclose(out.outputs, reference.forward(case.weights(), x16.astype(np.float64)).outputs)
