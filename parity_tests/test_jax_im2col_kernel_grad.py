"""JAX on the CPU: kernel gradients of wide 3x3 convolutions as one matrix product give the same numbers.

With ``backward_chunk`` resolved to an int (the CPU default), ``jax_impl.conv_nd`` computes the kernel gradient of a
2-D 3x3 stride-1 convolution with >= ``IM2COL_MIN_IN_CHANNELS`` input and >= ``IM2COL_MIN_OUT_CHANNELS`` output
channels from stacked shifted views of its input and one ``dot_general`` per ``IM2COL_FRAMES`` frames (a
``jax.custom_vjp``; see the docstring of ``implementations.jax_impl.loop``). The parity grid's layers are too
narrow to take that path, so here: the convolution alone against ``lax`` autodiff in float64 (dilation, asymmetric
and 'valid' padding, frame counts that do not divide into chunks), float32 within its tolerance, the rule itself,
and a two-layer runner whose every convolution takes the path, element-wise against plain autodiff
(``backward_chunk=None``, itself checked against the reference's finite differences in test_jax_backward_chunk).
"""

from __future__ import annotations

import numpy as np
import pytest

from implementations.tolerances import compare, tolerance


def _jax():
    jax = pytest.importorskip("jax", reason="jax is not installed")
    pytest.importorskip("flax", reason="flax is not installed")
    from implementations import jax_impl

    return jax, jax_impl


def _conv_grads(jax_impl, jax, x, kernel, dilation, padding, im2col):
    import jax.numpy as jnp

    def loss(x, k):
        out = jax_impl.conv_nd(x, k, (1, 1), dilation, padding, "highest", None, im2col=im2col)
        return jnp.sum(jnp.sin(out))

    return jax.grad(loss, argnums=(0, 1))(x, kernel)


@pytest.mark.parametrize(
    "frames, channels, hw, dilation, padding",
    [
        (3, (16, 128), (7, 6), (1, 1), ((1, 1), (1, 1))),  # one chunk, 'same'
        (9, (16, 128), (6, 7), (2, 1), ((2, 0), (0, 3))),  # two chunks, the last of 1 frame; dilated, asymmetric
        (17, (20, 132), (5, 5), (1, 1), ((0, 0), (0, 0))),  # three chunks, 'valid'
    ],
)
def test_im2col_kernel_gradient_matches_autodiff_in_float64(frames, channels, hw, dilation, padding):
    jax, jax_impl = _jax()
    import jax.numpy as jnp

    rng = np.random.default_rng(frames)
    with jax.enable_x64(True):
        x = jnp.asarray(rng.standard_normal((frames, *hw, channels[0])))
        kernel = jnp.asarray(rng.standard_normal((3, 3, *channels)) * 0.1)
        assert jax_impl.im2col_pays(kernel.shape, (1, 1))
        got = _conv_grads(jax_impl, jax, x, kernel, dilation, padding, True)
        want = _conv_grads(jax_impl, jax, x, kernel, dilation, padding, False)
        tol = tolerance("grad", "float64")
        for name, a, b in zip(("input", "kernel"), got, want):
            assert a.dtype == b.dtype == jnp.float64
            c = compare(name, np.asarray(a), np.asarray(b), tol)
            assert c.passed, f"im2col vs autodiff ({tol.reason}): {c.describe()}"


def test_im2col_kernel_gradient_in_float32_and_bfloat16():
    """float32 against float64 autodiff; bfloat16 against XLA's own bfloat16 gradient (same inputs, both
    accumulated in float32, each rounded once to bfloat16)."""
    jax, jax_impl = _jax()
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    x64 = rng.standard_normal((10, 6, 6, 16))
    k64 = rng.standard_normal((3, 3, 16, 128)) * 0.1
    same = (1, 1), ((1, 1), (1, 1))
    with jax.enable_x64(True):
        want = _conv_grads(jax_impl, jax, jnp.asarray(x64), jnp.asarray(k64), *same, False)[1]
    got = _conv_grads(jax_impl, jax, jnp.asarray(x64, jnp.float32), jnp.asarray(k64, jnp.float32), *same, True)[1]
    tol = tolerance("grad", "float32")
    c = compare("kernel", np.asarray(got), np.asarray(want), tol)
    assert got.dtype == jnp.float32 and c.passed, f"float32 im2col vs float64 autodiff ({tol.reason}): {c.describe()}"

    x, k = jnp.asarray(x64, jnp.bfloat16), jnp.asarray(k64, jnp.bfloat16)
    got, want = (_conv_grads(jax_impl, jax, x, k, *same, im2col)[1] for im2col in (True, False))
    tol = tolerance("grad", "bfloat16")
    c = compare("kernel", np.asarray(got, np.float64), np.asarray(want, np.float64), tol)
    assert got.dtype == jnp.bfloat16 and c.passed, f"bfloat16 im2col vs autodiff ({tol.reason}): {c.describe()}"


