"""Pieces shared by the converters: the error type, gate reordering, dtype handling, spec checks.

Nothing here imports a deep-learning framework.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NoReturn

import numpy as np

from ..spec import GATE_ORDER, LayerSpec, SpecError, StackSpec
from ..weights import WeightFileError, Weights, make_weights


class ConversionError(WeightFileError):
    """A conversion is impossible or would not be exact. The message says which layer/option and why."""


def fail(where: str, message: str) -> NoReturn:
    raise ConversionError(f"{where}: {message}" if where else message)


def layer_spec(where: str, *args: Any, **kwargs: Any) -> LayerSpec:
    """``LayerSpec(*args, **kwargs)`` for a spec read off array shapes; an invalid one (0 filters, a kernel axis
    of size 0 ...) raises ConversionError naming ``where``."""
    try:
        return LayerSpec(*args, **kwargs)
    except SpecError as exc:
        fail(where, str(exc))


def prefixed(path: str | os.PathLike, fn: Any, *args: Any) -> Any:
    """``fn(*args)``, with the file name put in front of any ConversionError message."""
    try:
        return fn(*args)
    except ConversionError as exc:
        raise ConversionError(f"{path}: {exc}") from None


def require(module: str, fmt: str) -> Any:
    """Import ``module`` for format ``fmt``; a missing package raises FrameworkUnavailable with the reason."""
    from .. import FrameworkUnavailable

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise FrameworkUnavailable(f"format {fmt!r} needs the package {module.split('.')[0]!r}: {exc}") from None


def reorder_gates(array: np.ndarray, src: str, dst: str, axis: int = -1) -> np.ndarray:
    """Reorder the 4 gate blocks of ``array`` along ``axis`` from order ``src`` to ``dst`` (e.g. 'ifco' -> 'icfo').

    The blocks are copied, never computed, so the result is bit-exact.
    """
    if sorted(src) != sorted(GATE_ORDER) or sorted(dst) != sorted(GATE_ORDER):
        raise ValueError(f"gate orders must be permutations of {GATE_ORDER!r}, found {src!r} and {dst!r}")
    if array.shape[axis] % 4:
        raise ValueError(f"axis {axis} of shape {array.shape} is not 4 gate blocks")
    blocks = dict(zip(src, np.split(array, 4, axis=axis)))
    return np.concatenate([blocks[g] for g in dst], axis=axis)


def gate_slice(gate: str, filters: int, order: str = GATE_ORDER) -> slice:
    """The slice of gate ``gate`` in a (4F,) vector laid out in ``order``."""
    j = order.index(gate)
    return slice(j * filters, (j + 1) * filters)


def as_float_array(value: Any, where: str) -> np.ndarray:
    """A float32/float64 NumPy copy of ``value``; float16/bfloat16 are widened to float32 (exact)."""
    if hasattr(value, "detach"):  # a torch tensor: widen half types before .numpy() (bfloat16 has none)
        value = value.detach().cpu()
        if value.is_floating_point() and value.element_size() < 4:
            value = value.float()
        value = value.numpy()
    try:
        arr = np.array(value, copy=True)
    except Exception as exc:  # noqa: BLE001 - any unconvertible object
        fail(where, f"expected an array, found {type(value).__name__} ({exc})")
    if arr.dtype in (np.float32, np.float64):
        return arr
    if arr.dtype.name in ("float16", "bfloat16"):
        return arr.astype(np.float32)
    fail(where, f"expected a float array (float16/bfloat16/float32/float64), found dtype {arr.dtype}")


def unify_dtype(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Cast every array to the widest dtype present (float32 -> float64 is exact)."""
    dtype = np.float64 if any(a.dtype == np.float64 for a in arrays.values()) else np.float32
    return {k: v.astype(dtype, copy=False) for k, v in arrays.items()}


def check_shape(where: str, array: np.ndarray, shape: tuple[int, ...]) -> None:
    if tuple(array.shape) != tuple(shape):
        fail(where, f"expected shape {tuple(shape)}, found {tuple(array.shape)}")


# ---------------------------------------------------------------------------------------------
# What a peer can express
# ---------------------------------------------------------------------------------------------

