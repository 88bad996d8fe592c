"""The torch module's two time-loop paths give the same numbers.

Eager mode runs the time loop as a ``torch.autograd.Function`` with a hand-written backward (the fast path);
``ConvLSTM.use_autograd_loop()`` and torch.compile run it in plain differentiable ops instead (dynamo cannot
trace the Function's ``out=`` writes into strided views, and inductor derives the backward itself; double backward
needs a differentiable backward). The Function path is checked against finite differences in test_gradients;
here the other path is checked against it, and against the float64 reference, in float64 (so the float64 entries
of the tolerance table apply).

Each compiled case costs one inductor compile (~10-20 s on 2 cores), so only three cases, chosen to cover every
branch of the loop: peepholes with a 'valid' first layer, an initial state, go_backwards.
"""

from __future__ import annotations

import numpy as np
import pytest

from implementations import reference
from implementations.tolerances import compare, tolerance

from .cases import CASES_BY_ID, GRAD_CASE_IDS

COMPILE_CASE_IDS = ["peephole_full_valid", "initial_state_2layers", "go_backwards_2layers"]


def _torch():
    torch = pytest.importorskip("torch", reason="torch is not installed")
    from implementations import torch_impl

    return torch, torch_impl


def _runner(case, *, autograd_loop: bool = False, compiled: bool = False):
    torch, torch_impl = _torch()
    runner = torch_impl.Runner(case.weights("float64"), dtype="float64", device="cpu")
    runner.module.use_autograd_loop(autograd_loop)
    if compiled:
        # The compiled wrapper forwards attribute access (canonical_parameters ...) to the module it wraps.
        runner.module = torch.compile(runner.module, dynamic=False)
    return runner


def _check(what: str, case_id: str, actual: dict, expected: dict, quantity: str) -> None:
    tol = tolerance(quantity, "float64")
    assert sorted(actual) == sorted(expected), f"{case_id}: {what} keys {sorted(actual)} != {sorted(expected)}"
    bad = [c.describe() for c in (compare(k, actual[k], expected[k], tol) for k in expected) if not c.passed]
    assert not bad, f"{case_id}: {what} ({tol.reason}):\n  " + "\n  ".join(bad)


def _check_paths(case_id: str, candidate, label: str) -> None:
    """``candidate``'s forward against the float64 reference, its loss and gradients against the Function path."""
    case = CASES_BY_ID[case_id]
    x, kwargs = case.inputs("float64"), case.run_kwargs("float64")
    got = candidate.forward(x, **kwargs)
    ref = reference.forward(case.weights("float64"), x, **kwargs)
    _check(f"{label} forward vs float64 reference", case_id, got.tensors(), ref.tensors(), "forward")
    probe = case.probe()
    want = _runner(case).value_and_grad(x, probe, **kwargs)
    have = candidate.value_and_grad(x, probe, **kwargs)
    _check(f"{label} loss and gradients vs the hand-written backward", case_id,
           {"loss": have.loss} | have.grads, {"loss": want.loss} | want.grads, "grad")


@pytest.mark.parametrize("case_id", GRAD_CASE_IDS)
def test_autograd_loop_matches_reference_and_function(case_id):
    _check_paths(case_id, _runner(CASES_BY_ID[case_id], autograd_loop=True), "autograd loop")


@pytest.mark.parametrize("case_id", COMPILE_CASE_IDS)
def test_compiled_module_matches_reference_and_function(case_id):
    _check_paths(case_id, _runner(CASES_BY_ID[case_id], compiled=True), "torch.compile")


def _double_backward_setup(case):
    torch, _ = _torch()
    runner = _runner(case)
    x = torch.from_numpy(np.moveaxis(case.inputs("float64"), -1, 2).copy())
    return torch, runner.module, x


def test_double_backward_needs_the_autograd_loop():
    case = CASES_BY_ID["peephole_channel"]
    torch, module, x = _double_backward_setup(case)
    kernel = module.layers[0].recurrent_kernel

    def penalty():
        (g,) = torch.autograd.grad(module(x)[0].square().sum(), kernel, create_graph=True)
        return g.square().sum()

    with pytest.raises(RuntimeError, match="use_autograd_loop"):
        penalty()
    module.use_autograd_loop()
    # d penalty / d kernel along a random direction, against a central difference of the penalty.
    (analytic,) = torch.autograd.grad(penalty(), kernel)
    direction = torch.from_numpy(np.random.default_rng(5).standard_normal(tuple(kernel.shape)))
    eps = 1e-5
    with torch.no_grad():
        kernel.add_(eps * direction)
    plus = float(penalty().detach())
    with torch.no_grad():
        kernel.sub_(2 * eps * direction)
    minus = float(penalty().detach())
    fd = (plus - minus) / (2 * eps)
    got = float((analytic * direction).sum())
    tol = tolerance("grad_fd", "float64")
    assert abs(got - fd) <= tol.atol + tol.rtol * abs(fd), (
        f"second derivative along a direction: analytic {got!r}, finite difference {fd!r}, "
        f"max-abs-diff {abs(got - fd):.3e} ({tol.reason})"
    )


