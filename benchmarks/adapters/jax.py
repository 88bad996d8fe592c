"""JAX adapter: ``jax`` / ``jax-scan`` (our functional core, time loop fully unrolled / a rolled lax.scan) and the
flax.linen peers ``flax-linen`` / ``flax-linen-scan`` (``nn.RNN(nn.ConvLSTMCell)`` per layer, unroll=T / flax's
default unroll=1), fed our weights through :func:`implementations.interop.to_flax`.

Everything is jit-compiled; the training step (MSE, ``jax.value_and_grad``, optax SGD) is built once by
:func:`make_train_step` for all four. float32 convolutions use ``Precision.HIGHEST`` (no TF32 on GPUs).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .. import common

VARIANTS = ("jax", "jax-scan", "flax-linen", "flax-linen-scan")


def import_framework(variant: str) -> Any:
    """Import what ``variant`` needs (the import-only memory baseline) and select its device."""
    import flax.linen  # noqa: F401
    import jax
    import optax  # noqa: F401

    common.choose_device(device_candidates(jax), common.device_override())
    return jax


def device_candidates(jax: Any) -> list[common.DeviceCandidate]:
    """Every device JAX sees: accelerators (cuda/rocm/tpu as 'gpu') first, then the CPU."""
    out = []
    for dev in jax.devices():
        if dev.platform != "cpu":
            out.append(common.DeviceCandidate("gpu", f"{dev.platform}:{dev.id}", str(dev.device_kind), dev))
    try:
        cpus = jax.devices("cpu")
    except RuntimeError:
        cpus = []
    for dev in cpus[:1]:
        out.append(common.DeviceCandidate("cpu", f"cpu:{dev.id}", common.cpu_name(), dev))
    return out


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
        choice = common.choose_device(device_candidates(jax), common.device_override())
        self._dev = choice.handle
        self.device, self.device_kind, self.device_name = choice.id, choice.kind, choice.name
        jdtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}[dtype]
        self._jdtype = jdtype
        self.precision = "highest" if dtype == "float32" else "default"
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
            from implementations.interop import to_flax

            self.unroll = steps if variant == "flax-linen" else 1
            self.backward_chunk = None
            module = linen_stack(spec, self.unroll, jdtype)
            params = jax.tree_util.tree_map(lambda a: np.asarray(a, dtype=jdtype), to_flax(weights)["params"])
            # The tree must be exactly what flax itself creates for this module.
            shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, *x.shape[1:]), jdtype))
            want = jax.tree_util.tree_map(lambda a: a.shape, shapes["params"])
            got = jax.tree_util.tree_map(lambda a: a.shape, params)
            if want != got:
                raise common.VerificationError(f"interop.to_flax tree {got} differs from the module's {want}")

            def apply(p: Any, inp: Any) -> Any:
                return module.apply({"params": p}, inp)

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
        return self.jax.default_matmul_precision("highest" if self.dtype == "float32" else "default")

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
        import flax
        import jaxlib
        import optax

        return {
            "jax": self.jax.__version__,
            "jaxlib": jaxlib.__version__,
            "flax": flax.__version__,
            "optax": optax.__version__,
            "backend": self.jax.default_backend(),
        }

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

    n = common.matmul_size(device_kind)
    precision = lax.Precision.HIGHEST if jdtype == jnp.float32 else None
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
