"""ConvLSTM in JAX / Flax NNX, laid out like every framework's package:

* :mod:`.model` -- the native model: the pure functional core (:func:`convlstm_apply`, :func:`layer_apply`,
  :func:`layer_step`, :func:`conv_nd`, :func:`params_from_weights`) and the Flax NNX modules :class:`ConvLSTM`,
  :class:`ConvLSTMLayer` over it;
* :mod:`.loop` -- the fast backward pieces: chunked gradient convolutions and im2col kernel gradients on the CPU
  (:func:`resolve_backward_chunk`, :func:`im2col_pays`);
* :mod:`.nowcast` -- the encoder-forecaster model of docs/model.md on that core: :func:`encoder_forecaster_apply`,
  :func:`model_loss`, the NNX module :class:`EncoderForecaster` and :class:`ModelRunner`;
* :mod:`.runner` -- :class:`Runner` (the :class:`implementations.api.Runner` contract) and the backend the benchmarks
  share with it (:func:`~.runner.devices`, :func:`~.runner.resolve_device`, :func:`~.runner.resolve_precision`).

The names below are re-exported so that ``jax_impl.X`` works for each of them. Settings read at trace time (the
``CPU_*`` and ``IM2COL_*`` constants) are read from :mod:`.loop`: patch them there, not here.
"""

from __future__ import annotations

from .. import api
from . import loop, model, nowcast, runner
from .loop import (
    CPU_BACKWARD_CHUNK,
    CPU_MAX_BACKWARD_CHUNKS,
    DEFAULT_BACKWARD_CHUNK,
    IM2COL_FRAMES,
    IM2COL_MIN_IN_CHANNELS,
    IM2COL_MIN_OUT_CHANNELS,
    im2col_pays,
    resolve_backward_chunk,
)
from .model import (
    DEFAULT_PRECISION,
    DEFAULT_UNROLL,
    ConvLSTM,
    ConvLSTMLayer,
    conv_nd,
    convlstm_apply,
    layer_apply,
    layer_step,
    params_from_weights,
)
from .nowcast import (
    EncoderForecaster,
    ModelRunner,
    encoder_forecaster_apply,
    model_loss,
    model_params_from_weights,
    model_params_to_arrays,
)
from .runner import Runner, devices, resolve_device, resolve_precision

__all__ = [
    "CPU_BACKWARD_CHUNK",
    "CPU_MAX_BACKWARD_CHUNKS",
    "DEFAULT_BACKWARD_CHUNK",
    "DEFAULT_PRECISION",
    "DEFAULT_UNROLL",
    "IM2COL_FRAMES",
    "IM2COL_MIN_IN_CHANNELS",
    "IM2COL_MIN_OUT_CHANNELS",
    "ConvLSTM",
    "ConvLSTMLayer",
    "EncoderForecaster",
    "ModelRunner",
    "Runner",
    "api",
    "conv_nd",
    "convlstm_apply",
    "devices",
    "encoder_forecaster_apply",
    "im2col_pays",
    "layer_apply",
    "layer_step",
    "loop",
    "model",
    "model_loss",
    "model_params_from_weights",
    "model_params_to_arrays",
    "nowcast",
    "params_from_weights",
    "resolve_backward_chunk",
    "resolve_device",
    "resolve_precision",
    "runner",
]
