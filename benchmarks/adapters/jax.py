"""JAX adapter: ``jax`` / ``jax-scan`` (our functional core, time loop fully unrolled / a rolled lax.scan) and the
flax.linen peers ``flax-linen`` / ``flax-linen-scan`` (:mod:`benchmarks.peers.flax_linen`).

Everything is jit-compiled; the training step (MSE, ``jax.value_and_grad``, optax SGD) is built once by
:func:`make_train_step` for all four. Devices, precision and versions come from the implementation's backend
(:mod:`implementations.jax_impl.runner`), the device choice from :func:`implementations.api.choose_device` with the
``$BENCH_DEVICE`` override.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np

from implementations import api

from .. import common

VARIANTS = ("jax", "jax-scan", "flax-linen", "flax-linen-scan")


def import_framework(variant: str) -> Any:
    """Import what ``variant`` needs (the import-only memory baseline) and select its device."""
    import flax.linen  # noqa: F401
    import jax
    import optax  # noqa: F401

    choose(jax)
    return jax


def device_candidates(jax: Any) -> list[api.DeviceCandidate]:
    """Every device JAX offers, accelerators first (:func:`implementations.jax_impl.runner.devices`)."""
    from implementations.jax_impl import runner

    return runner.devices(jax)


def choose(jax: Any) -> api.DeviceCandidate:
    """The benchmark's device: :func:`implementations.api.choose_device`, overridden by ``$BENCH_DEVICE``."""
    return api.choose_device(device_candidates(jax), os.environ.get(api.DEVICE_ENV) or None)


def make_train_step(apply: Any, optimizer: Any, *, donate: bool) -> Any:
    """``step(params, opt_state, x, target) -> (params, opt_state, loss, outputs)``, jitted.

    ``apply(params, x) -> outputs``; the loss is the MSE in float32; ``optimizer`` an optax transformation.
    Shared by every JAX variant. Parameters and optimizer state are donated where the device supports it.
    """
    import jax
    import jax.numpy as jnp
    import optax

    def step(params: Any, opt_state: Any, x: Any, target: Any) -> Any:
        def loss_fn(p: Any) -> Any:
            out = apply(p, x)
            return jnp.mean((out.astype(jnp.float32) - target) ** 2), out

        (loss, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, out

    return jax.jit(step, donate_argnums=(0, 1) if donate else ())


class JaxModel(common.Model):
    framework = "jax"

    def __init__(self, workload: Any, variant: str, dtype: str, weights: Any, x: np.ndarray, target: np.ndarray):
        import jax
        import jax.numpy as jnp
        import optax

        from implementations import jax_impl

        if variant not in VARIANTS:
            raise ValueError(f"not a JAX variant: {variant!r}")
        self.jax = jax
        self.variant = variant
        self.dtype = dtype
        choice = choose(jax)
        self._dev = choice.handle
        self.device, self.device_kind, self.device_name = choice.id, choice.kind, choice.name
        jdtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}[dtype]
        self._jdtype = jdtype
        self.precision = jax_impl.resolve_precision(dtype)
        spec = weights.spec
        steps = workload.steps
        if variant in ("jax", "jax-scan"):
            self.unroll: Any = "full" if variant == "jax" else 1
            self.backward_chunk = jax_impl.resolve_backward_chunk(
                "auto", self._dev.platform, frames=workload.batch * steps
            )
            params = jax_impl.params_from_weights(weights, jdtype)
            apply = functools.partial(self._apply_ours, spec, self.unroll, self.precision, self.backward_chunk)
        else:
            from ..peers import flax_linen

            self.unroll = steps if variant == "flax-linen" else 1
            self.backward_chunk = None
            try:  # the tree must be exactly what flax itself creates for this module
                apply, params = flax_linen.build(weights, self.unroll, jdtype, x.shape)
            except ValueError as exc:
                raise common.VerificationError(str(exc)) from None

        self.params = jax.device_put(params, self._dev)
        self.x = jax.device_put(jnp.asarray(x, dtype=jdtype), self._dev)
        self.target = jax.device_put(jnp.asarray(target, dtype=jnp.float32), self._dev)
        self._forward = jax.jit(apply)
        optimizer = optax.sgd(common.LEARNING_RATE)
        self.opt_state = jax.device_put(optimizer.init(self.params), self._dev)
        self._train = make_train_step(apply, optimizer, donate=self.device_kind != "cpu")
        self._out: Any = None
        self._loss: Any = None
        self.workload_probe = common.conv_probe(workload, self.device_kind)

    @staticmethod
    def _apply_ours(spec: Any, unroll: Any, precision: str, backward_chunk: int | None, params: Any, x: Any) -> Any:
        from implementations import jax_impl

        seq, _, _ = jax_impl.convlstm_apply(
            spec, params, x, unroll=unroll, precision=precision, backward_chunk=backward_chunk
        )
        return seq

    def _precision_scope(self) -> Any:
        # The flax peers' convs take jax's default precision: pin it like ours (no TF32 for float32 on GPUs).
        return self.jax.default_matmul_precision(self.precision)

    def forward(self) -> None:
        with self._precision_scope():
            self._out = self._forward(self.params, self.x)

    def train_step(self) -> None:
        with self._precision_scope():
            self.params, self.opt_state, self._loss, self._out = self._train(
                self.params, self.opt_state, self.x, self.target
            )

    def sync(self) -> None:
        self.jax.block_until_ready((self._out, self._loss, self.params))

    def outputs(self) -> np.ndarray:
        return np.asarray(self.jax.device_get(self._out)).astype(np.float32)

    def loss(self) -> float:
        return float(self.jax.device_get(self._loss))

    def first_weight(self) -> np.ndarray:
        leaf = self.jax.tree_util.tree_leaves(self.params)[0]
        return np.asarray(self.jax.device_get(leaf)).astype(np.float32)

    def live_train_bytes(self) -> tuple[int, str]:
        """XLA's temporaries of the compiled training step (``memory_analysis().temp_size_in_bytes``): saved
        activations and every intermediate; the arguments (weights, input, target) and outputs (new weights,
        loss, output sequence) are not counted."""
        with self._precision_scope():
            compiled = self._train.lower(self.params, self.opt_state, self.x, self.target).compile()
        analysis = compiled.memory_analysis()
        if analysis is None:
            raise NotImplementedError(f"{self.variant}: this XLA backend gives no memory analysis")
        return int(analysis.temp_size_in_bytes), "XLA memory_analysis: temporaries of the compiled step"

    def device_peak_bytes(self) -> int | None:
        if self.device_kind == "cpu":
            return None
        stats = self._dev.memory_stats() or {}
        peak = stats.get("peak_bytes_in_use")
        return None if peak is None else int(peak)

    def peak_gflops(self) -> dict[str, float]:
        return peak_gflops(self.jax, self._dev, self._jdtype, self.device_kind, self.workload_probe)

    def versions(self) -> dict[str, str]:
        import optax

        from implementations import jax_impl

        return {**jax_impl.Runner.framework_versions(), "optax": optax.__version__,
                "backend": self.jax.default_backend()}

    def options(self) -> dict[str, Any]:
        return {
            "jit": True,
            "unroll": self.unroll,
            "backward_chunk": self.backward_chunk,
            "precision": self.precision,
            "optimizer": f"optax.sgd({common.LEARNING_RATE})",
            "donate": self.device_kind != "cpu",
            "layout": "channels-last (B, T, H, W, C)",
        }


