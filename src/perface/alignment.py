"""Alignment of faces to a model's landmark template, as torch modules (differentiable).

Conventions: affine matrices map *source* pixels to *aligned-crop* pixels (the matrix
``cv2.warpAffine`` takes), in the pixel-centre convention (pixel ``(i, j)`` has its centre at
``x = j, y = i``). :func:`warp_affine` reproduces ``cv2.warpAffine(..., INTER_LINEAR,
BORDER_CONSTANT=0)`` with ``affine_grid``/``grid_sample(align_corners=False)``; with
``antialias=True`` (the default) a source sampled more than 2x coarser than its pixels is first
area-averaged by an integer factor, so the warp sees (and sends gradient to) every source pixel
instead of ~4 per output pixel, and each downscaled output pixel averages 2 x 2 samples. See
``docs/alignment.md``.

Aligner modules (``PerFace(align=...)``):

- ``"none"``: input already aligned to the model's template; only resized.
- ``"detect"``: RetinaFace landmarks on each image (no gradient), similarity warp with gradient
  to the original pixels.
- ``"arcface"``, ``"simceleba"``, ``"ffhq"``: input is a pre-aligned crop in that format (any
  square size); a fixed similarity warp converts it to the model's template, no detection.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import NoFaceError
from .templates import TEMPLATES, get_template, template_points

__all__ = [
    "ResizeTo",
    "FixedAlign",
    "DetectAlign",
    "build_aligner",
    "align_modes",
    "similarity_transform",
    "warp_affine",
    "choose_faces",
    "crop_faces",
    "align_faces",
]

COMPETE_RATIO = 0.5  # a second face this prominent relative to the first triggers a warning
ANTIALIAS_MIN_SCALE = 2.0  # area-average first when more than this many source px per output px
SUPERSAMPLE = 2  # ... then sample each output pixel at 2 x 2 points and average them ...
SUPERSAMPLE_MIN_SCALE = 1.25  # ... when it spans at least this many (area-averaged) source pixels
MIN_SOURCE_SCALE = 1.5  # decode a JPEG so that a crop pixel spans at least this many decoded pixels


class ResizeTo(nn.Module):
    """Input already aligned to the model's template: only resize to ``size`` x ``size``."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] == (self.size, self.size):
            return x
        return F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) mapping
    points ``src`` onto ``dst`` (Umeyama 1991).

    ``src``: (K, 2) or (N, K, 2); ``dst``: (K, 2). Returns (2, 3) or (N, 2, 3) float64 matrices
    ``M`` with ``dst ~ M[:, :2] @ src + M[:, 2]``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim == 3:
        return np.stack([similarity_transform(s, dst) for s in src])
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    fix = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rot = u @ fix @ vt
    var_s = (s0**2).sum() / len(src)
    scale = float((sig * np.diag(fix)).sum() / var_s) if var_s > 0 else 1.0
    out = np.empty((2, 3))
    out[:, :2] = scale * rot
    out[:, 2] = mu_d - scale * rot @ mu_s
    return out


def _as3x3(m: torch.Tensor) -> torch.Tensor:
    bottom = torch.tensor([0.0, 0.0, 1.0], dtype=m.dtype, device=m.device).expand(*m.shape[:-2], 1, 3)
    return torch.cat([m, bottom], dim=-2)


