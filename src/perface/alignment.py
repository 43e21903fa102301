"""Alignment of faces to a model's landmark template, as torch modules (differentiable).

Conventions: affine matrices map *source* pixels to *aligned-crop* pixels (the matrix
``cv2.warpAffine`` takes), in the pixel-centre convention (pixel ``(i, j)`` has its centre at
``x = j, y = i``). :func:`warp_affine` reproduces ``cv2.warpAffine(..., INTER_LINEAR,
BORDER_CONSTANT=0)`` with ``affine_grid``/``grid_sample(align_corners=False)``; with
``antialias=True`` (the default) a source sampled more than 2x coarser than its pixels is first
area-averaged by an integer factor, so the warp sees (and sends gradient to) every source pixel
instead of ~4 per output pixel. See ``docs/alignment.md``.

Aligner modules (``PerFace(align=...)``):

- ``"none"``: input already aligned to the model's template; only resized.
- ``"detect"``: RetinaFace landmarks on each image (no gradient), similarity warp with gradient
  to the original pixels.
- ``"arcface"``, ``"simceleba"``, ``"ffhq"``: input is a pre-aligned crop in that format (any
  square size); a fixed similarity warp converts it to the model's template, no detection.
"""

from __future__ import annotations

import warnings
from typing import Any, List, Optional, Sequence, Tuple, Union

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
    "align_faces",
]

COMPETE_RATIO = 0.5  # a second face this prominent relative to the first triggers a warning
ANTIALIAS_MIN_SCALE = 2.0  # area-average first when more than this many source px per output px


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
    var_s = (s0 ** 2).sum() / len(src)
    scale = float((sig * np.diag(fix)).sum() / var_s) if var_s > 0 else 1.0
    out = np.empty((2, 3))
    out[:, :2] = scale * rot
    out[:, 2] = mu_d - scale * rot @ mu_s
    return out


def _as3x3(m: torch.Tensor) -> torch.Tensor:
    bottom = torch.tensor([0.0, 0.0, 1.0], dtype=m.dtype, device=m.device).expand(*m.shape[:-2], 1, 3)
    return torch.cat([m, bottom], dim=-2)


def _pixel_to_norm(w: int, h: int, dtype, device) -> torch.Tensor:
    """Pixel-centre coordinates -> ``grid_sample(align_corners=False)`` coordinates in [-1, 1]."""
    return torch.tensor([[2.0 / w, 0.0, 1.0 / w - 1.0], [0.0, 2.0 / h, 1.0 / h - 1.0], [0.0, 0.0, 1.0]],
                        dtype=dtype, device=device)


