"""The Keras peer: a stack of stock ``keras.layers.ConvLSTM{1,2,3}D`` layers (the ``keras-builtin`` variant), fed
the canonical weights through :func:`implementations.interop.to_keras`.

No framework is imported at module import time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from implementations.weights import Weights


def build(weights: Weights, input_spatial: Sequence[int]) -> Any:
    """A built ``keras.Sequential`` of stock ConvLSTM layers holding ``weights`` bit for bit, every layer returning
    its sequence, for frames of spatial shape ``input_spatial`` (*S). Call it inside ``keras.device``."""
    from implementations.interop import to_keras

    return to_keras(weights, tuple(input_spatial), return_sequences=True)
