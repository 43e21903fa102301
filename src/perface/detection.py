"""Face detection: facexlib's RetinaFace (mobilenet0.25) with the weights shipped in perface.

facexlib provides the architecture, the anchor priors and the box/landmark decoding; the
weights are ``perface/weights/retinaface_mnet025.safetensors`` (converted by
``tools/convert_retinaface.py``), so nothing is downloaded. facexlib is imported only here, and
only when a detector is first built.

Coordinates follow the pixel-centre convention of OpenCV: pixel ``(i, j)`` (row, column) has
its centre at ``x = j, y = i``. Landmarks are, in order: left eye, right eye, nose tip, left
mouth corner, right mouth corner ("left" = smaller x in the image).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, List, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from .hub import resolve_weights
from .registry import DETECTOR

__all__ = ["Face", "Detector", "get_detector", "detect_faces"]


MAX_SIDE = 640  # detect on a copy whose long side is at most this many pixels
_BGR_MEAN = (104.0, 117.0, 123.0)  # the network's input: BGR 0..255 minus this mean


@dataclass(frozen=True)
class Face:
    """One detected face, in input pixel coordinates (pixel-centre convention).

    ``box``: (4,) float32 ``x0, y0, x1, y1``; ``score``: detector confidence in [0, 1];
    ``landmarks``: (5, 2) float32 ``(x, y)`` of left eye, right eye, nose, left and right mouth
    corners.
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray

    @property
    def prominence(self) -> float:
        """Box area times score: how faces are ranked (most prominent first)."""
        w, h = float(self.box[2] - self.box[0]), float(self.box[3] - self.box[1])
        return max(w, 0.0) * max(h, 0.0) * self.score


@functools.lru_cache(maxsize=32)
def _priors(height: int, width: int) -> torch.Tensor:
    """facexlib's anchor priors (cx, cy, w, h, normalized) for a network input of this size."""
    from facexlib.detection.retinaface import generate_config
    from facexlib.detection.retinaface_utils import PriorBox

    return PriorBox(generate_config(DETECTOR.arch), image_size=(height, width)).forward()


