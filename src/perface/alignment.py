"""Alignment of faces to a model's landmark template, as torch modules (differentiable)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ResizeTo", "build_aligner"]


class ResizeTo(nn.Module):
    """Input already aligned to the model's template: only resize to ``size`` x ``size``."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] == (self.size, self.size):
            return x
        return F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)


def build_aligner(align: str, template: str, size: int) -> nn.Module:
    """The module mapping (N, 3, H, W) [0, 1] input to (N, 3, size, size) aligned to ``template``."""
    if align == "none":
        return ResizeTo(size)
    raise ValueError(f"unknown align mode {align!r}; use 'none'")
