"""Convert ConvLSTM weights between our ``.npz`` format and Keras 3, Keras 2 / tf.keras, flax and PyTorch.

Python API (each returns or takes canonical :class:`~implementations.weights.Weights`):

=====================  =============================  ==========================================
peer                   import (peer -> ours)          export (ours -> peer)
=====================  =============================  ==========================================
Keras 3 (live)         :func:`from_keras`             :func:`to_keras` (a built keras.Sequential)
Keras 3 ``.keras``     :func:`read_keras_file`        :func:`write_keras_file`
Keras 2 ``.h5``        :func:`read_keras2_h5`         -- (import only)
flax.linen params      :func:`from_flax`              :func:`to_flax`
flax ``.msgpack``      :func:`read_flax_file`         :func:`write_flax_file`
fused PyTorch dict     :func:`from_torch_fused`       :func:`to_torch_fused`
fused PyTorch ``.pt``  :func:`read_torch_fused_file`  :func:`write_torch_fused_file`
=====================  =============================  ==========================================

File level: :func:`read_weights`, :func:`write_weights` and :func:`convert` pick the format by name or by
extension (:data:`FORMATS`). Arrays are copied, never recomputed, except the flax bias sum; a conversion the
target cannot express exactly raises :class:`ConversionError` (a WeightFileError) naming the layer, the
option and the reason. No framework is imported until a function needs it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..fileio import atomic_path
from ..weights import Weights, load, save
from ._common import ConversionError, reorder_gates
from .flax_io import from_flax, read_flax_file, to_flax, write_flax_file
from .keras_io import from_keras, read_keras2_h5, read_keras_file, to_keras, write_keras_file
from .torch_io import from_torch_fused, read_torch_fused_file, to_torch_fused, write_torch_fused_file

__all__ = [
    "FORMATS",
    "WRITABLE_FORMATS",
    "ConversionError",
    "atomic_path",
    "convert",
    "from_flax",
    "from_keras",
    "from_torch_fused",
    "infer_format",
    "read_flax_file",
    "read_keras2_h5",
    "read_keras_file",
    "read_torch_fused_file",
    "read_weights",
    "reorder_gates",
    "to_flax",
    "to_keras",
    "to_torch_fused",
    "write_flax_file",
    "write_keras_file",
    "write_torch_fused_file",
    "write_weights",
]

#: Format name -> file extensions that imply it.
FORMATS: dict[str, tuple[str, ...]] = {
    "npz": (".npz",),
    "keras": (".keras",),
    "keras2-h5": (".h5", ".hdf5"),
    "torch-fused": (".pt", ".pth"),
    "flax": (".msgpack",),
}
WRITABLE_FORMATS = ("npz", "keras", "torch-fused", "flax")
_READERS = {
    "npz": load,
    "keras": read_keras_file,
    "keras2-h5": read_keras2_h5,
    "torch-fused": read_torch_fused_file,
    "flax": read_flax_file,
}


def infer_format(path: str | os.PathLike, fmt: str | None = None) -> str:
    """``fmt`` if given (checked), else the format implied by ``path``'s extension."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise ConversionError(f"unknown format {fmt!r}: expected one of {sorted(FORMATS)}")
        return fmt
    suffix = Path(path).suffix.lower()
    for name, extensions in FORMATS.items():
        if suffix in extensions:
            return name
    known = ", ".join(f"{e} ({n})" for n, exts in FORMATS.items() for e in exts)
    raise ConversionError(f"{path}: cannot infer the format from the extension {suffix or '(none)'!r} "
                          f"(known: {known}); name it with --from/--to")


def read_weights(path: str | os.PathLike, fmt: str | None = None) -> Weights:
    """Canonical Weights from a file of format ``fmt`` (default: from the extension)."""
    return _READERS[infer_format(path, fmt)](path)


def write_weights(
    weights: Weights,
    path: str | os.PathLike,
    fmt: str | None = None,
    *,
    input_spatial: Sequence[int] | None = None,
    flax_use_bias: bool | None = None,
) -> Path:
    """Write ``weights`` atomically as format ``fmt`` (default: from the extension).

    ``input_spatial``: the frame size, required by (and only by) 'keras'. ``flax_use_bias``: only for 'flax'
    (see :func:`to_flax`).
    """
    fmt = infer_format(path, fmt)
    if fmt not in WRITABLE_FORMATS:
        raise ConversionError(f"format {fmt!r} is import-only: write one of {list(WRITABLE_FORMATS)}")
    if input_spatial is not None and fmt != "keras":
        raise ConversionError(f"input_spatial (--input-spatial) is only used by the keras format, not {fmt!r}")
    if flax_use_bias is not None and fmt != "flax":
        raise ConversionError(f"flax_use_bias (--flax-use-bias) is only used by the flax format, not {fmt!r}")
    if fmt == "npz":
        return save(path, weights)
    if fmt == "keras":
        return write_keras_file(weights, path, input_spatial)
    if fmt == "torch-fused":
        return write_torch_fused_file(weights, path)
    return write_flax_file(weights, path, use_bias=flax_use_bias)


def convert(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    src_format: str | None = None,
    dst_format: str | None = None,
    input_spatial: Sequence[int] | None = None,
    flax_use_bias: bool | None = None,
) -> tuple[Weights, str, str]:
    """Read ``src`` and write ``dst``; returns (the canonical weights, source format, destination format).

    The destination is checked before anything is read, and written only when the whole conversion succeeded.
    """
    dst_fmt = infer_format(dst, dst_format)
    if dst_fmt not in WRITABLE_FORMATS:
        raise ConversionError(f"format {dst_fmt!r} is import-only: write one of {list(WRITABLE_FORMATS)}")
    src_fmt = infer_format(src, src_format)
    weights = read_weights(src, src_fmt)
    write_weights(weights, dst, dst_fmt, input_spatial=input_spatial, flax_use_bias=flax_use_bias)
    return weights, src_fmt, dst_fmt
