"""Improved ResNets (iresnet) as trained by insightface's ``arcface_torch``.

Parameter names and shapes equal those of the public ``arcface_torch`` checkpoints
(e.g. ``ms1mv3_arcface_r50_fp16.pth``), so they load with ``strict=True``.
Input: normalized RGB ``(x_255 - 127.5) / 127.5`` of shape (N, 3, 112, 112); output: (N, 512),
not L2-normalized.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

_DEPTHS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 14, 3], 100: [3, 13, 30, 3]}


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


class IBasicBlock(nn.Module):
    """BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN, plus the (projected) identity."""

    def __init__(self, cin: int, cout: int, stride: int = 1, downsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = _conv3x3(cin, cout)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.prelu = nn.PReLU(cout)
        self.conv2 = _conv3x3(cout, cout, stride)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity


class IResNet(nn.Module):
    """iresnet backbone: 112x112 input, ``num_features``-d embedding."""

    input_size = 112

    def __init__(self, layers: list[int], num_features: int = 512, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        cin = 64
        stages = []
        for width, depth in zip((64, 128, 256, 512), layers):
            downsample = nn.Sequential(nn.Conv2d(cin, width, 1, 2, bias=False), nn.BatchNorm2d(width, eps=1e-5))
            blocks = [IBasicBlock(cin, width, 2, downsample)]
            blocks += [IBasicBlock(width, width) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(512 * 7 * 7, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


def _make(depth: int, **kwargs: Any) -> IResNet:
    return IResNet(_DEPTHS[depth], **kwargs)


def iresnet18(**kwargs: Any) -> IResNet:
    """iresnet-18 ([2, 2, 2, 2] blocks)."""
    return _make(18, **kwargs)


def iresnet34(**kwargs: Any) -> IResNet:
    """iresnet-34 ([3, 4, 6, 3] blocks)."""
    return _make(34, **kwargs)


def iresnet50(**kwargs: Any) -> IResNet:
    """iresnet-50 ([3, 4, 14, 3] blocks), the PerFace paper's backbone."""
    return _make(50, **kwargs)


def iresnet100(**kwargs: Any) -> IResNet:
    """iresnet-100 ([3, 13, 30, 3] blocks)."""
    return _make(100, **kwargs)