def refuse_peepholes(layers: Iterable[LayerSpec], peer: str) -> None:
    for i, layer in enumerate(layers):
        if layer.peephole is not None:
            fail(
                f"layer {i}",
                f"peephole={layer.peephole!r} cannot be converted to {peer}: it has no peephole weights, "
                "and dropping them would change the outputs",
            )


def check_stride1_same_cell(
    layers: Iterable[LayerSpec], peer: str, *, odd_kernels_only: bool, why_geometry: str, why_activation: str
) -> None:
    """Refuse what a cell with one stride-1 'same' geometry and fixed sigmoid/tanh cannot express.

    Exact conditions, per layer: peepholes are refused; strides must be 1; 'valid' is accepted only when every
    kernel size is 1 (then it pads nothing, like 'same'); a dilation > 1 only on an axis of kernel size 1 (where
    it is a no-op); even kernels only if ``odd_kernels_only`` is false; activation 'tanh', recurrent 'sigmoid'.
    """
    layers = list(layers)
    refuse_peepholes(layers, peer)
    for i, layer in enumerate(layers):
        where = f"layer {i}"
        if any(s != 1 for s in layer.strides):
            fail(where, f"strides={layer.strides} cannot be converted to {peer}: {why_geometry}")
        if layer.padding == "valid" and any(k != 1 for k in layer.kernel_size):
            fail(
                where,
                f"padding='valid' with kernel {layer.kernel_size} cannot be converted to {peer}: {why_geometry} "
                "('valid' equals 'same' only for kernels of size 1)",
            )
        if any(d != 1 and k != 1 for d, k in zip(layer.dilation_rate, layer.kernel_size)):
            fail(
                where,
                f"dilation_rate={layer.dilation_rate} with kernel {layer.kernel_size} cannot be converted to "
                f"{peer}: {why_geometry} (a dilation is a no-op only on an axis of kernel size 1)",
            )
        if odd_kernels_only and any(k % 2 == 0 for k in layer.kernel_size):
            fail(
                where,
                f"even kernel {layer.kernel_size} cannot be converted to {peer}: it pads kernel_size // 2 on both "
                "sides, which equals 'same' (extra row/column at the end) only for odd kernels",
            )
        if layer.activation != "tanh" or layer.recurrent_activation != "sigmoid":
            fail(
                where,
                f"activation={layer.activation!r}, recurrent_activation={layer.recurrent_activation!r} cannot be "
                f"converted to {peer}: {why_activation}",
            )


def stack_weights(layers: Sequence[tuple[str, LayerSpec, Mapping[str, np.ndarray]]], context: str = "") -> Weights:
    """Validated Weights from per-layer (where, spec, {kernel, recurrent_kernel[, bias]}) entries.

    Checks the chain (layer i reads layer i-1's filters) and every shape; dtypes are unified to the widest.
    ``context`` prefixes errors not tied to one layer (the ``where`` of each entry names its layer).
    """
    if not layers:
        fail(context, "no ConvLSTM layers found: nothing to convert")
    arrays: dict[str, np.ndarray] = {}
    for i, (where, spec, layer_arrays) in enumerate(layers):
        kernel = layer_arrays["kernel"]
        if kernel.ndim != spec.rank + 2:
            fail(where, f"kernel: expected {spec.rank + 2} axes (*k, C_in, 4F), found shape {kernel.shape}")
        if i > 0 and kernel.shape[-2] != layers[i - 1][1].filters:
            fail(
                where,
                f"reads {kernel.shape[-2]} channels but the previous ConvLSTM layer ({layers[i - 1][0]}) "
                f"outputs {layers[i - 1][1].filters}: not a plain stack",
            )
        expected = {"kernel", "recurrent_kernel"} | ({"bias"} if spec.use_bias else set())
        if set(layer_arrays) != expected:
            fail(where, f"expected weights {sorted(expected)}, found {sorted(layer_arrays)}")
        for name, value in layer_arrays.items():
            arrays[f"layers/{i}/{name}"] = value
    try:
        stack = StackSpec(int(layers[0][2]["kernel"].shape[-2]), tuple(spec for _, spec, _ in layers))
        return make_weights(stack, unify_dtype(arrays))
    except (SpecError, WeightFileError) as exc:
        fail(context, str(exc))
