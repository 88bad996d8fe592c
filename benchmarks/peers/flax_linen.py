"""The flax.linen peer: one ``nn.RNN(nn.ConvLSTMCell(F_i, k_i))`` per layer, fed the canonical weights through
:func:`implementations.interop.to_flax`. ``unroll=T`` is the ``flax-linen`` variant, flax's default ``unroll=1`` (a
rolled while loop) the ``flax-linen-scan`` one.

No framework is imported at module import time.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from implementations.weights import Weights


def linen_stack(spec: Any, unroll: int, dtype: Any) -> Any:
    """A flax.linen module: one ``nn.RNN(nn.ConvLSTMCell(F_i, k_i), unroll=unroll)`` per layer (params
    ``layers_{i}/cell/{ih,hh}``, the tree interop.to_flax writes). Input (B, T, *S, C)."""
    import flax.linen as nn

    class Stack(nn.Module):
        def setup(self) -> None:
            self.layers = [
                nn.RNN(nn.ConvLSTMCell(layer.filters, tuple(layer.kernel_size), dtype=dtype), unroll=unroll)
                for layer in spec.layers
            ]

        def __call__(self, x: Any) -> Any:
            for layer in self.layers:
                x = layer(x)
            return x

    return Stack()


def build(weights: Weights, unroll: int, dtype: Any, input_shape: tuple[int, ...]) -> tuple[Any, Any]:
    """``(apply(params, x) -> outputs, params)`` for the linen stack with ``unroll``, parameters in ``dtype`` (NumPy,
    on the host). ValueError when the tree interop.to_flax writes is not exactly the one flax creates for the
    module on inputs of ``input_shape`` (B, T, *S, C)."""
    import jax
    import jax.numpy as jnp

    from implementations.interop import to_flax

    module = linen_stack(weights.spec, unroll, dtype)
    params = jax.tree_util.tree_map(lambda a: np.asarray(a, dtype=dtype), to_flax(weights)["params"])
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, *input_shape[1:]), dtype))
    want = jax.tree_util.tree_map(lambda a: a.shape, shapes["params"])
    got = jax.tree_util.tree_map(lambda a: a.shape, params)
    if want != got:
        raise ValueError(f"interop.to_flax tree {got} differs from the module's {want}")

    def apply(p: Any, inp: Any) -> Any:
        return module.apply({"params": p}, inp)

    return apply, params
