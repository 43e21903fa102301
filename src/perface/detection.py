"""Face detection: RetinaFace (mobilenet0.25, facexlib's layers, see :mod:`perface.retinaface`)
with the weights shipped in perface.

The weights are ``perface/weights/retinaface_mnet025.safetensors`` (pinned in
``perface.registry.DETECTOR``), so nothing is downloaded. facexlib's layers are loaded only when
a detector is first built.

:func:`find_faces` is the search every photo goes through (:func:`detect_faces`,
:func:`perface.align_faces`, ``PerFace(align="detect")``, :mod:`perface.embedding`):

1. a coarse pass on a copy with long side <= ``MAX_SIDE`` (640) px; when only the most
   prominent face is needed (``prominent=True``), RetinaFace's finest level is run only if its
   two coarse levels find no face of ``PROMINENT_SIDE`` px or more (see :meth:`Detector.detect`);
2. nothing found: the same copy padded by half its long side (a face filling the frame lacks
   context), then finer passes, each ``FINER`` (4) times finer, in ``TILE`` px tiles, down to
   full resolution: small faces in large photos, with bounded memory;
3. orientation (a photo stored sideways or upside down without an EXIF tag): a face found
   sideways is detected again on the coarse copy turned upright (RetinaFace's landmarks are
   only accurate on upright faces); when no face has plausible landmarks (see
   :func:`implausible`), the coarse copy turned by 90, 180 and 270 degrees is searched.

Coordinates follow the pixel-centre convention of OpenCV: pixel ``(i, j)`` (row, column) has
its centre at ``x = j, y = i``. Landmarks are, in order: left eye, right eye, nose tip, left
mouth corner, right mouth corner ("left" = smaller x in the face's upright view).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Optional, TypeVar, Union

import numpy as np
import torch
import torch.nn.functional as F

from .hub import resolve_weights
from .registry import DETECTOR
from .retinaface import LEVELS, RetinaFaceMobile

__all__ = ["Face", "Faces", "Detector", "get_detector", "detect_faces", "find_faces", "implausible"]


MAX_SIDE = 640  # the coarse pass sees a copy whose long side is at most this many pixels
# A face this many network px wide or more, found by RetinaFace's two coarse levels, is more prominent
# than any face its finest level (anchors 16 and 32 px, faces up to ~50 px) can add: 3x the largest
# anchor there, over twice the area.
PROMINENT_SIDE = 96
FINER = 4  # each finer pass detects at this many times the previous scale
TILE = 1024  # finer passes run on tiles of at most this many pixels a side ...
OVERLAP = 96  # ... overlapping by this many (a face the coarser pass could not see fits in it)
MIN_EYE_TO_BOX = 0.2  # landmarks are implausible when the eyes are closer than this x the box side ...
MAX_FIT_ERROR = 0.25  # ... or they miss a similarity transform of the ArcFace template by more (in eye distances)
_BGR_MEAN = (104.0, 117.0, 123.0)  # the network's input: BGR 0..255 minus this mean


@dataclass(frozen=True)
class Face:
    """One detected face, in input pixel coordinates (pixel-centre convention).

    ``box``: (4,) float32 ``x0, y0, x1, y1``; ``score``: detector confidence in [0, 1];
    ``landmarks``: (5, 2) float32 ``(x, y)`` of left eye, right eye, nose, left and right mouth
    corners (left and right as seen in the face's upright view).
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray

    @property
    def prominence(self) -> float:
        """Box area times score: how faces are ranked (most prominent first)."""
        w, h = float(self.box[2] - self.box[0]), float(self.box[3] - self.box[1])
        return max(w, 0.0) * max(h, 0.0) * self.score

    def mapped(self, fn: Callable[[np.ndarray], np.ndarray]) -> Face:
        """This face with ``fn`` applied to its (K, 2) points (box corners re-fitted around them)."""
        corners = fn(
            np.array(
                [
                    [self.box[0], self.box[1]],
                    [self.box[2], self.box[1]],
                    [self.box[0], self.box[3]],
                    [self.box[2], self.box[3]],
                ],
                dtype=np.float64,
            )
        )
        box = np.concatenate([corners.min(0), corners.max(0)]).astype(np.float32)
        return Face(box, self.score, fn(self.landmarks.astype(np.float64)).astype(np.float32))


class Faces(list[Face]):
    """A list of :class:`Face`, most prominent first, plus ``rejected``: ``(face, reason)`` for
    detections dropped because their landmarks are implausible (used in error messages)."""

    def __init__(self, faces: Sequence[Face] = (), rejected: Sequence[tuple[Face, str]] = ()) -> None:
        super().__init__(sorted(faces, key=lambda f: -f.prominence))
        self.rejected = list(rejected)


def implausible(face: Face) -> Optional[str]:
    """Why ``face``'s landmarks cannot be a face's, or None when they can.

    Two checks, calibrated on the shared photos and their rotations: upright and sideways faces
    have eyes 0.31-0.43 of the box side apart and fit the ArcFace template to within 0.15 eye
    distances; the collapsed landmarks RetinaFace returns for an upside-down face had eyes
    0.04-0.17 of the box apart or a fit error of 0.30-0.54.
    """
    from .alignment import similarity_transform
    from .templates import template_points

    points = face.landmarks.astype(np.float64)
    side = float(max(face.box[2] - face.box[0], face.box[3] - face.box[1]))
    eyes = float(np.linalg.norm(points[1] - points[0]))
    if side <= 0 or eyes < MIN_EYE_TO_BOX * side:
        return f"the eyes are {eyes / max(side, 1e-6):.0%} of the face box apart (a face: >= {MIN_EYE_TO_BOX:.0%})"
    template = template_points("arcface", 112)
    m = similarity_transform(points, template)
    fitted = points @ m[:, :2].T + m[:, 2]
    error = float(np.sqrt(((fitted - template) ** 2).sum(1).mean()) / np.linalg.norm(template[1] - template[0]))
    if error > MAX_FIT_ERROR:
        return f"the five points miss a face's layout by {error:.2f} eye distances (a face: <= {MAX_FIT_ERROR})"
    return None


_M = TypeVar("_M", bound=torch.nn.Module)


def _fold_batchnorm(module: _M) -> _M:
    """Fold every ``Conv2d -> BatchNorm2d`` pair of ``module``'s ``nn.Sequential`` blocks into one
    convolution (inference only; in place)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for child in module.children():
        _fold_batchnorm(child)
    if isinstance(module, torch.nn.Sequential):
        layers = list(module)
        for i, (conv, bn) in enumerate(zip(layers, layers[1:])):
            if isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d):
                module[i], module[i + 1] = fuse_conv_bn_eval(conv, bn), torch.nn.Identity()
    return module


def _resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Antialiased bilinear resize of (N, 3, H, W) uint8 or float images (uint8 stays uint8)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)


class Detector:
    """RetinaFace mobilenet0.25 on one device; ``detector.detect(images)`` -> faces per image.

    Args:
        device: torch device the network runs on.
        threshold: minimum confidence of a kept face.
        nms_threshold: IoU above which overlapping detections are merged.
        max_side: long side of the copy the coarse pass sees (larger inputs are downscaled).
    """

    def __init__(
        self,
        device: Union[str, torch.device] = "cpu",
        threshold: float = 0.8,
        nms_threshold: float = 0.4,
        max_side: int = MAX_SIDE,
    ) -> None:
        from safetensors.torch import load_file

        self.device = torch.device(device)
        self.threshold = threshold
        self.nms_threshold = nms_threshold
        self.max_side = max_side
        net = RetinaFaceMobile()
        net.load_state_dict(load_file(str(resolve_weights(DETECTOR.weights, DETECTOR.name))), strict=True)
        # channels_last: measured 21 -> 15 ms per 640x393 photo on a 2-core CPU (same outputs);
        # BatchNorm folded into the convolutions: ~10% less CPU time (outputs equal to 2e-6);
        # on the CPU every convolution through oneDNN: 1 thread, 640x512, 19.2 -> 16.6 ms (see
        # perface._inference; the photo pipeline runs detection one thread per photo)
        folded = _fold_batchnorm(net.eval().requires_grad_(False)).to(self.device)
        self.net = folded.to(memory_format=torch.channels_last)
        if self.device.type == "cpu":
            from ._inference import onednn_convolutions

            onednn_convolutions(self.net)
        self._mean = torch.tensor(_BGR_MEAN, device=self.device).view(1, 3, 1, 1)

    def prepare(self, images: torch.Tensor, scale: Optional[float] = None) -> tuple[torch.Tensor, tuple[float, float]]:
        """RGB (N, 3, H, W), uint8 0..255 or float in [0, 1] -> network input (BGR 0..255 minus
        mean) resized by ``scale`` (default: long side <= ``max_side``), and the ``(sx, sy)``
        scale from input to network pixels."""
        images = images.detach().to(self.device)
        h, w = images.shape[-2:]
        scale = min(1.0, self.max_side / max(h, w)) if scale is None else scale
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        # uint8 stays uint8 through the resize and the RGB -> BGR flip; the subtraction makes the
        # float copy in the same pass (1 thread, 640x512: 3.9 -> 1.2 ms against flip, float, subtract)
        resized = _resize(images, size) if images.dtype == torch.uint8 else _resize(images.float(), size) * 255.0
        batch = torch.sub(resized.flip(1), self._mean)
        sy, sx = size[0] / h, size[1] / w
        return batch.contiguous(memory_format=torch.channels_last), (sx, sy)

    def postprocess(
        self,
        outputs: Sequence[torch.Tensor],
        size: Sequence[int],
        scale: tuple[float, float],
        levels: tuple[int, ...] = LEVELS,
    ) -> list[list[Face]]:
        """Decode raw network outputs (loc, conf, landmarks) of ``levels`` (default: all) for a
        batch of network ``size`` (h, w) into faces in input pixels, most prominent first."""
        from .retinaface import anchors, decode_boxes, decode_landmarks, nms

        h, w = int(size[0]), int(size[1])
        priors = anchors(h, w, tuple(levels)).to(outputs[0].device)
        sx, sy = scale
        frame = torch.tensor([w, h], dtype=torch.float32, device=priors.device)
        result: list[list[Face]] = []
        for loc, conf, landm in zip(*outputs):
            scores = conf[:, 1].float()
            keep = scores > self.threshold
            if not bool(keep.any()):
                result.append([])
                continue
            boxes = decode_boxes(loc[keep].float(), priors[keep]).view(-1, 2, 2) * frame
            points = decode_landmarks(landm[keep].float(), priors[keep]) * frame
            scores = scores[keep]
            kept = nms(boxes.view(-1, 4), scores, self.nms_threshold)
            # network pixels -> input pixels, pixel-centre convention: x_in = (x_net + 0.5) / s - 0.5
            inv = torch.tensor([1.0 / sx, 1.0 / sy], device=priors.device)
            box_px = ((boxes[kept] + 0.5) * inv - 0.5).cpu().numpy().reshape(-1, 4)
            point_px = ((points[kept] + 0.5) * inv - 0.5).cpu().numpy()
            faces = [
                Face(b.astype(np.float32), float(s), p.astype(np.float32))
                for b, s, p in zip(box_px, scores[kept].cpu().tolist(), point_px)
            ]
            result.append(sorted(faces, key=lambda f: -f.prominence))
        return result

    @torch.no_grad()
    def detect(
        self, images: torch.Tensor, scale: Optional[float] = None, *, prominent: bool = False
    ) -> list[list[Face]]:
        """Faces in each image of an RGB (N, 3, H, W) batch (uint8, or float in [0, 1]), most
        prominent first, detected at ``scale`` (default: long side <= ``max_side``).

        ``prominent=True``: only the most prominent face of each image must be right (its box,
        score and landmarks, and whether a second one competes with it, see
        :func:`perface.alignment.choose_faces`). The finest level (faces under about 50 px) is
        then skipped when the two coarse levels find a face of at least ``PROMINENT_SIDE`` px in
        every image: a face that only the finest level finds covers under half its area. The
        faces found are those of the whole network minus that level's (the same landmarks on
        every shared photo and 40 framings of them); 1 thread, 640 x 512: 5.8 against 14.6 ms.
        """
        from .retinaface import join

        batch, net_scale = self.prepare(images, scale)
        size = batch.shape[-2:]
        coarse, c1, p2 = self.net.coarse(batch)
        if prominent:
            faces = self.postprocess(coarse, size, net_scale, LEVELS[1:])
            if all(f and _side(f[0], net_scale) >= PROMINENT_SIDE for f in faces):
                return faces
        return self.postprocess(join(self.net.fine(c1, p2), coarse), size, net_scale)

    def detect_padded(self, image: torch.Tensor, pad: float = 0.5) -> list[Face]:
        """Faces in one (3, H, W) image; if none is found, retry once on a copy padded by
        ``pad`` x the long side on every side (a face filling the frame lacks context)."""
        faces = self.detect(image.unsqueeze(0))[0]
        return faces if faces or pad <= 0 else self.detect_with_padding(image, pad)

    def detect_with_padding(self, image: torch.Tensor, pad: float) -> list[Face]:
        """Faces in (3, H, W) ``image`` padded by ``pad`` x its long side with the network's mean
        colour, mapped back to ``image``'s pixel coordinates."""
        p = round(pad * max(image.shape[-2:]))
        if image.dtype == torch.uint8:
            fill = torch.tensor(_BGR_MEAN[::-1], device=image.device).round().to(torch.uint8).view(3, 1, 1)
        else:
            fill = torch.tensor(_BGR_MEAN[::-1], device=image.device, dtype=torch.float32).view(3, 1, 1) / 255.0
        padded = fill.expand(3, image.shape[-2] + 2 * p, image.shape[-1] + 2 * p).clone()
        padded[:, p : p + image.shape[-2], p : p + image.shape[-1]] = image.detach().to(padded.dtype)
        shift = np.array([p, p], dtype=np.float32)
        return [
            Face(f.box - np.tile(shift, 2), f.score, f.landmarks - shift) for f in self.detect(padded.unsqueeze(0))[0]
        ]

    @torch.no_grad()
    def detect_tiled(self, image: torch.Tensor, scale: float, tile: int = TILE, overlap: int = OVERLAP) -> list[Face]:
        """Faces in one (3, H, W) image detected at ``scale``, tile by tile (the network never sees
        more than ``tile`` x ``tile`` px), merged by non-maximum suppression; input pixels."""
        from .retinaface import nms

        h, w = image.shape[-2:]
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        scaled = _resize(image.detach().unsqueeze(0), size)[0]
        sy, sx = size[0] / h, size[1] / w
        step = tile - overlap
        found: list[Face] = []
        for y0 in range(0, max(1, size[0] - overlap), step):
            for x0 in range(0, max(1, size[1] - overlap), step):
                part = scaled[:, y0 : y0 + tile, x0 : x0 + tile]
                shift = np.array([x0, y0], dtype=np.float32)
                found += [
                    Face(f.box + np.tile(shift, 2), f.score, f.landmarks + shift)
                    for f in self.detect(part.unsqueeze(0), 1.0)[0]
                ]
        if len(found) > 1:
            boxes = torch.tensor(np.stack([f.box for f in found]))
            keep = nms(boxes, torch.tensor([f.score for f in found]), self.nms_threshold).tolist()
            found = [found[i] for i in keep]
        scales = np.array([sx, sy])
        return [f.mapped(lambda p: (p + 0.5) / scales - 0.5) for f in found]