def peak_gflops(jax: Any, device: Any, jdtype: Any, device_kind: str, probe: common.ConvProbe) -> dict[str, float]:
    """jnp.matmul of two n x n arrays and lax.conv of the workload's gate convolution, jitted, GFLOP/s."""
    import jax.numpy as jnp
    from jax import lax

    from implementations import jax_impl

    n = common.matmul_size(device_kind)
    precision = jax_impl.model.lax_precision(jax_impl.resolve_precision(np.dtype(jdtype).name))
    rng = np.random.default_rng(0)
    a = jax.device_put(jnp.asarray(rng.standard_normal((n, n)), jdtype), device)
    b = jax.device_put(jnp.asarray(rng.standard_normal((n, n)), jdtype), device)
    mm = jax.jit(lambda u, v: jnp.matmul(u, v, precision=precision))
    rank = len(probe.spatial)
    letters = "DHW"[-rank:]
    dn = (f"N{letters}C", f"{letters}IO", f"N{letters}C")
    shape = (probe.batch, *probe.spatial, probe.in_channels)
    xi = jax.device_put(jnp.asarray(rng.standard_normal(shape), jdtype), device)
    w = jax.device_put(
        jnp.asarray(rng.standard_normal((*probe.kernel, probe.in_channels, probe.out_channels)), jdtype), device
    )
    conv = jax.jit(
        lambda u, v: lax.conv_general_dilated(u, v, (1,) * rank, "SAME", dimension_numbers=dn, precision=precision)
    )
    return {
        "matmul": common.best_rate(lambda: mm(a, b).block_until_ready(), 2.0 * n**3),
        "conv": common.best_rate(lambda: conv(xi, w).block_until_ready(), probe.flops),
    }


def build(workload: Any, variant: str, dtype: str, weights: Any, x: np.ndarray, target: np.ndarray) -> JaxModel:
    return JaxModel(workload, variant, dtype, weights, x, target)
