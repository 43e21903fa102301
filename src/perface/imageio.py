"""Read images of every common kind into RGB tensors (3, H, W) float32 in [0, 1].

Accepted: file paths (``str``/``os.PathLike``), ``PIL.Image``, numpy arrays HWC or HW (RGB
order; uint8, uint16, bool or float in [0, 1]), torch tensors (3, H, W), (1, H, W) or
(1, 3, H, W) (uint8 or float in [0, 1]; gradients and device are kept), and lists or batches
of those. EXIF orientation is applied; grayscale is repeated to RGB; palette and CMYK images are
converted; 16-bit images keep their precision; transparent images (RGBA, LA, palette with
transparency) are composited on white, the background most photo viewers and web pages show.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Optional

import numpy as np
import torch

from .errors import ImageReadError
from .tensor_input import to_unit_range

__all__ = ["IMAGE_SUFFIXES", "load_image", "load_images", "is_batch", "describe"]

# file endings treated as images when a folder is scanned (pools, anonymization sets)
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"})

BACKGROUND = 1.0  # transparent pixels are composited on white


def is_batch(src: Any) -> bool:
    """True for a list/tuple of images or a 4-D array/tensor (N, ...)."""
    if isinstance(src, (list, tuple)):
        return True
    return isinstance(src, (np.ndarray, torch.Tensor)) and src.ndim == 4


def describe(src: Any, index: Optional[int] = None) -> str:
    """A short name of an input for messages: its path, or its type and position."""
    if isinstance(src, (str, os.PathLike)):
        return f"image {os.fspath(src)!r}"
    where = f" #{index}" if index is not None else ""
    if isinstance(src, (np.ndarray, torch.Tensor)):
        return f"{type(src).__name__}{where} of shape {tuple(src.shape)}"
    return f"{type(src).__name__}{where}"


def _read_file(path: Path):
    from PIL import Image, UnidentifiedImageError

    if not path.exists():
        raise ImageReadError(f"image {str(path)!r}: file not found (working directory {os.getcwd()}); check the path.")
    if path.is_dir():
        raise ImageReadError(f"image {str(path)!r}: is a directory; pass an image file.")
    if path.stat().st_size == 0:
        raise ImageReadError(f"image {str(path)!r}: file is empty (0 bytes); re-download or re-export it.")
    try:
        im = Image.open(path)
        im.load()
    except UnidentifiedImageError:
        raise ImageReadError(f"image {str(path)!r}: not a readable image (format not recognized); pass a JPEG, "
                             "PNG, WebP, BMP or TIFF file.") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"image {str(path)!r}: file is truncated or corrupt ({exc}); re-download or "
                             "re-export it.") from None
    return im


def _composite(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return rgb * alpha + BACKGROUND * (1.0 - alpha)


def _from_pil(im) -> np.ndarray:
    """PIL image -> HWC float32 RGB in [0, 1] (EXIF orientation applied)."""
    from PIL import ImageOps

    im = ImageOps.exif_transpose(im)
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        gray = np.asarray(im, dtype=np.float32) / 65535.0
        return np.repeat(np.clip(gray, 0.0, 1.0)[..., None], 3, axis=2)
    if mode == "F":
        gray = np.asarray(im, dtype=np.float32)
        gray = gray / 255.0 if gray.max() > 1.0 else gray
        return np.repeat(np.clip(gray, 0.0, 1.0)[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info):
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
        return _composite(rgba[..., :3], rgba[..., 3:])
    return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def _from_numpy(arr: np.ndarray, name: str) -> np.ndarray:
    """HW or HWC numpy array -> HWC float32 RGB in [0, 1]."""
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"{name}: numpy images must be HW or HWC with 1, 3 or 4 channels (RGB order), got shape "
                         f"{arr.shape}; for channels-first data pass a torch tensor.")
    if arr.dtype == np.uint8:
        x = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        x = arr.astype(np.float32) / 65535.0
    elif arr.dtype == np.bool_:
        x = arr.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.floating):
        x = arr.astype(np.float32)
        lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
        if not (lo >= -1e-3 and hi <= 1 + 1e-3):
            raise ValueError(f"{name}: float values in [{lo:.4g}, {hi:.4g}] must lie in [0, 1]; divide 0..255 data "
                             "by 255 or pass uint8.")
        x = np.clip(x, 0.0, 1.0)
    else:
        raise TypeError(f"{name}: unsupported numpy dtype {arr.dtype}; use uint8, uint16 or float in [0, 1].")
    if x.shape[2] == 4:
        x = _composite(x[..., :3], x[..., 3:])
    elif x.shape[2] == 1:
        x = np.repeat(x, 3, axis=2)
    return x


def load_image(src: Any) -> torch.Tensor:
    """One image -> RGB tensor (3, H, W) float32 in [0, 1] (see the module docstring for inputs).

    A tensor input keeps its device and autograd graph. Raises :class:`~perface.ImageReadError`
    for missing, empty, truncated or non-image files.
    """
    from PIL import Image

    name = describe(src)
    if isinstance(src, torch.Tensor):
        if src.dim() == 4 and src.shape[0] != 1:
            raise ValueError(f"{name}: a batch of {src.shape[0]} images; use load_images for batches.")
        return to_unit_range(src, name=name)[0].float()
    if isinstance(src, (str, os.PathLike)):
        array = _from_pil(_read_file(Path(src)))
    elif isinstance(src, Image.Image):
        array = _from_pil(src)
    elif isinstance(src, np.ndarray):
        if src.ndim == 4:
            if src.shape[0] != 1:
                raise ValueError(f"{name}: a batch of {src.shape[0]} images; use load_images for batches.")
            src = src[0]
        array = _from_numpy(src, name)
    else:
        raise TypeError(f"{name}: expected a path, PIL.Image, numpy array or torch tensor.")
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def load_images(srcs: Any) -> List[torch.Tensor]:
    """A list/tuple of images or a 4-D batch -> list of (3, H, W) tensors; one image -> [it]."""
    if isinstance(srcs, (list, tuple)):
        return [load_image(s) for s in srcs]
    if isinstance(srcs, torch.Tensor) and srcs.dim() == 4:
        return list(to_unit_range(srcs, name=describe(srcs)).float().unbind(0))
    if isinstance(srcs, np.ndarray) and srcs.ndim == 4:
        return [load_image(a) for a in srcs]
    return [load_image(srcs)]
