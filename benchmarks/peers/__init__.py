"""Peer implementations the benchmarks compare ours with, one module each, fed the canonical weights through
:mod:`implementations.interop`: ``torch_fused`` (the popular fused-conv PyTorch ConvLSTM), ``keras_builtin``
(``keras.layers.ConvLSTM2D`` stacks), ``flax_linen`` (``flax.linen.ConvLSTMCell`` under ``nn.RNN``).

No module here imports a framework at import time.
"""