class Detector:
    """RetinaFace mobilenet0.25 on one device; ``detector(images)`` -> faces per image.

    Args:
        device: torch device the network runs on.
        threshold: minimum confidence of a kept face.
        nms_threshold: IoU above which overlapping detections are merged.
        max_side: long side of the copy the network sees (larger inputs are downscaled).
    """

    def __init__(self, device: Union[str, torch.device] = "cpu", threshold: float = 0.8,
                 nms_threshold: float = 0.4, max_side: int = MAX_SIDE) -> None:
        from facexlib.detection.retinaface import RetinaFace  # architecture only; never its downloader
        from safetensors.torch import load_file

        self.device = torch.device(device)
        self.threshold = threshold
        self.nms_threshold = nms_threshold
        self.max_side = max_side
        net = RetinaFace(network_name=DETECTOR.arch, device=self.device)
        net.load_state_dict(load_file(str(resolve_weights(DETECTOR.weights, DETECTOR.name))), strict=True)
        # channels_last: measured 21 -> 15 ms per 640x393 photo on a 2-core CPU (same outputs)
        self.net = net.eval().requires_grad_(False).to(memory_format=torch.channels_last)
        self._variance = net.cfg["variance"]
        self._mean = torch.tensor(_BGR_MEAN, device=self.device).view(1, 3, 1, 1)

    def prepare(self, images: torch.Tensor) -> Tuple[torch.Tensor, Tuple[float, float]]:
        """RGB (N, 3, H, W) in [0, 1] -> network input (BGR 0..255 minus mean, long side <= max_side)
        and the ``(sx, sy)`` scale from input to network pixels."""
        images = images.detach().to(self.device, torch.float32)
        h, w = images.shape[-2:]
        scale = min(1.0, self.max_side / max(h, w))
        if scale < 1.0:
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
        sy, sx = images.shape[-2] / h, images.shape[-1] / w
        batch = (images.flip(1) * 255.0 - self._mean).contiguous(memory_format=torch.channels_last)
        return batch, (sx, sy)

    def postprocess(self, outputs: Sequence[torch.Tensor], size: Sequence[int],
                    scale: Tuple[float, float]) -> List[List[Face]]:
        """Decode raw network outputs (loc, conf, landmarks) for a batch of network ``size``
        (h, w) into faces in input pixels, most prominent first."""
        from facexlib.detection.retinaface_utils import decode, decode_landm
        from torchvision.ops import nms

        h, w = int(size[0]), int(size[1])
        priors = _priors(h, w).to(outputs[0].device)
        sx, sy = scale
        frame = torch.tensor([w, h], dtype=torch.float32, device=priors.device)
        result = []
        for loc, conf, landm in zip(*outputs):
            scores = conf[:, 1].float()
            keep = scores > self.threshold
            if not bool(keep.any()):
                result.append([])
                continue
            boxes = decode(loc[keep].float(), priors[keep], self._variance).view(-1, 2, 2) * frame
            points = decode_landm(landm[keep].float(), priors[keep], self._variance).view(-1, 5, 2) * frame
            scores = scores[keep]
            kept = nms(boxes.view(-1, 4), scores, self.nms_threshold)
            # network pixels -> input pixels, pixel-centre convention: x_in = (x_net + 0.5) / s - 0.5
            inv = torch.tensor([1.0 / sx, 1.0 / sy], device=priors.device)
            boxes = ((boxes[kept] + 0.5) * inv - 0.5).cpu().numpy().reshape(-1, 4)
            points = ((points[kept] + 0.5) * inv - 0.5).cpu().numpy()
            faces = [Face(b.astype(np.float32), float(s), p.astype(np.float32))
                     for b, s, p in zip(boxes, scores[kept].cpu().tolist(), points)]
            result.append(sorted(faces, key=lambda f: -f.prominence))
        return result

    @torch.no_grad()
    def detect(self, images: torch.Tensor) -> List[List[Face]]:
        """Faces in each image of an RGB (N, 3, H, W) [0, 1] batch, most prominent first."""
        batch, scale = self.prepare(images)
        return self.postprocess(self.net(batch), batch.shape[-2:], scale)

    def detect_padded(self, image: torch.Tensor, pad: float = 0.5) -> List[Face]:
        """Faces in one (3, H, W) image; if none is found, retry once on a copy padded by
        ``pad`` x the long side on every side (a face filling the frame lacks context)."""
        faces = self.detect(image.unsqueeze(0))[0]
        return faces if faces or pad <= 0 else self.detect_with_padding(image, pad)

    def detect_with_padding(self, image: torch.Tensor, pad: float) -> List[Face]:
        """Faces in (3, H, W) ``image`` padded by ``pad`` x its long side with the network's mean
        colour, mapped back to ``image``'s pixel coordinates."""
        p = int(round(pad * max(image.shape[-2:])))
        fill = torch.tensor(_BGR_MEAN[::-1], device=image.device, dtype=torch.float32).view(3, 1, 1) / 255.0
        padded = fill.expand(3, image.shape[-2] + 2 * p, image.shape[-1] + 2 * p).clone()
        padded[:, p:p + image.shape[-2], p:p + image.shape[-1]] = image.detach().float()
        shift = np.array([p, p], dtype=np.float32)
        return [Face(f.box - np.tile(shift, 2), f.score, f.landmarks - shift)
                for f in self.detect(padded.unsqueeze(0))[0]]


@functools.lru_cache(maxsize=None)
def _detector(device: str) -> Detector:
    return Detector(device)


def get_detector(device: Union[str, torch.device, None] = None) -> Detector:
    """The shared detector on ``device`` (default CPU), built on first use and cached per device."""
    return _detector(str(torch.device(device if device is not None else "cpu")))


def detect_faces(image: Any, *, device: Union[str, torch.device, None] = None,
                 pad_retry: bool = True) -> Union[List[Face], List[List[Face]]]:
    """Faces in an image, most prominent (box area x score) first, in input pixel coordinates.

    ``image``: anything :func:`perface.load_image` accepts (path, ``PIL.Image``, numpy HWC,
    tensor (3, H, W)); returns ``list[Face]``. A list, or a 4-D batch (N, 3, H, W), returns one
    ``list[Face]`` per image. Detection runs on a copy with long side <= 640 px, on ``device``
    (default: the tensor's device, else CPU); a tight crop with no face found is retried with
    padding (``pad_retry``). No gradient flows through detection.
    """
    from .imageio import is_batch, load_images

    batch = is_batch(image)
    images = load_images(image if batch else [image])
    found = []
    for img in images:
        det = get_detector(device if device is not None else img.device)
        found.append(det.detect_padded(img) if pad_retry else det.detect(img.unsqueeze(0))[0])
    return found if batch else found[0]
