"""RetinaFace mobilenet0.25 as a module, its anchors and the decoding of its outputs.

The layers (MobileNetV1 stages, FPN, SSH, heads) are facexlib's, from
``facexlib/detection/retinaface_net.py``, which needs only torch. That file is loaded by itself:
importing it through the ``facexlib`` package would run facexlib's ``__init__``, which imports
all of facexlib, OpenCV and torchvision's models and ops (about 1.5 s of a 4 s cold start of
``perface similarity``, for nothing the detector uses). The module's parameter names are those of
facexlib's ``RetinaFace``, so its converted weights load unchanged.

Anchors and decoding follow RetinaFace (Deng et al., 2020) with facexlib's mobilenet0.25
configuration: anchor sides 16/32, 64/128 and 256/512 px on feature maps of stride 8, 16 and
32 (the three *levels*); offsets scaled by the variances 0.1 (centres, landmarks) and 0.2 (log
sizes). The feature pyramid runs top-down, so the two coarse levels (faces of about 50 px and
more) do not depend on the fine one: :meth:`RetinaFaceMobile.coarse` predicts them alone and
:meth:`RetinaFaceMobile.fine` adds the fine level from the same intermediate features.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["RetinaFaceMobile", "anchors", "decode_boxes", "decode_landmarks", "nms", "VARIANCES", "LEVELS"]

ANCHOR_SIDES = ((16, 32), (64, 128), (256, 512))  # px, per feature map
STRIDES = (8, 16, 32)
VARIANCES = (0.1, 0.2)
LEVELS = (0, 1, 2)  # feature maps, finest first: the order of the network's outputs and of anchors()
CHANNELS_IN, CHANNELS_OUT = 32, 64  # facexlib's cfg_mnet "in_channel" / "out_channel"


@functools.cache
def _facexlib_layers() -> ModuleType:
    """``facexlib/detection/retinaface_net.py``, loaded without the facexlib package's ``__init__``."""
    spec = importlib.util.find_spec("facexlib")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("face detection needs facexlib: pip install facexlib (a dependency of perface)")
    path = Path(next(iter(spec.submodule_search_locations))) / "detection" / "retinaface_net.py"
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

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c1 = self.stage1(x)
        c2 = self.stage2(c1)
        return [c1, c2, self.stage3(c2)]


Outputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # boxes (N, A, 4), scores (N, A, 2), landmarks (N, A, 10)


class RetinaFaceMobile(nn.Module):
    """RetinaFace with a mobilenet0.25 backbone: BGR 0..255 minus mean (N, 3, H, W) ->
    ``(boxes (N, A, 4), scores (N, A, 2) softmax, landmarks (N, A, 10))`` per anchor.

    ``forward`` is ``fine(*coarse(x))`` with the two joined: every level. :meth:`coarse` alone
    costs 40% of it (1 thread, 640 x 512: 5.8 against 14.6 ms; the fine level's 3 x 3
    convolutions on the stride-8 map are the network's largest), and gives the same outputs for
    its levels as the whole network.
    """

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

    def forward(self, x: torch.Tensor) -> Outputs:
        coarse, c1, p2 = self.coarse(x)
        return join(self.fine(c1, p2), coarse)

    def coarse(self, x: torch.Tensor) -> tuple[Outputs, torch.Tensor, torch.Tensor]:
        """The outputs of levels 1 and 2 (anchors 64 to 512 px), and what :meth:`fine` needs:
        the backbone's stride-8 features and the pyramid's stride-16 map."""
        c1, c2, c3 = self.body(x)
        fpn = self.fpn  # facexlib's FPN.forward, top-down, without its finest output
        p3 = fpn.output3(c3)
        p2 = fpn.output2(c2)
        p2 = fpn.merge2(p2 + F.interpolate(p3, size=[p2.size(2), p2.size(3)], mode="nearest"))
        return self._heads([(1, self.ssh2(p2)), (2, self.ssh3(p3))]), c1, p2

    def fine(self, c1: torch.Tensor, p2: torch.Tensor) -> Outputs:
        """The outputs of level 0 (anchors 16 and 32 px) from :meth:`coarse`'s features."""
        fpn = self.fpn
        p1 = fpn.output1(c1)
        p1 = fpn.merge1(p1 + F.interpolate(p2, size=[p1.size(2), p1.size(3)], mode="nearest"))
        return self._heads([(0, self.ssh1(p1))])

    def _heads(self, features: Sequence[tuple[int, torch.Tensor]]) -> Outputs:
        boxes = torch.cat([self.BboxHead[i](f) for i, f in features], dim=1)
        scores = torch.cat([self.ClassHead[i](f) for i, f in features], dim=1).softmax(dim=-1)
        landmarks = torch.cat([self.LandmarkHead[i](f) for i, f in features], dim=1)
        return boxes, scores, landmarks


def join(*outputs: Outputs) -> Outputs:
    """Outputs of several levels (finest first) as one network's outputs."""
    boxes, scores, landmarks = (torch.cat(parts, dim=1) for parts in zip(*outputs))
    return boxes, scores, landmarks


@functools.lru_cache(maxsize=32)
def anchors(height: int, width: int, levels: tuple[int, ...] = LEVELS) -> torch.Tensor:
    """(A, 4) anchors ``(cx, cy, w, h)`` as fractions of a ``height`` x ``width`` network input,
    in the network's output order: per feature map of ``levels``, row-major cells, then the two
    sides."""
    out = []
    for level in levels:
        stride, sides = STRIDES[level], ANCHOR_SIDES[level]
        rows, cols = -(-height // stride), -(-width // stride)
        cy, cx = torch.meshgrid(
            (torch.arange(rows, dtype=torch.float64) + 0.5) * stride / height,
            (torch.arange(cols, dtype=torch.float64) + 0.5) * stride / width,
            indexing="ij",
        )
        cells = []
        for side in sides:
            cells.append(
                torch.stack([cx, cy, torch.full_like(cx, side / width), torch.full_like(cy, side / height)], dim=-1)
            )
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