def _side(face: Face, scale: tuple[float, float]) -> float:
    """The long side of ``face``'s box in network pixels (``scale``: input -> network)."""
    return max(float(face.box[2] - face.box[0]) * scale[0], float(face.box[3] - face.box[1]) * scale[1])


def _unrotate(k: int, height: int, width: int) -> Callable[[np.ndarray], np.ndarray]:
    """Maps points of ``torch.rot90(image, k, dims=(1, 2))`` back to ``image`` (``height`` x ``width``)."""

    def fn(p: np.ndarray) -> np.ndarray:
        x, y = p[..., 0], p[..., 1]
        if k == 1:
            return np.stack([width - 1 - y, x], axis=-1)
        if k == 2:
            return np.stack([width - 1 - x, height - 1 - y], axis=-1)
        return np.stack([y, height - 1 - x], axis=-1)

    return fn


def _split(faces: Sequence[Face]) -> tuple[list[Face], list[tuple[Face, str]]]:
    good, bad = [], []
    for face in faces:
        reason = implausible(face)
        if reason is None:
            good.append(face)
        else:
            bad.append((face, reason))
    return good, bad


def _to_full(faces: Sequence[Face], scale: float) -> list[Face]:
    """Faces found on pixels decoded at ``scale`` -> full-resolution pixel coordinates."""
    return list(faces) if scale == 1.0 else [f.mapped(lambda p: (p + 0.5) / scale - 0.5) for f in faces]