def _warp_shared(x: torch.Tensor, m: torch.Tensor, size: Tuple[int, int], antialias: bool) -> torch.Tensor:
    """Warp every image of ``x`` (N, C, H, W) with the one (2, 3) float64 matrix ``m``."""
    out_h, out_w = size
    inv = torch.linalg.inv(_as3x3(m))  # crop pixel -> source pixel
    scale = float(torch.sqrt(torch.abs(torch.linalg.det(inv[:2, :2]))))
    factor = int(scale // 1) if antialias and scale >= ANTIALIAS_MIN_SCALE else 1
    h, w = x.shape[-2:]
    if factor > 1:
        # area-average the part of the source the crop reads, by an integer factor
        corners = torch.tensor([[-0.5, -0.5, 1.0], [out_w - 0.5, -0.5, 1.0], [-0.5, out_h - 0.5, 1.0],
                                [out_w - 0.5, out_h - 0.5, 1.0]], dtype=inv.dtype)
        src = corners @ inv[:2].T
        margin = 2 * factor
        x0 = int(np.floor(float(src[:, 0].min()))) - margin
        y0 = int(np.floor(float(src[:, 1].min()))) - margin
        x1 = x0 + factor * int(np.ceil((float(src[:, 0].max()) + margin - x0) / factor))
        y1 = y0 + factor * int(np.ceil((float(src[:, 1].max()) + margin - y0) / factor))
        crop = x[..., max(y0, 0):min(y1, h), max(x0, 0):min(x1, w)]
        pad = (max(0, -x0), max(0, x1 - w), max(0, -y0), max(0, y1 - h))
        if any(pad):
            crop = F.pad(crop, pad)  # zeros outside the image, like BORDER_CONSTANT=0
        x = F.avg_pool2d(crop, factor)
        # pooled pixel (x', y') is centred on source pixel (x0 + f x' + (f-1)/2, ...)
        half = (factor - 1) / 2.0
        pool = torch.tensor([[factor, 0.0, x0 + half], [0.0, factor, y0 + half], [0.0, 0.0, 1.0]], dtype=inv.dtype)
        inv = torch.linalg.inv(pool) @ inv
        h, w = x.shape[-2:]
    to_out_pixels = torch.linalg.inv(_pixel_to_norm(out_w, out_h, inv.dtype, inv.device))
    theta = _pixel_to_norm(w, h, inv.dtype, inv.device) @ inv @ to_out_pixels
    theta = theta[:2].to(x.device, x.dtype if x.is_floating_point() else torch.float32).expand(x.shape[0], 2, 3)
    grid = F.affine_grid(theta, [x.shape[0], x.shape[1], out_h, out_w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def warp_affine(images: torch.Tensor, matrix: Union[np.ndarray, torch.Tensor], size: Union[int, Sequence[int]],
                antialias: bool = True) -> torch.Tensor:
    """Differentiable ``cv2.warpAffine``: (N, C, H, W) float images -> (N, C, h, w).

    ``matrix``: (2, 3) shared by the batch, or (N, 2, 3), mapping source to output pixels
    (pixel-centre convention). ``size``: ``s`` or ``(h, w)``. Bilinear, zeros outside the
    image. ``antialias``: area-average by ``floor(scale)`` first where one output pixel spans
    >= 2 source pixels (``False`` reproduces ``cv2.warpAffine`` exactly, up to its 1/32-pixel
    fixed-point coordinates). Gradients flow to ``images``.
    """
    size_hw = (int(size), int(size)) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    m = torch.as_tensor(np.asarray(matrix) if not isinstance(matrix, torch.Tensor) else matrix.detach().cpu(),
                        dtype=torch.float64)
    if m.dim() == 2:
        return _warp_shared(images, m, size_hw, antialias)
    if m.shape[0] != images.shape[0]:
        raise ValueError(f"warp_affine: {m.shape[0]} matrices for {images.shape[0]} images")
    return torch.cat([_warp_shared(images[i:i + 1], m[i], size_hw, antialias) for i in range(m.shape[0])])


def choose_faces(faces: Sequence[Any], face_index: Union[int, str, None], name: str) -> List[Any]:
    """Pick faces from a list sorted most prominent first (see :class:`perface.detection.Face`).

    ``None``: the most prominent one, warning when a second has at least ``COMPETE_RATIO`` of
    its prominence; an int: that rank; ``"all"``: every face. Raises :class:`NoFaceError`.
    """
    if not faces:
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
                "using the most prominent (size x score). Pass face_index=N (0 = most prominent) or "
                "'all' to choose.", stacklevel=3)
        return [faces[0]]
    if isinstance(face_index, (int, np.integer)) and not isinstance(face_index, bool):
        if -len(faces) <= face_index < len(faces):
            return [faces[face_index]]
        raise NoFaceError(f"{name}: face_index={face_index} but only {len(faces)} face(s) were found "
                          f"(0 = most prominent); pass a smaller face_index.")
    raise ValueError(f"face_index must be None, an int or 'all', got {face_index!r}")


def _landmark_matrices(faces: Sequence[Any], template: str, size: int) -> np.ndarray:
    dst = template_points(template, size)
    return np.stack([similarity_transform(f.landmarks, dst) for f in faces])


def align_faces(image: Any, template: str = "arcface", size: int = 112,
                face_index: Union[int, str, None] = None, *, antialias: bool = True,
                device: Union[str, torch.device, None] = None) -> torch.Tensor:
    """Detect faces and warp them to ``template`` at ``size`` x ``size``: (K, 3, size, size) in [0, 1].

    ``image``: anything :func:`perface.load_image` accepts; a list/batch gives the crops of
    every image in order. ``face_index``: ``None`` (the most prominent face per image), an int
    (rank by prominence) or ``"all"``. Differentiable with respect to a tensor ``image``
    (landmarks themselves carry no gradient). Raises :class:`~perface.NoFaceError`.
    """
    from .detection import get_detector
    from .imageio import describe, is_batch, load_images

    get_template(template)
    sources = list(image) if isinstance(image, (list, tuple)) else None
    images = load_images(image)
    crops = []
    for i, img in enumerate(images):
        name = describe(sources[i] if sources is not None else image, i if is_batch(image) else None)
        faces = get_detector(device if device is not None else img.device).detect_padded(img)
        chosen = choose_faces(faces, face_index, name)
        crops.append(warp_affine(img.unsqueeze(0).expand(len(chosen), -1, -1, -1),
                                 _landmark_matrices(chosen, template, size), size, antialias))
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
            raise ValueError(f"align={self.source!r} expects square pre-aligned crops, got {height}x{width}; "
                             "use align='detect' for photos")
        return similarity_transform(template_points(self.source, height), template_points(self.target, self.size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return warp_affine(x, self.matrix(*x.shape[-2:]), self.size, self.antialias)

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
        from .detection import get_detector

        detector = get_detector(x.device)
        faces = [choose_faces(detector.detect_padded(img), self.face_index, f"align='detect': batch item {i}")[0]
                 for i, img in enumerate(x)]
        return warp_affine(x, _landmark_matrices(faces, self.template, self.size), self.size, self.antialias)

    def extra_repr(self) -> str:
        return f"template={self.template!r}, size={self.size}, face_index={self.face_index}"


def align_modes() -> Tuple[str, ...]:
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
