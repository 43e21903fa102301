"""Frozen copies of networks for no-gradient inference on the CPU (the photo pipeline's detector
and embedding network).

Why: torch sends an unstrided 1x1 convolution of a batch under 16 to its im2col path
(``_slow_conv2d_forward``) when it runs on one thread, which is how DataLoader workers run.
SFace is mostly such convolutions: measured on the 2-core EPYC, 8 faces on 1 thread, 15.7 ms per
face as built, 7.0 ms with every convolution through oneDNN on channels_last tensors
(BatchNorm folded in; outputs equal to 2e-6).
"""

from __future__ import annotations

import copy
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["OneDNNConv2d", "onednn_convolutions", "frozen_for_cpu"]


class OneDNNConv2d(nn.Module):
    """A frozen ``nn.Conv2d`` that always runs through oneDNN (``aten::mkldnn_convolution``),
    for float32 CPU tensors (N, C, H, W), fastest in channels_last; any other input goes through
    ``F.conv2d``. Same outputs as the convolution it copies (to float rounding)."""

    weight: torch.Tensor  # buffers (register_buffer in __init__)
    bias: Optional[torch.Tensor]

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.register_buffer("weight", conv.weight.detach().contiguous(memory_format=torch.channels_last))
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().clone())
        self.options: tuple = (conv.padding, conv.stride, conv.dilation, conv.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled():
            return torch.ops.aten.mkldnn_convolution(x, self.weight, self.bias, *self.options)
        padding, stride, dilation, groups = self.options
        return F.conv2d(x, self.weight, self.bias, stride, padding, dilation, groups)


def onednn_convolutions(module: nn.Module) -> nn.Module:
    """Replace every zero-padded ``nn.Conv2d`` of ``module`` by :class:`OneDNNConv2d` (in place;
    a no-op where torch has no oneDNN)."""
    if not torch.backends.mkldnn.is_available():
        return module
    for name, child in module.named_children():
        if isinstance(child, nn.Conv2d) and child.padding_mode == "zeros" and isinstance(child.padding, tuple):
            setattr(module, name, OneDNNConv2d(child))
        else:
            onednn_convolutions(child)
    return module


def frozen_for_cpu(net: nn.Module) -> nn.Module:
    """An inference copy of ``net`` (eval mode) for the CPU: BatchNorm folded into the
    convolutions (``torch.fx``), parameters channels_last, convolutions through oneDNN. Feed it
    channels_last float32 input without gradients. Raises whatever ``torch.fx`` raises for a
    network it cannot trace (callers keep ``net`` then)."""
    from torch.fx.experimental.optimization import fuse

    folded = fuse(copy.deepcopy(net).eval().requires_grad_(False))
    return onednn_convolutions(folded.to(memory_format=torch.channels_last))