def _quarter_turns(face: Face) -> int:
    """How many ``torch.rot90`` quarter turns make ``face`` upright (0 when it is within 45 degrees)."""
    from .alignment import similarity_transform
    from .templates import template_points

    m = similarity_transform(face.landmarks, template_points("arcface", 112))
    return round(-np.degrees(np.arctan2(m[1, 0], m[0, 0])) / 90.0) % 4


def _turned(detector: Detector, small: torch.Tensor, k: int, scale: float, prominent: bool) -> list[Face]:
    """Plausible faces of ``small`` (pixels at ``scale``) detected on it turned by ``k`` quarter
    turns (the network is trained on upright faces), in full-resolution coordinates."""
    back = _unrotate(k, small.shape[-2], small.shape[-1])
    turned = detector.detect(torch.rot90(small, k, dims=(1, 2)).unsqueeze(0), 1.0, prominent=prominent)[0]
    return _split(_to_full([f.mapped(back) for f in turned], scale))[0]


def find_faces(
    image: Any, detector: Optional[Detector] = None, *, pad_retry: bool = True, prominent: bool = False
) -> Faces:
    """Every face in one image with plausible landmarks, most prominent first, in full-resolution
    pixel coordinates (see the module docstring for the passes).

    ``image``: a :class:`perface.imageio.Photo` (decoded only as finely as each pass needs), or
    anything :func:`perface.load_image` accepts for one image. ``detector``: default the shared
    detector on the image's device. ``prominent=True``: only the most prominent face is needed
    (``face_index`` None or 0); faces under ~50 px beside a much larger one may then be left out
    (see :meth:`Detector.detect`). Returns :class:`Faces` (empty when nothing was found; its
    ``rejected`` lists detections with implausible landmarks). No gradient flows through it.
    """
    from .imageio import Photo

    photo = image if isinstance(image, Photo) else Photo(image)
    height, width = photo.size
    coarse = min(1.0, MAX_SIDE / max(height, width))
    pixels, decoded = photo.pixels(coarse)
    if detector is None:
        detector = get_detector(pixels.device)
    # the coarse copy, made once and reused by the padding retry and the rotations
    small = _resize(pixels.detach().unsqueeze(0), (max(1, round(height * coarse)), max(1, round(width * coarse))))[0]
    at_coarse = (small.shape[-1] / width + small.shape[-2] / height) / 2  # coarse px per full-resolution px
    found = detector.detect(small.unsqueeze(0), 1.0, prominent=prominent)[0]
    if not found and pad_retry:
        found = detector.detect_with_padding(small, 0.5)
    faces, rejected = _split(_to_full(found, at_coarse))
    if prominent and rejected and not faces:  # implausible landmarks: search as completely as before
        return find_faces(photo, detector, pad_retry=pad_retry)
    scale = coarse
    while not faces and not rejected and scale < 1.0:  # nothing at all: look finer, tile by tile
        scale = min(1.0, scale * FINER)
        pixels, decoded = photo.pixels(scale)
        faces, rejected = _split(_to_full(detector.detect_tiled(pixels, scale / decoded), decoded))
    turns = 0  # quarter turns of the copy the faces were detected on
    if not faces and pad_retry:  # upside down or sideways without an EXIF tag: collapsed landmarks
        for turns in (2, 1, 3):
            faces = _turned(detector, small, turns, at_coarse, prominent)
            if faces:
                break
    if faces and pad_retry and _quarter_turns(faces[0]) not in (0, turns):  # found sideways: again, upright
        faces = _turned(detector, small, _quarter_turns(faces[0]), at_coarse, prominent) or faces
    return Faces(faces, rejected)


