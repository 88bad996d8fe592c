"""Keras 3 implementation of the ConvLSTM stack (:mod:`implementations.spec`), on any Keras backend.

* :mod:`.model`: :class:`ConvLSTMStack`, the native ``keras.layers.Layer`` (``keras.ops`` only), its initialiser,
  activations, config and canonical weight get/set;
* :mod:`.loop`: the time loop (hoisted input convolution, step, the forms chosen under TF XLA) and the backend
  dispatch for tracing and gradients (``_backend_*``);
* :mod:`.runner`: :class:`Runner` (the :class:`implementations.api.Runner` contract), and the device list, device
  choice and precision context the benchmarks use as well;
* :mod:`.nowcast`: :class:`EncoderForecaster`, the encoder-forecaster model (docs/model.md) as a ``keras.Model``
  built from two stacks, and its :class:`ModelRunner`.

This package is the only one of the project that imports Keras or a Keras backend (``KERAS_BACKEND`` picks it).
"""

from __future__ import annotations

from . import loop, model, nowcast, runner

# The private names are re-exported for the tests; to patch one, patch the module that uses it (``loop``).
from .loop import (  # noqa: F401
    MATMUL_INPUT_CHANNELS,
    _backend_compile,
    _backend_inference,
    _backend_traced_by_xla,
    _backend_value_and_grad,
    _conv_as_matmul,
    _split_steps,
    _tf_traced_by_xla,
)
from .model import ACTIVATIONS, RECURRENT_ACTIVATIONS, ConvLSTMStack, UnitForgetBias
from .nowcast import EncoderForecaster, ModelRunner
from .runner import Runner, devices, precision, resolve_device

__all__ = [
    "ACTIVATIONS",
    "MATMUL_INPUT_CHANNELS",
    "RECURRENT_ACTIVATIONS",
    "ConvLSTMStack",
    "EncoderForecaster",
    "ModelRunner",
    "Runner",
    "UnitForgetBias",
    "devices",
    "loop",
    "model",
    "nowcast",
    "precision",
    "resolve_device",
    "runner",
]