def test_im2col_rule():
    _, jax_impl = _jax()
    pays = jax_impl.im2col_pays
    assert (jax_impl.IM2COL_MIN_IN_CHANNELS, jax_impl.IM2COL_MIN_OUT_CHANNELS, jax_impl.IM2COL_FRAMES) == (16, 128, 8)
    assert pays((3, 3, 64, 256), (1, 1))  # radar's recurrent and second input conv
    assert pays((3, 3, 16, 256), (1, 1))  # radar's first input conv
    assert not pays((5, 5, 128, 512), (1, 1))  # moving_mnist: 5x5 patches are 25x the input
    assert not pays((3, 3, 16, 64), (1, 1))  # small's recurrent conv: too few output channels
    assert not pays((3, 3, 2, 64), (1, 1))  # too few input channels
    assert not pays((3, 3, 64, 256), (2, 1))  # strided
    assert not pays((3, 64, 256), (1,))  # 1-D and 3-D: not measured, XLA's gradient
    assert not pays((3, 3, 3, 64, 256), (1, 1, 1))


def _count(jaxpr, primitive: str) -> int:
    n = 0
    for eqn in jaxpr.eqns:
        n += eqn.primitive.name == primitive
        for value in eqn.params.values():
            inner = getattr(value, "jaxpr", value)
            if hasattr(inner, "eqns"):
                n += _count(inner, primitive)
    return n


def test_runner_with_im2col_layers_matches_plain_autodiff():
    """Two layers, 16 -> 32 -> 32 channels (4F = 128): both input convs and both recurrent convs take the path on
    the CPU default; gradients of every weight and the input, element-wise against ``backward_chunk=None``."""
    jax, jax_impl = _jax()
    import jax.numpy as jnp

    from implementations.api import LossProbe
    from implementations.spec import LayerSpec, StackSpec
    from implementations.weights import init_weights

    spec = StackSpec(16, (LayerSpec(32, (3, 3)), LayerSpec(32, (3, 3), peephole="channel")))
    x = np.random.default_rng(5).standard_normal((2, 3, 5, 5, 16))
    probe = LossProbe.random(spec, x.shape, seed=6)
    weights = init_weights(spec, seed=7, dtype=np.float64)
    results = {}
    for setting in ("auto", None):
        runner = jax_impl.Runner(weights, dtype="float64", device="cpu", backward_chunk=setting)
        results[setting] = runner.value_and_grad(x, probe)
    tol = tolerance("grad", "float64")
    a, b = results["auto"], results[None]
    assert sorted(a.grads) == sorted(b.grads)
    assert abs(a.loss - b.loss) <= 1e-12 * max(1.0, abs(b.loss)), (a.loss, b.loss)
    bad = [c.describe() for c in (compare(k, a.grads[k], b.grads[k], tol) for k in b.grads) if not c.passed]
    assert not bad, f"im2col kernel gradients vs plain autodiff ({tol.reason}):\n  " + "\n  ".join(bad)

    # The path is taken: the gradient program has dot_generals (one per chunk of each conv) only with it.
    params = jax_impl.params_from_weights(weights, jnp.float32)
    xs = jnp.asarray(x, jnp.float32)

    def dots(setting):
        def loss(p):
            return jnp.sum(jax_impl.convlstm_apply(spec, p, xs, backward_chunk=setting)[0] ** 2)

        return _count(jax.make_jaxpr(jax.grad(loss))(params).jaxpr, "dot_general")

    assert dots(None) == 0
    if jax.default_backend() == "cpu":
        assert dots("auto") > 0
