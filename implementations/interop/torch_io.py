"""The fused-conv PyTorch ConvLSTM layout (as in ndrplz/ConvLSTM_pytorch), as a state dict or a ``.pt`` file.

One conv per layer over ``cat([x, h], channel axis)``: ``cell_list.{i}.conv.weight (4F, C_in + F, *k)``
(input channels ``[:C_in]`` read x, ``[C_in:]`` read h), ``cell_list.{i}.conv.bias (4F,)`` when the conv has a
bias; gate blocks ``i, f, o, g(c)``; padding ``kernel_size // 2`` on both sides, stride 1, no dilation, sigmoid
gates and tanh. The layout records no config, so the spec is read off the shapes: only odd kernels fit (an
even kernel's symmetric padding would grow the state). ``Conv2d`` is the usual case; ``Conv1d``/``Conv3d``
weights (rank 1/3) are accepted and written the same way.

Files are read with ``torch.load(..., weights_only=True)`` (no arbitrary unpickling).
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import atomic_write
from ..spec import GATE_ORDER
from ..weights import Weights
from ._common import (
    ConversionError,
    as_float_array,
    check_shape,
    check_stride1_same_cell,
    fail,
    layer_spec,
    prefixed,
    reorder_gates,
    require,
    stack_weights,
)

FUSED_ORDER = "ifoc"
PEER = "the fused PyTorch layout"
_KEY = re.compile(r"(?P<prefix>.*?)cell_list\.(?P<index>\d+)\.conv\.(?P<name>weight|bias)")


def to_torch_fused(weights: Weights) -> dict[str, Any]:
    """A fused-layout state dict (torch tensors, the weights' dtype) that ``module.load_state_dict`` accepts.

    ``weight = transpose(concat([kernel, recurrent_kernel], C axis) reordered to i, f, o, c)`` to (4F, C_in+F, *k).
    Refused: peepholes, strides > 1, even kernels, 'valid' (unless every kernel size is 1), a dilation on an axis
    of kernel size > 1, activations other than tanh/sigmoid. ``use_bias=False`` maps to a conv without bias.
    """
    check_stride1_same_cell(
        weights.spec.layers,
        PEER,
        odd_kernels_only=True,
        why_geometry="it is one stride-1, undilated conv over cat([x, h]) padded by kernel_size // 2",
        why_activation="its cell uses sigmoid gates and tanh",
    )
    torch = require("torch", "torch-fused")
    state: dict[str, Any] = {}
    for i, layer in enumerate(weights.spec.layers):
        arrays = weights.layer(i)
        fused = reorder_gates(np.concatenate([arrays["kernel"], arrays["recurrent_kernel"]], axis=-2), GATE_ORDER,
                              FUSED_ORDER)
        axes = (layer.rank + 1, layer.rank, *range(layer.rank))  # (*k, C, 4F) -> (4F, C, *k)
        state[f"cell_list.{i}.conv.weight"] = torch.from_numpy(np.ascontiguousarray(fused.transpose(axes)))
        if "bias" in arrays:
            state[f"cell_list.{i}.conv.bias"] = torch.from_numpy(reorder_gates(arrays["bias"], GATE_ORDER, FUSED_ORDER))
    return state


def _layer_groups(state_dict: Any) -> list[dict[str, Any]]:
    """The state dict's tensors grouped per layer index (0..n-1), checking key names and the common prefix."""
    if not isinstance(state_dict, Mapping):
        fail("state dict", f"expected a mapping of name -> tensor, found {type(state_dict).__name__}")
    matches = {key: _KEY.fullmatch(str(key)) for key in state_dict}
    unknown = sorted(str(k) for k, m in matches.items() if m is None)
    if unknown:
        fail("state dict", f"unexpected keys {unknown[:5]}{' ...' if len(unknown) > 5 else ''}: expected only "
                           "[prefix]cell_list.<i>.conv.weight and .bias (the fused layout, nothing else)")
    if not matches:
        fail("state dict", "is empty: no cell_list.<i>.conv.weight found")
    prefixes = sorted({m.group("prefix") for m in matches.values()})
    if len(prefixes) > 1:
        fail("state dict", f"keys with several prefixes {prefixes}: expected one stack")
    groups: dict[int, dict[str, Any]] = {}
    for key, m in matches.items():
        groups.setdefault(int(m.group("index")), {})[m.group("name")] = state_dict[key]
    if sorted(groups) != list(range(len(groups))):
        fail("state dict", f"layer indices {sorted(groups)}: expected 0 ... {len(groups) - 1} without gaps")
    return [groups[i] for i in range(len(groups))]


def from_torch_fused(state_dict: Mapping[str, Any]) -> Weights:
    """Canonical Weights from a fused-layout state dict (torch tensors or NumPy arrays); spec from the shapes.

    Accepts one common key prefix (``encoder.cell_list.0.conv.weight`` ...) and no other keys.
    """
    entries = []
    for i, group in enumerate(_layer_groups(state_dict)):
        where = f"cell_list.{i}.conv"
        if "weight" not in group:
            fail(where, "missing weight")
        weight = as_float_array(group["weight"], f"{where}.weight")
        if not 3 <= weight.ndim <= 5 or weight.shape[0] % 4:
            fail(f"{where}.weight", f"expected shape (4F, C_in + F, *k) with 1-3 spatial axes, found {weight.shape}")
        f4, channels, ksize = weight.shape[0], weight.shape[1], tuple(int(k) for k in weight.shape[2:])
        f = f4 // 4
        c_in = channels - f
        if c_in < 1:
            fail(f"{where}.weight", f"has {channels} input channels, expected C_in + F with F = {f} and C_in >= 1")
        if any(k % 2 == 0 for k in ksize):
            fail(f"{where}.weight", f"even kernel {ksize}: the fused layout pads kernel_size // 2 on both sides, "
                                    "which only fits odd kernels (an even one would grow the state)")
        rank = len(ksize)
        hwio = reorder_gates(weight.transpose((*range(2, rank + 2), 1, 0)), FUSED_ORDER, GATE_ORDER)
        arrays = {
            "kernel": np.ascontiguousarray(hwio[..., :c_in, :]),
            "recurrent_kernel": np.ascontiguousarray(hwio[..., c_in:, :]),
        }
        if "bias" in group:
            bias = as_float_array(group["bias"], f"{where}.bias")
            check_shape(f"{where}.bias", bias, (f4,))
            arrays["bias"] = reorder_gates(bias, FUSED_ORDER, GATE_ORDER)
        entries.append((where, layer_spec(where, f, ksize, use_bias="bias" in group), arrays))
    return stack_weights(entries, "state dict")


def _check_zip_integrity(path: Path) -> None:
    """Verify the CRC-32 of every member of a zip-format ``.pt`` (torch.load does not check them, so a damaged
    tensor would load silently), and refuse members declaring more bytes than the file holds (torch stores
    members uncompressed). Legacy non-zip ``.pt`` files carry no checksum and are left to torch.load."""
    size = path.stat().st_size
    try:
        if not zipfile.is_zipfile(path):
            return
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if info.external_attr & 0x10 or info.is_dir():  # torch's reader then returns garbage for it
                    fail(str(path), f"member {info.filename!r} is marked as a directory: the file is damaged")
                if info.file_size > size:
                    fail(str(path), f"member {info.filename!r} declares {info.file_size} bytes, expected at most "
                                    f"the file size ({size}): a torch.save archive stores its members uncompressed")
            bad = zf.testzip()
    except ConversionError:
        raise
    except Exception as exc:  # noqa: BLE001 - zipfile raises BadZipFile, OSError, EOFError, zlib.error ...
        fail(str(path), f"is a damaged zip archive ({type(exc).__name__}: {exc})")
    if bad is not None:
        fail(str(path), f"member {bad!r} fails its CRC-32 check: the file is damaged")


def read_torch_fused_file(path: str | os.PathLike) -> Weights:
    """Canonical Weights from a ``.pt`` fused-layout state dict, loaded with ``weights_only=True``."""
    torch = require("torch", "torch-fused")
    path = Path(path)
    if not path.is_file():
        fail(str(path), "no such file")
    _check_zip_integrity(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types (UnpicklingError, RuntimeError ...)
        fail(str(path), f"cannot be read as a state dict with torch.load(weights_only=True) "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
    return prefixed(path, from_torch_fused, state)


def write_torch_fused_file(weights: Weights, path: str | os.PathLike) -> Path:
    """Write ``to_torch_fused(weights)`` with ``torch.save``, atomically."""
    torch = require("torch", "torch-fused")
    state = to_torch_fused(weights)
    return atomic_write(path, lambda fh: torch.save(state, fh))