@functools.cache
def _detector(device: str) -> Detector:
    return Detector(device)


def get_detector(device: Union[str, torch.device, None] = None) -> Detector:
    """The shared detector on ``device`` (default CPU), built on first use and cached per device."""
    return _detector(str(torch.device(device if device is not None else "cpu")))


def detect_faces(
    image: Any, *, device: Union[str, torch.device, None] = None, pad_retry: bool = True
) -> Union[Faces, list[Faces]]:
    """Faces in an image, most prominent (box area x score) first, in input pixel coordinates.

    ``image``: anything :func:`perface.load_image` accepts (path, ``PIL.Image``, numpy HWC,
    tensor (3, H, W)); returns a list of :class:`Face` (a :class:`Faces`). A list, or a 4-D
    batch (N, 3, H, W), returns one list per image. Detection runs on a copy with long side
    <= 640 px, finer passes (tiled) when nothing is found in a larger photo, and rotated copies
    when no detection has plausible landmarks (see :func:`find_faces`), on ``device`` (default:
    the tensor's device, else CPU); ``pad_retry=False`` skips the padded and rotated retries.
    No gradient flows through detection. Raises :class:`~perface.ImageReadError`.
    """
    from .imageio import Photo, batch_items, is_batch

    found = []
    for item in batch_items(image):
        found.append(find_faces(Photo(item), get_detector(device) if device is not None else None, pad_retry=pad_retry))
    return found if is_batch(image) else found[0]