def _pixel_to_norm(w: int, h: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Pixel-centre coordinates -> ``grid_sample(align_corners=False)`` coordinates in [-1, 1]."""
    return torch.tensor(
        [[2.0 / w, 0.0, 1.0 / w - 1.0], [0.0, 2.0 / h, 1.0 / h - 1.0], [0.0, 0.0, 1.0]], dtype=dtype, device=device
    )


def _warp_shared(
    x: torch.Tensor, m: torch.Tensor, size: tuple[int, int], antialias: bool, border: str = "zeros"
) -> torch.Tensor:
    """Warp every image of ``x`` (N, C, H, W; uint8 or float) with the one (2, 3) float64 matrix ``m``.

    Only the crop's footprint (plus a margin) is read, converted to float and, when the crop is
    downscaled 2x or more, area-averaged by an integer factor on a grid whose cell edges lie on
    the crop's edges, so an exact 2x or 4x downscale averages whole source pixels and never reads
    the padding. A downscaled crop is then sampled at 2 x 2 points per output pixel and averaged
    (a box filter over the pixel's footprint, not one bilinear tap): conversions between crop
    formats then keep cos >= 0.99 to the crop made directly from the photo. ``border``: ``"zeros"``
    (black outside the image, like ``BORDER_CONSTANT=0``)
    or ``"replicate"`` (the nearest edge pixel: a pre-aligned crop continued).
    """
    out_h, out_w = size
    inv = torch.linalg.inv(_as3x3(m))  # crop pixel -> source pixel
    scale = float(torch.sqrt(torch.abs(torch.linalg.det(inv[:2, :2]))))
    factor = int(scale // 1) if antialias and scale >= ANTIALIAS_MIN_SCALE else 1
    h, w = x.shape[-2:]
    corners = torch.tensor(
        [[-0.5, -0.5, 1.0], [out_w - 0.5, -0.5, 1.0], [-0.5, out_h - 0.5, 1.0], [out_w - 0.5, out_h - 0.5, 1.0]],
        dtype=inv.dtype,
    )
    edge = corners @ inv[:2].T  # the crop's outer edge in source pixels
    margin = 2 * factor
    x0 = round(float(edge[:, 0].min()) + 0.5) - margin  # first source pixel of the footprint
    y0 = round(float(edge[:, 1].min()) + 0.5) - margin
    x1 = x0 + factor * int(np.ceil((float(edge[:, 0].max()) + 0.5 + margin - x0) / factor))
    y1 = y0 + factor * int(np.ceil((float(edge[:, 1].max()) + 0.5 + margin - y0) / factor))
    xs, xe, ys, ye = (min(max(v, 0), n) for v, n in ((x0, w), (x1, w), (y0, h), (y1, h)))
    crop = x[..., ys:ye, xs:xe]
    crop = crop.float() / 255.0 if crop.dtype == torch.uint8 else crop
    pad = (xs - x0, x1 - xe, ys - y0, y1 - ye)
    if any(pad):
        replicate = border == "replicate" and crop.shape[-1] > 0 and crop.shape[-2] > 0
        crop = F.pad(crop, pad, mode="replicate" if replicate else "constant")
    if factor > 1:
        crop = F.avg_pool2d(crop, factor)
    # pooled pixel (x', y') is centred on source pixel (x0 + f x' + (f-1)/2, ...)
    half = (factor - 1) / 2.0
    pool = torch.tensor([[factor, 0.0, x0 + half], [0.0, factor, y0 + half], [0.0, 0.0, 1.0]], dtype=inv.dtype)
    inv = torch.linalg.inv(pool) @ inv
    h, w = crop.shape[-2:]
    ss = SUPERSAMPLE if antialias and scale / factor >= SUPERSAMPLE_MIN_SCALE else 1
    to_out_pixels = torch.linalg.inv(_pixel_to_norm(out_w, out_h, inv.dtype, inv.device))
    theta = _pixel_to_norm(w, h, inv.dtype, inv.device) @ inv @ to_out_pixels
    theta = theta[:2].to(crop.device, crop.dtype).expand(crop.shape[0], 2, 3)
    grid = F.affine_grid(theta, [crop.shape[0], crop.shape[1], out_h * ss, out_w * ss], align_corners=False)
    out = F.grid_sample(
        crop, grid, mode="bilinear", padding_mode="zeros" if border == "zeros" else "border", align_corners=False
    )
    return F.avg_pool2d(out, ss) if ss > 1 else out


def warp_affine(
    images: torch.Tensor,
    matrix: Union[np.ndarray, torch.Tensor],
    size: Union[int, Sequence[int]],
    antialias: bool = True,
    border: str = "zeros",
) -> torch.Tensor:
    """Differentiable ``cv2.warpAffine``: (N, C, H, W) images -> (N, C, h, w) float.

    ``images``: float, or uint8 read as 0..255 (only the part the crop reads is converted to
    float in [0, 1]). ``matrix``: (2, 3) shared by the batch, or (N, 2, 3), mapping source to
    output pixels (pixel-centre convention). ``size``: ``s`` or ``(h, w)``. Bilinear;
    ``border``: ``"zeros"`` outside the image (``BORDER_CONSTANT=0``) or ``"replicate"``.
    ``antialias``: area-average by ``floor(scale)`` first where one output pixel spans >= 2
    source pixels (``False`` reproduces ``cv2.warpAffine`` exactly, up to its 1/32-pixel
    fixed-point coordinates). Gradients flow to float ``images``. Raises ``ValueError`` for an
    unknown ``border`` or a matrix count that differs from the batch.
    """
    if border not in ("zeros", "replicate"):
        raise ValueError(f"warp_affine: border must be 'zeros' or 'replicate', got {border!r}")
    size_hw = (int(size), int(size)) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    m = torch.as_tensor(
        np.asarray(matrix) if not isinstance(matrix, torch.Tensor) else matrix.detach().cpu(), dtype=torch.float64
    )
    if m.dim() == 2:
        return _warp_shared(images, m, size_hw, antialias, border)
    if m.shape[0] != images.shape[0]:
        raise ValueError(f"warp_affine: {m.shape[0]} matrices for {images.shape[0]} images")
    return torch.cat([_warp_shared(images[i : i + 1], m[i], size_hw, antialias, border) for i in range(m.shape[0])])


def choose_faces(
    faces: Sequence[Any], face_index: Union[int, str, None], name: str, argument: str = "face_index"
) -> list[Any]:
    """Pick faces from a list sorted most prominent first (see :class:`perface.detection.Face`).

    ``None``: the most prominent one, warning when a second has at least ``COMPETE_RATIO`` of
    its prominence; an int: that rank; ``"all"``: every face. ``name`` names the image and
    ``argument`` the option that picks its face, in messages (e.g. ``"face_index_b"``). Raises
    :class:`NoFaceError` (naming detections rejected for implausible landmarks, if any).
    """
    if not faces:
        rejected = getattr(faces, "rejected", ())
        if rejected:
            face, reason = rejected[0]
            raise NoFaceError(
                f"{name}: no face with plausible landmarks: a face-like region was detected (score "
                f"{face.score:.2f}) but {reason}, also after trying the photo rotated by 90, 180 and 270 "
                "degrees. Pass a photo where the face is upright and unobstructed."
            )
        raise NoFaceError(
            f"{name}: no face found. Pass a photo where the whole face is visible and at least ~20 px "
            "wide; for crops that are already aligned use align='none' or the crop format "
            "('arcface', 'ffhq', 'simceleba') instead of detection."
        )
    if face_index == "all":
        return list(faces)
    if face_index is None:
        if len(faces) > 1 and faces[1].prominence >= COMPETE_RATIO * faces[0].prominence:
            warnings.warn(
                f"{name}: {len(faces)} faces found and the second is nearly as prominent as the first; "
                f"using the most prominent (size x score). Pass {argument}=N to choose (0 = most "
                "prominent, 1 = the next, ...).",
                stacklevel=3,
            )
        return [faces[0]]
    if isinstance(face_index, (int, np.integer)) and not isinstance(face_index, bool):
        if -len(faces) <= face_index < len(faces):
            return [faces[face_index]]
        raise NoFaceError(
            f"{name}: {argument}={face_index} but only {len(faces)} face(s) were found "
            f"(0 = most prominent); pass a smaller {argument}."
        )
    raise ValueError(f"{argument} must be None, an int or 'all', got {face_index!r}")


def _landmark_matrices(faces: Sequence[Any], template: str, size: int) -> np.ndarray:
    dst = template_points(template, size)
    return np.stack([similarity_transform(f.landmarks, dst) for f in faces])


def crop_faces(photo: Any, faces: Sequence[Any], template: str, size: int, antialias: bool = True) -> torch.Tensor:
    """Warp ``faces`` (full-resolution coordinates) of ``photo`` (a :class:`perface.imageio.Photo`)
    to ``template`` at ``size``: (K, 3, size, size) float32 in [0, 1], differentiable with respect
    to a tensor photo.

    A JPEG is decoded only as finely as the smallest face needs: at least ``MIN_SOURCE_SCALE``
    decoded pixels per crop pixel where the photo has them (a coarser decode is reused).
    """
    matrices = _landmark_matrices(faces, template, size)  # full-resolution pixels -> crop pixels
    source_scale = min(1.0 / np.sqrt(abs(np.linalg.det(m[:, :2]))) for m in matrices)
    pixels, scale = photo.pixels(min(1.0, MIN_SOURCE_SCALE / source_scale))
    if scale != 1.0:  # decoded pixel -> full-resolution pixel: x = (x' + 0.5) / scale - 0.5
        to_full = np.array([[1 / scale, 0.0, 0.5 / scale - 0.5], [0.0, 1 / scale, 0.5 / scale - 0.5], [0, 0, 1]])
        matrices = matrices @ to_full
    return warp_affine(pixels.unsqueeze(0).expand(len(faces), -1, -1, -1), matrices, size, antialias)


def align_faces(
    image: Any,
    template: str = "arcface",
    size: int = 112,
    face_index: Union[int, str, None] = None,
    *,
    antialias: bool = True,
    device: Union[str, torch.device, None] = None,
) -> torch.Tensor:
    """Detect faces and warp them to ``template`` at ``size`` x ``size``: (K, 3, size, size) in [0, 1].

    ``image``: anything :func:`perface.load_image` accepts; a list/batch gives the crops of
    every image in order. ``face_index``: ``None`` (the most prominent face per image), an int
    (rank by prominence) or ``"all"``. Detection as in :func:`perface.detection.find_faces`.
    Differentiable with respect to a tensor ``image`` (landmarks themselves carry no gradient).
    Raises :class:`~perface.NoFaceError` and :class:`~perface.ImageReadError`.
    """
    from .detection import find_faces, get_detector
    from .imageio import Photo, batch_items, describe, is_batch

    get_template(template)
    crops = []
    for i, src in enumerate(batch_items(image)):
        photo = Photo(src)
        name = describe(src, i if is_batch(image) else None)
        detector = get_detector(device) if device is not None else None
        chosen = choose_faces(find_faces(photo, detector, prominent=face_index in (None, 0)), face_index, name)
        crops.append(crop_faces(photo, chosen, template, size, antialias))
    return torch.cat(crops)


class FixedAlign(nn.Module):
    """Pre-aligned crops in format ``source`` (any square size) -> ``target`` template at ``size``.

    A fixed similarity warp, no detection: the per-step loss mode of a face-swap training loop.
    Differentiable; antialiased when the crop is much larger than ``size``.
    """

    def __init__(self, source: str, target: str, size: int, antialias: bool = True) -> None:
        super().__init__()
        get_template(source), get_template(target)
        self.source, self.target, self.size, self.antialias = source, target, size, antialias

    def matrix(self, height: int, width: int) -> np.ndarray:
        """(2, 3) source-crop -> target-crop matrix for an input of ``height`` x ``width``."""
        if height != width:
            raise ValueError(
                f"align={self.source!r} expects square pre-aligned crops, got {height}x{width}; "
                "use align='detect' for photos"
            )
        return similarity_transform(template_points(self.source, height), template_points(self.target, self.size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # outside the crop, its edge pixels continue (a white crop stays white)
        return warp_affine(x, self.matrix(*x.shape[-2:]), self.size, self.antialias, border="replicate")

    def extra_repr(self) -> str:
        return f"source={self.source!r}, target={self.target!r}, size={self.size}"


class DetectAlign(nn.Module):
    """Photos (N, 3, H, W) in [0, 1] -> (N, 3, size, size) aligned to ``template``.

    Landmarks come from RetinaFace on a detached copy (no gradient); the similarity warp is
    differentiable, so gradients reach the original pixels. One face per image: the most
    prominent, or rank ``face_index``. An image without a face raises
    :class:`~perface.NoFaceError` naming its batch index.
    """

    def __init__(self, template: str, size: int, face_index: Optional[int] = None, antialias: bool = True) -> None:
        super().__init__()
        get_template(template)
        self.template, self.size, self.face_index, self.antialias = template, size, face_index, antialias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from .detection import find_faces, get_detector

        detector = get_detector(x.device)
        prominent = self.face_index in (None, 0)
        faces = [
            choose_faces(
                find_faces(img.detach(), detector, prominent=prominent),
                self.face_index,
                f"align='detect': batch item {i}",
            )[0]
            for i, img in enumerate(x)
        ]
        return warp_affine(x, _landmark_matrices(faces, self.template, self.size), self.size, self.antialias)

    def extra_repr(self) -> str:
        return f"template={self.template!r}, size={self.size}, face_index={self.face_index}"


def align_modes() -> tuple[str, ...]:
    """Every valid ``align`` value."""
    return ("none", "detect") + tuple(sorted(TEMPLATES))


def build_aligner(align: str, template: str, size: int) -> nn.Module:
    """The module mapping (N, 3, H, W) [0, 1] input to (N, 3, size, size) aligned to ``template``.

    ``align``: ``"none"`` (already aligned: resize only), ``"detect"`` (detect landmarks, warp),
    or a pre-aligned crop format (``"arcface"``, ``"simceleba"``, ``"ffhq"``: fixed warp).
    """
    if align == "none":
        return ResizeTo(size)
    if align == "detect":
        return DetectAlign(template, size)
    if align in TEMPLATES:
        return FixedAlign(align, template, size)
    raise ValueError(f"unknown align mode {align!r}; use one of {', '.join(map(repr, align_modes()))}")
