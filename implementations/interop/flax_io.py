"""flax.linen ``ConvLSTMCell`` parameter trees, and ``.msgpack`` files written by ``flax.serialization``.

The cell (flax 0.12) computes ``gates = ih(x) + hh(h)`` with two convs that both carry a bias when
``use_bias``, splits the gates as ``i, g(c), f, o`` and applies ``f = sigmoid(f + 1)``: a constant +1 on the
forget pre-activation at every step. Both convs get the cell's ``strides`` and ``padding``, so only stride 1
and 'SAME' keep the carry's shape; there is no dilation, and the activations are fixed (sigmoid, tanh).

Tree layout written by :func:`to_flax` (the params of a linen module holding
``self.layers = [nn.RNN(nn.ConvLSTMCell(F_i, k_i)) for ...]`` in ``setup``)::

    {"params": {"layers_0": {"cell": {"ih": {"kernel": (*k, C_in, 4F), "bias": (4F,)},
                                      "hh": {"kernel": (*k, F, 4F),    "bias": (4F,)}}},
                "layers_1": {...}, ...}}

Layouts accepted by :func:`from_flax`, with or without the ``{"params": ...}`` wrapper: one cell
``{"ih", "hh"}``; one ``nn.RNN`` ``{"cell": cell}``; or a stack ``{"<prefix>_<i>": cell or {"cell": cell}}``
with one prefix and i = 0..n-1 (``layers_0``, ``RNN_0``, ``ConvLSTMCell_0`` ...).

Bias mapping (exact both ways): export writes ``ih/bias = b`` (gate blocks reordered) and ``hh/bias`` = -1 in
the forget block, 0 elsewhere, so flax's +1 cancels; import computes ``b = ih/bias + (hh/bias + 1_f)``. With
that split ``hh/bias + 1_f`` is exactly 0 and a round trip is bit-exact; putting ``b_f - 1`` into ``ih/bias``
instead would round ``b_f`` whenever ``|b_f|`` is outside [0.5, 2]. A bias-less tree (``use_bias=False``)
imports as ``b = (0, +1, 0, 0)``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import atomic_write
from ..spec import GATE_ORDER
from ..weights import Weights
from ._common import (
    as_float_array,
    check_shape,
    check_stride1_same_cell,
    fail,
    gate_slice,
    layer_spec,
    prefixed,
    reorder_gates,
    require,
    stack_weights,
)

FLAX_ORDER = "icfo"
PEER = "flax.linen.ConvLSTMCell"
LAYER_PREFIX = "layers"
ACCEPTED_LAYOUTS = (
    "expected flax params of ConvLSTMCells: {'ih': {...}, 'hh': {...}} (one cell), {'cell': cell} (one nn.RNN) or "
    "{'<prefix>_0': cell or {'cell': cell}, '<prefix>_1': ...} (a stack), optionally inside {'params': ...}"
)


def _forget_one(filters: int) -> np.ndarray:
    """(4F,) float64 in flax gate order: 1 in the forget block, 0 elsewhere."""
    one = np.zeros(4 * filters)
    one[gate_slice("f", filters, FLAX_ORDER)] = 1.0
    return one


def to_flax(weights: Weights, *, use_bias: bool | None = None) -> dict[str, Any]:
    """The flax param tree (NumPy leaves, the weights' dtype) for a stack of ``nn.RNN(nn.ConvLSTMCell)``.

    ``use_bias``: whether the target cells have biases (default: as the spec). A bias-less flax cell still adds
    +1 to the forget gate, so ``use_bias=False`` is possible only where our bias is exactly (0, +1, 0, 0) in
    (i, f, c, o); our ``use_bias=False`` (b_f = 0) needs ``use_bias=True`` (explicit zero biases, hh/bias -1).
    Refused: peepholes, strides > 1, 'valid' (unless every kernel size is 1), a dilation on an axis of kernel
    size > 1, activations other than tanh/sigmoid.
    """
    check_stride1_same_cell(
        weights.spec.layers,
        PEER,
        odd_kernels_only=False,
        why_geometry="the cell applies its strides and padding to the hidden-state conv too, so only stride 1 and "
        "'SAME' keep the carry's shape, and it has no dilation",
        why_activation="the cell hard-codes sigmoid gates and tanh",
    )
    layers: dict[str, Any] = {}
    for i, layer in enumerate(weights.spec.layers):
        arrays = weights.layer(i)
        f = layer.filters
        want_bias = layer.use_bias if use_bias is None else use_bias
        ih = {"kernel": reorder_gates(arrays["kernel"], GATE_ORDER, FLAX_ORDER)}
        hh = {"kernel": reorder_gates(arrays["recurrent_kernel"], GATE_ORDER, FLAX_ORDER)}
        bias = arrays.get("bias")
        if want_bias:
            ih["bias"] = reorder_gates(bias, GATE_ORDER, FLAX_ORDER) if bias is not None else np.zeros(4 * f)
            hh["bias"] = -_forget_one(f)
            ih["bias"], hh["bias"] = (b.astype(weights.dtype) for b in (ih["bias"], hh["bias"]))
        elif bias is None:
            fail(
                f"layer {i}",
                f"use_bias=False cannot be converted to a bias-less {PEER}: the cell adds +1 to the forget "
                "pre-activation at every step and has no bias to cancel it (ours has b_f = 0); export with "
                "use_bias=True (--flax-use-bias true), which writes explicit biases (hh/bias = -1 in the forget block)",
            )
        elif not np.array_equal(reorder_gates(bias, GATE_ORDER, FLAX_ORDER), _forget_one(f)):
            fail(
                f"layer {i}",
                f"a bias-less {PEER} (use_bias=False) has the fixed bias (0, +1, 0, 0) in (i, f, c, o); this "
                "layer's bias differs, so it needs a cell with use_bias=True",
            )
        layers[f"{LAYER_PREFIX}_{i}"] = {"cell": {"ih": ih, "hh": hh}}
    return {"params": layers}


def _is_cell(node: Any) -> bool:
    return isinstance(node, Mapping) and set(node) == {"ih", "hh"}


def _cells(tree: Any) -> list[tuple[str, Mapping[str, Any]]]:
    """(path, cell) of every layer of an accepted tree layout, in order."""
    node = tree["params"] if isinstance(tree, Mapping) and set(tree) == {"params"} else tree
    if _is_cell(node):
        return [("cell", node)]
    if isinstance(node, Mapping) and set(node) == {"cell"} and _is_cell(node["cell"]):
        return [("cell", node["cell"])]
    if not isinstance(node, Mapping) or not node:
        fail("flax params", ACCEPTED_LAYOUTS)
    matches = {key: re.fullmatch(r"(.+)_(\d+)", str(key)) for key in node}
    bad = sorted(str(k) for k, m in matches.items() if m is None)
    if bad:
        fail("flax params", f"unexpected keys {bad}: {ACCEPTED_LAYOUTS}")
    prefixes = sorted({m.group(1) for m in matches.values()})
    if len(prefixes) != 1:
        fail("flax params", f"layer keys with several prefixes {prefixes}: expected one prefix, <prefix>_0 ...")
    order = sorted(matches, key=lambda k: int(matches[k].group(2)))
    indices = [int(matches[k].group(2)) for k in order]
    if indices != list(range(len(order))):
        fail("flax params", f"layer indices {indices}: expected 0 ... {len(order) - 1} without gaps")
    out = []
    for key in order:
        entry = node[key]
        if isinstance(entry, Mapping) and set(entry) == {"cell"}:
            entry = entry["cell"]
        if not _is_cell(entry):
            found = sorted(entry) if isinstance(entry, Mapping) else type(entry).__name__
            fail(f"flax params {key!r}", f"expected a ConvLSTMCell's {{'ih', 'hh'}} or {{'cell': ...}}, found {found}")
        out.append((str(key), entry))
    return out


def _conv(node: Any, where: str) -> tuple[np.ndarray, np.ndarray | None]:
    if not isinstance(node, Mapping) or not ({"kernel"} <= set(node) <= {"kernel", "bias"}):
        found = sorted(node) if isinstance(node, Mapping) else type(node).__name__
        fail(where, f"expected a Conv's {{'kernel'[, 'bias']}}, found {found}")
    bias = as_float_array(node["bias"], f"{where}/bias") if "bias" in node else None
    return as_float_array(node["kernel"], f"{where}/kernel"), bias


def from_flax(params: Any) -> Weights:
    """Canonical Weights from the params of flax ConvLSTMCells (layouts: see the module docstring).

    The tree holds no config: the spec is stride 1, 'same', no dilation, tanh/sigmoid, kernel and filters read
    off the shapes. The two biases are summed with the forget +1 (in float64, rounded once to the dtype).
    """
    entries = []
    for key, cell in _cells(params):
        where = f"flax params {key!r}"
        kernel, ih_bias = _conv(cell["ih"], f"{where}/ih")
        recurrent, hh_bias = _conv(cell["hh"], f"{where}/hh")
        if not 3 <= kernel.ndim <= 5 or kernel.shape[-1] % 4:
            fail(f"{where}/ih/kernel", f"expected shape (*k, C_in, 4F) with 1-3 spatial axes, found {kernel.shape}")
        f4 = kernel.shape[-1]
        f, ksize = f4 // 4, kernel.shape[:-2]
        check_shape(f"{where}/hh/kernel", recurrent, (*ksize, f, f4))
        if (ih_bias is None) != (hh_bias is None):
            fail(where, "one conv has a bias and the other not: a ConvLSTMCell's use_bias sets both")
        if ih_bias is None:
            bias = _forget_one(f).astype(kernel.dtype)
        else:
            check_shape(f"{where}/ih/bias", ih_bias, (f4,))
            check_shape(f"{where}/hh/bias", hh_bias, (f4,))
            summed = ih_bias.astype(np.float64) + (hh_bias.astype(np.float64) + _forget_one(f))
            bias = summed.astype(np.result_type(ih_bias, hh_bias))
        arrays = {
            "kernel": reorder_gates(kernel, FLAX_ORDER, GATE_ORDER),
            "recurrent_kernel": reorder_gates(recurrent, FLAX_ORDER, GATE_ORDER),
            "bias": reorder_gates(bias, FLAX_ORDER, GATE_ORDER),
        }
        entries.append((where, layer_spec(where, f, tuple(int(k) for k in ksize)), arrays))
    return stack_weights(entries, "flax params")


def read_flax_file(path: str | os.PathLike) -> Weights:
    """Canonical Weights from a ``.msgpack`` param tree (``flax.serialization.msgpack_restore``, no pickle)."""
    serialization = require("flax.serialization", "flax")
    path = Path(path)
    if not path.is_file():
        fail(str(path), "no such file")
    try:
        tree = serialization.msgpack_restore(path.read_bytes())
    except Exception as exc:  # noqa: BLE001 - msgpack raises several types for bad input
        fail(str(path), f"expected a flax msgpack param tree, found an unreadable file ({type(exc).__name__}: {exc})")
    return prefixed(path, from_flax, tree)


def write_flax_file(weights: Weights, path: str | os.PathLike, *, use_bias: bool | None = None) -> Path:
    """Write ``to_flax(weights)`` with ``flax.serialization.msgpack_serialize``, atomically."""
    serialization = require("flax.serialization", "flax")
    data = serialization.msgpack_serialize(to_flax(weights, use_bias=use_bias))
    return atomic_write(path, lambda fh: fh.write(data))

