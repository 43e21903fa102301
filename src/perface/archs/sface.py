"""SFace: a MobileFaceNet-style face-recognition network (Zhong et al., 2021).

Layout of OpenCV's ``face_recognition_sface_2021dec`` model: a 3x3 stem, thirteen depthwise-separable
blocks, a linear 7x7x1024 -> 128 embedding and a final BatchNorm. Input: normalized RGB
``(x_255 - 127.5) / 128`` of shape (N, 3, 112, 112); output: (N, 128), not L2-normalized.
"""

from __future__ import annotations

import torch
from torch import nn

# (out_channels, depthwise stride) of the thirteen depthwise-separable blocks after the stem.
_BLOCKS: list[tuple[int, int]] = [
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
]


class ConvBNPReLU(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 1e-3) -> PReLU, one learned slope per channel."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)
        self.act = nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SFace(nn.Module):
    """SFace backbone, 112x112 input, ``embedding_size``-d output."""

    input_size = 112

    def __init__(self, embedding_size: int = 128, dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvBNPReLU(3, 32, 3)]
        cin = 32
        for cout, stride in _BLOCKS:
            layers.append(ConvBNPReLU(cin, cin, 3, stride, groups=cin))  # depthwise
            layers.append(ConvBNPReLU(cin, cout, 1))  # pointwise
            cin = cout
        self.features = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(cin, eps=2e-5)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(cin * 7 * 7, embedding_size)
        self.features_bn = nn.BatchNorm1d(embedding_size, eps=2e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.features(x))
        x = self.fc(self.dropout(torch.flatten(x, 1)))
        return self.features_bn(x)
