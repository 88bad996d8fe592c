"""PyTorch implementation of the ConvLSTM stack (:mod:`implementations.spec`).

* :mod:`.model`: the native ``nn.Module`` s (:class:`ConvLSTM`, :class:`ConvLSTMLayer`), channels-first, with the
  activations, the layout helpers and the canonical <-> torch weight layout conversion;
* :mod:`.loop`: the layer's fast time loop and its hand-written gradient;
* :mod:`.nowcast`: the encoder-forecaster model of ``docs/model.md`` (:class:`EncoderForecaster`, built from the
  stacks above; its forecaster's first layer reads no input) and its NumPy-facing :class:`ModelRunner`;
* :mod:`.runner`: the :class:`Runner` of :mod:`implementations.api`, and the backend the benchmarks share (devices,
  float32 precision on CUDA, versions).

This package is the only one of :mod:`implementations` that imports torch.
"""

from __future__ import annotations

# The private names are re-exported for the tests that check them directly (the private-API query, the CPU tanh
# identity).
from .loop import _keeps_graph as _keeps_graph
from .model import ConvLSTM, ConvLSTMLayer, canonical_to_torch, torch_to_canonical
from .model import _tanh as _tanh
from .model import _use_identity_tanh as _use_identity_tanh
from .nowcast import EncoderForecaster, ModelRunner
from .runner import Runner, devices, precision, resolve_device

__all__ = [
    "ConvLSTM",
    "ConvLSTMLayer",
    "EncoderForecaster",
    "ModelRunner",
    "Runner",
    "canonical_to_torch",
    "devices",
    "precision",
    "resolve_device",
    "torch_to_canonical",
]
