"""The JAX core's two paths for the input convolution's gradient give the same numbers.

On a CPU the JAX runner defaults to ``backward_chunk="auto"`` = ``jax_impl.CPU_BACKWARD_CHUNK`` frames per
gradient convolution of each layer's hoisted input convolution (a ``jax.custom_vjp``; XLA's CPU gradient
convolutions run faster on a few images at a time), and that path is what test_gradients checks against finite
differences; the test cases have T*B of 2-8 frames, so most are split in two and the two with B = 1 not at all. Here
``backward_chunk=1`` (one frame per chunk, so every case is split) is checked on every gradient case against the
float64 reference's finite differences; ``backward_chunk=None`` (plain ``lax`` autodiff, the default on GPUs) is
checked element-wise against it on three cases that cover every branch of the loop (peepholes with a 'valid'
layer, an initial state, go_backwards): each JAX runner costs a compile.
"""

from __future__ import annotations

import numpy as np
import pytest

from implementations.tolerances import compare, tolerance

from .cases import CASES_BY_ID, GRAD_CASE_IDS
from .test_gradients import finite_differences

GRAD_CASES = [CASES_BY_ID[i] for i in GRAD_CASE_IDS]
PLAIN_CASE_IDS = ["peephole_full_valid", "initial_state_2layers", "go_backwards_2layers"]


def _jax_impl():
    pytest.importorskip("jax", reason="jax is not installed")
    pytest.importorskip("flax", reason="flax is not installed")
    from implementations import jax_impl

    return jax_impl


_GRADS: dict[tuple[str, int | None], object] = {}


def _grads(case, chunk):
    """The JAX runner's float64 loss and gradients with ``backward_chunk=chunk`` (cached: a compile each)."""
    if (case.id, chunk) in _GRADS:
        return _GRADS[case.id, chunk]
    runner = _jax_impl().Runner(case.weights("float64"), dtype="float64", device="cpu", backward_chunk=chunk)
    assert runner.backward_chunk == chunk
    kwargs = case.run_kwargs("float64")
    _GRADS[case.id, chunk] = runner.value_and_grad(case.inputs("float64"), case.probe(), **kwargs)
    return _GRADS[case.id, chunk]


def _check(what: str, case_id: str, actual: dict, expected: dict, quantity: str) -> None:
    tol = tolerance(quantity, "float64")
    assert sorted(actual) == sorted(expected), f"{case_id}: {what} keys {sorted(actual)} != {sorted(expected)}"
    bad = [c.describe() for c in (compare(k, actual[k], expected[k], tol) for k in expected) if not c.passed]
    assert not bad, f"{case_id}: {what} ({tol.reason}):\n  " + "\n  ".join(bad)


@pytest.mark.parametrize("case", GRAD_CASES, ids=lambda c: c.id)
def test_fully_chunked_gradients_match_finite_differences(case):
    ref_loss, directions, fd = finite_differences(case)
    result = _grads(case, 1)
    actual = {"loss": np.array(result.loss)} | {k: np.array(np.sum(result.grads[k] * d)) for k, d in directions.items()}
    expected = {"loss": np.array(ref_loss)} | {k: np.array(v) for k, v in fd.items()}
    _check("backward_chunk=1: gradient . direction vs finite difference", case.id, actual, expected, "grad_fd")


@pytest.mark.parametrize("case_id", PLAIN_CASE_IDS)
def test_plain_autodiff_matches_fully_chunked(case_id):
    case = CASES_BY_ID[case_id]
    chunked, plain = _grads(case, 1), _grads(case, None)
    _check("backward_chunk=None vs 1, loss", case_id, {"loss": np.array(plain.loss)},
           {"loss": np.array(chunked.loss)}, "grad")
    _check("backward_chunk=None vs 1, element-wise", case_id, plain.grads, chunked.grads, "grad")


def test_backward_chunk_setting_is_checked_and_resolved():
    jax_impl = _jax_impl()
    assert jax_impl.resolve_backward_chunk("auto", "cpu") == jax_impl.CPU_BACKWARD_CHUNK
    assert jax_impl.resolve_backward_chunk("auto", "gpu") is None
    assert jax_impl.resolve_backward_chunk(None) is None
    assert jax_impl.resolve_backward_chunk(3) == 3
    # "auto" on a CPU: 4 frames a chunk, at most 16 chunks (larger chunks for long inputs); ints are taken as given.
    assert (jax_impl.CPU_BACKWARD_CHUNK, jax_impl.CPU_MAX_BACKWARD_CHUNKS) == (4, 16)
    for frames, want in ((1, 4), (40, 4), (64, 4), (65, 5), (160, 10), (1000, 63)):
        assert jax_impl.resolve_backward_chunk("auto", "cpu", frames=frames) == want, frames
    assert jax_impl.resolve_backward_chunk("auto", "gpu", frames=160) is None
    assert jax_impl.resolve_backward_chunk(3, "cpu", frames=1000) == 3
    for bad in (0, -2, True, 2.0, "4", "full"):
        with pytest.raises(jax_impl.api.InputError, match="backward_chunk: expected"):
            jax_impl.resolve_backward_chunk(bad)
    weights = CASES_BY_ID[GRAD_CASE_IDS[0]].weights("float32")
    with pytest.raises(jax_impl.api.InputError, match="found 0"):
        jax_impl.Runner(weights, device="cpu", backward_chunk=0)


@pytest.mark.parametrize(
    "setting, frames, chunks", [("auto", 32, 8), ("auto", 80, 16), ("auto", 84, 14), (16, 80, 5), (None, 80, None)]
)
def test_backward_chunk_count_in_the_gradient_program(setting, frames, chunks):
    """The chunk size reaches the input convolution's gradient: count the convolutions of the gradient's jaxpr.

    One layer from a zero state. The scan body appears once in a jaxpr (unrolling happens when it is lowered): 1
    input conv and 1 recurrent conv forward, 2 recurrent ones in the backward body, and for the input conv's gradient
    either 1 (plain autodiff: the kernel gradient; the input needs none) or 3 per chunk (the chunk's ``jax.vjp``:
    its primal conv, which XLA drops as unused, the input gradient and the kernel gradient)."""
    jax_impl = _jax_impl()
    import jax
    import jax.numpy as jnp

    from implementations.spec import LayerSpec, StackSpec
    from implementations.weights import init_weights

    def count(jaxpr) -> int:
        n = 0
        for eqn in jaxpr.eqns:
            n += eqn.primitive.name == "conv_general_dilated"
            for value in eqn.params.values():
                inner = getattr(value, "jaxpr", value)
                if hasattr(inner, "eqns"):
                    n += count(inner)
        return n

    spec = StackSpec(input_channels=1, layers=(LayerSpec(filters=2),))
    x = jnp.ones((frames // 4, 4, 4, 4, 1), jnp.float32)  # B = frames / 4, T = 4: T*B = frames
    params = jax_impl.params_from_weights(init_weights(spec, seed=0), jnp.float32)

    def loss(p):
        return jnp.sum(jax_impl.convlstm_apply(spec, p, x, backward_chunk=setting)[0] ** 2)

    if setting == "auto" and jax.default_backend() != "cpu":
        chunks = None  # "auto" resolves against the default backend at trace time: plain autodiff off the CPU
    n_conv = count(jax.make_jaxpr(jax.grad(loss))(params).jaxpr)
    assert n_conv == 4 + (1 if chunks is None else 3 * chunks), f"{n_conv} convolutions for {chunks} chunk(s)"
