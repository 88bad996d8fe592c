"""The popular fused-conv PyTorch ConvLSTM, the peer of the ``torch-fused`` benchmark variants: one ``Conv2d`` per
layer over ``cat([x, h])`` giving the gates i, f, o, g. Its state dict layout is ``cell_list.{i}.conv.{weight,bias}``,
what :func:`implementations.interop.to_torch_fused` writes.

No framework is imported at module import time.
"""

from __future__ import annotations

from typing import Any

from implementations.weights import Weights


def fused_module(torch: Any, spec: Any) -> Any:
    """The peer module for a 2-D :class:`~implementations.spec.StackSpec` (zero initial states, 'same' padding, the
    default activations): input ``(B, T, C, H, W)``, output the last layer's hidden states ``(B, T, F, H, W)``."""
    nn = torch.nn

    class Cell(nn.Module):
        def __init__(self, cin: int, f: int, k: tuple[int, ...], bias: bool) -> None:
            super().__init__()
            self.f = f
            self.conv = nn.Conv2d(cin + f, 4 * f, k, padding=tuple(n // 2 for n in k), bias=bias)

        def forward(self, x: Any, h: Any, c: Any) -> tuple[Any, Any]:
            i, f, o, g = torch.split(self.conv(torch.cat([x, h], dim=1)), self.f, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            return torch.sigmoid(o) * torch.tanh(c), c

    class FusedConvLSTM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cell_list = nn.ModuleList(
                Cell(spec.layer_input_channels(i), layer.filters, layer.kernel_size, layer.use_bias)
                for i, layer in enumerate(spec.layers)
            )

        def forward(self, x: Any) -> Any:
            for cell in self.cell_list:
                h = x.new_zeros(x.shape[0], cell.f, *x.shape[3:])
                c = torch.zeros_like(h)
                outs = []
                for t in range(x.shape[1]):
                    h, c = cell(x[:, t], h, c)
                    outs.append(h)
                x = torch.stack(outs, dim=1)
            return x

    return FusedConvLSTM()


def build(weights: Weights) -> Any:
    """The peer module holding ``weights`` (parameters in torch's default dtype, on the CPU: move and cast it with
    ``.to``). NotImplementedError unless the stack is 2-D; interop's ValueError for what the peer cannot express."""
    import torch

    from implementations.interop import to_torch_fused

    if weights.spec.rank != 2:
        raise NotImplementedError("the fused peer module is 2-D only")
    module = fused_module(torch, weights.spec)
    module.load_state_dict(to_torch_fused(weights))
    return module
