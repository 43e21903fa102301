"""RetinaFace mobilenet0.25 as a module, its anchors and the decoding of its outputs.

The layers (MobileNetV1 stages, FPN, SSH, heads) are facexlib's, from
``facexlib/detection/retinaface_net.py``, which needs only torch. That file is loaded by itself:
importing it through the ``facexlib`` package would run facexlib's ``__init__``, which imports
all of facexlib, OpenCV and torchvision's models and ops (about 1.5 s of a 4 s cold start of
``perface similarity``, for nothing the detector uses). The module's parameter names are those of
facexlib's ``RetinaFace``, so its converted weights load unchanged.

Anchors and decoding follow RetinaFace (Deng et al., 2020) with facexlib's mobilenet0.25
configuration: anchor sides 16/32, 64/128 and 256/512 px on feature maps of stride 8, 16 and
32; offsets scaled by the variances 0.1 (centres, landmarks) and 0.2 (log sizes).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import List, Tuple

import torch
from torch import nn

__all__ = ["RetinaFaceMobile", "anchors", "decode_boxes", "decode_landmarks", "nms", "VARIANCES"]

ANCHOR_SIDES = ((16, 32), (64, 128), (256, 512))  # px, per feature map
STRIDES = (8, 16, 32)
VARIANCES = (0.1, 0.2)
CHANNELS_IN, CHANNELS_OUT = 32, 64  # facexlib's cfg_mnet "in_channel" / "out_channel"


@functools.lru_cache(maxsize=None)
def _facexlib_layers() -> ModuleType:
    """``facexlib/detection/retinaface_net.py``, loaded without the facexlib package's ``__init__``."""
    spec = importlib.util.find_spec("facexlib")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("face detection needs facexlib: pip install facexlib (a dependency of perface)")
    path = Path(list(spec.submodule_search_locations)[0]) / "detection" / "retinaface_net.py"
    file_spec = importlib.util.spec_from_file_location("perface._facexlib_retinaface_net", path)
    assert file_spec is not None and file_spec.loader is not None
    module = importlib.util.module_from_spec(file_spec)
    file_spec.loader.exec_module(module)
    return module


class _Stages(nn.Module):
    """The first three stages of facexlib's MobileNetV1 (what RetinaFace's ``body`` keeps)."""

    def __init__(self) -> None:
        super().__init__()
        backbone = _facexlib_layers().MobileNetV1()
        self.stage1, self.stage2, self.stage3 = backbone.stage1, backbone.stage2, backbone.stage3

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        c1 = self.stage1(x)
        c2 = self.stage2(c1)
        return [c1, c2, self.stage3(c2)]


class RetinaFaceMobile(nn.Module):
    """RetinaFace with a mobilenet0.25 backbone: BGR 0..255 minus mean (N, 3, H, W) ->
    ``(boxes (N, A, 4), scores (N, A, 2) softmax, landmarks (N, A, 10))`` per anchor."""

    def __init__(self) -> None:
        super().__init__()
        layers = _facexlib_layers()
        self.body = _Stages()
        self.fpn = layers.FPN([CHANNELS_IN * 2, CHANNELS_IN * 4, CHANNELS_IN * 8], CHANNELS_OUT)
        self.ssh1 = layers.SSH(CHANNELS_OUT, CHANNELS_OUT)
        self.ssh2 = layers.SSH(CHANNELS_OUT, CHANNELS_OUT)
        self.ssh3 = layers.SSH(CHANNELS_OUT, CHANNELS_OUT)
        self.ClassHead = layers.make_class_head(fpn_num=3, inchannels=CHANNELS_OUT)
        self.BboxHead = layers.make_bbox_head(fpn_num=3, inchannels=CHANNELS_OUT)
        self.LandmarkHead = layers.make_landmark_head(fpn_num=3, inchannels=CHANNELS_OUT)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fpn = self.fpn(self.body(x))
        features = [self.ssh1(fpn[0]), self.ssh2(fpn[1]), self.ssh3(fpn[2])]
        boxes = torch.cat([head(f) for head, f in zip(self.BboxHead, features)], dim=1)
        scores = torch.cat([head(f) for head, f in zip(self.ClassHead, features)], dim=1).softmax(dim=-1)
        landmarks = torch.cat([head(f) for head, f in zip(self.LandmarkHead, features)], dim=1)
        return boxes, scores, landmarks


@functools.lru_cache(maxsize=32)
def anchors(height: int, width: int) -> torch.Tensor:
    """(A, 4) anchors ``(cx, cy, w, h)`` as fractions of a ``height`` x ``width`` network input,
    in the network's output order: per feature map, row-major cells, then the two sides."""
    out = []
    for stride, sides in zip(STRIDES, ANCHOR_SIDES):
        rows, cols = -(-height // stride), -(-width // stride)
        cy, cx = torch.meshgrid((torch.arange(rows, dtype=torch.float64) + 0.5) * stride / height,
                                (torch.arange(cols, dtype=torch.float64) + 0.5) * stride / width, indexing="ij")
        cells = []
        for side in sides:
            cells.append(torch.stack([cx, cy, torch.full_like(cx, side / width), torch.full_like(cy, side / height)],
                                     dim=-1))
        out.append(torch.stack(cells, dim=2).reshape(-1, 4))
    return torch.cat(out).float()


def decode_boxes(offsets: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """(A, 4) regression outputs + anchors -> boxes ``x0, y0, x1, y1`` as input fractions."""
    centre = priors[:, :2] + offsets[:, :2] * VARIANCES[0] * priors[:, 2:]
    size = priors[:, 2:] * torch.exp(offsets[:, 2:] * VARIANCES[1])
    return torch.cat([centre - size / 2, centre + size / 2], dim=1)


def decode_landmarks(offsets: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """(A, 10) regression outputs + anchors -> (A, 5, 2) landmarks as input fractions."""
    return priors[:, None, :2] + offsets.view(-1, 5, 2) * VARIANCES[0] * priors[:, None, 2:]


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression: indices of the kept ``boxes`` (K, 4, xyxy), highest score
    first; a box is dropped when its IoU with a kept, higher-scoring box exceeds the threshold."""
    order = scores.argsort(descending=True)
    boxes = boxes[order]
    area = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    alive = torch.ones(len(boxes), dtype=torch.bool)
    kept = []
    for i in range(len(boxes)):
        if not alive[i]:
            continue
        kept.append(i)
        lo = torch.maximum(boxes[i, :2], boxes[:, :2])
        hi = torch.minimum(boxes[i, 2:], boxes[:, 2:])
        inter = (hi - lo).clamp(min=0).prod(dim=1)
        alive &= inter <= iou_threshold * (area[i] + area - inter)
    return order[torch.tensor(kept, dtype=torch.long)]