def test_cpu_tanh_identity_only_on_large_short_run_views():
    """``_tanh`` takes ``2 sigmoid(2x) - 1`` only where it was measured faster (large strided views with short
    contiguous runs, e.g. the g-gate block of a channels-last gate tensor with F = 16) and ``torch.tanh`` elsewhere;
    both agree with float64 tanh to 2e-7 in float32."""
    torch, ti = _torch()
    gen = torch.Generator().manual_seed(0)

    def gate_view(b, f, s):
        z = (4 * torch.randn(b, 4 * f, s, s, generator=gen)).contiguous(memory_format=torch.channels_last)
        return z.chunk(4, 1)[2]

    cases = {
        "g view, F 16, 65536 elements": (gate_view(4, 16, 32), True),
        "g view, F 64": (gate_view(8, 64, 25), False),
        "small g view, F 4": (gate_view(2, 4, 8), False),
        "dense channels-last": (4 * torch.randn(4, 16, 32, 32, generator=gen).contiguous(
            memory_format=torch.channels_last), False),
        "dense channels-first": (4 * torch.randn(4, 16, 32, 32, generator=gen), False),
        "float16 view": (gate_view(4, 16, 32).half(), False),
    }
    for name, (x, identity) in cases.items():
        assert ti._use_identity_tanh(x) is identity, name
        got = ti._tanh(x)
        out = torch.empty_like(x)
        ti._tanh(x, out=out)
        want = torch.tanh(x.double())
        tol = 2e-7 if x.dtype == torch.float32 else 1e-3
        for value in (got, out):
            err = (value.double() - want).abs().max().item()
            assert err <= tol, f"{name}: max abs err {err:.3g} > {tol:g}"


def _module_call(case):
    """``call(grad)``: the module on the case's inputs, initial state and direction, with or without autograd."""
    torch, _ = _torch()
    runner = _runner(case)
    kwargs = case.run_kwargs("float64")
    x = torch.from_numpy(np.moveaxis(case.inputs("float64"), -1, 2).copy())
    init = runner._states(kwargs["initial_state"])

    def call(grad: bool):
        with torch.set_grad_enabled(grad):
            seq, hs, cs = runner.module(x, init, kwargs["go_backwards"])
        return [seq, *hs, *cs]

    return torch, runner.module, call


def _max_abs_diffs(got, want) -> list[float]:
    return [float((g - w).abs().max()) for g, w in zip(got, want)]


@pytest.mark.parametrize("case_id", ["peephole_channel", "initial_state_2layers", "go_backwards_2layers"])
def test_backward_twice_with_a_retained_graph(case_id):
    """The hand-written backward overwrites the saved gates with their gradients unless the graph is retained: with
    ``retain_graph=True`` every backward gives the gradients of a fresh graph, bit for bit, and without it a second
    backward is torch's own error, never wrong numbers."""
    torch, module, call = _module_call(CASES_BY_ID[case_id])
    params = list(module.parameters())
    weights = torch.Generator().manual_seed(3)
    probe = [torch.randn(t.shape, generator=weights, dtype=t.dtype) for t in call(False)]

    def loss():
        return sum((t * p).sum() for t, p in zip(call(True), probe))

    fresh = torch.autograd.grad(loss(), params)
    value = loss()
    runs = {
        "first, retained": torch.autograd.grad(value, params, retain_graph=True),
        "second, retained": torch.autograd.grad(value, params, retain_graph=True),
        "third, not retained": torch.autograd.grad(value, params),
    }
    for name, grads in runs.items():
        diffs = _max_abs_diffs(grads, fresh)
        assert max(diffs) == 0.0, f"{case_id}: {name} backward vs a fresh graph, max-abs-diff per parameter {diffs}"
    with pytest.raises(RuntimeError, match="second time"):
        torch.autograd.grad(value, params)


@pytest.mark.parametrize("case_id", ["peephole_full_valid", "initial_state_2layers", "go_backwards_2layers"])
def test_forward_without_gradients_matches_the_training_forward(case_id):
    """Without gradients the loop keeps two steps of gates and cell states instead of T: the same numbers, bit for
    bit, as the forward that keeps them all for a backward."""
    _, _, call = _module_call(CASES_BY_ID[case_id])
    plain, training = call(False), call(True)
    diffs = _max_abs_diffs(plain, [t.detach() for t in training])
    assert max(diffs) == 0.0, f"{case_id}: outputs and states, max-abs-diff {diffs}"
