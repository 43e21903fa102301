"""Read images of every common kind into RGB tensors (3, H, W) float32 in [0, 1].

Accepted: file paths (``str``/``os.PathLike``), ``PIL.Image``, numpy arrays HWC or HW (RGB
order; uint8, uint16, bool or float in [0, 1]), torch tensors (3, H, W), (1, H, W) or
(1, 3, H, W) (uint8 or float in [0, 1]; gradients and device are kept), and lists or batches
of those. EXIF orientation is applied; grayscale is repeated to RGB; palette and CMYK images are
converted; 16-bit images keep their precision; transparent images (RGBA, LA, palette with
transparency) are composited on white, the background most photo viewers and web pages show.
HEIC/HEIF photos (iPhone) are read through ``pillow-heif`` (the optional extra ``heic``).

The photo pipeline reads files through :class:`Photo`, which decodes JPEGs only as finely as the
next step needs (libjpeg's DCT scaling, ``PIL.Image.draft``) and keeps 8-bit images as uint8.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar

import numpy as np
import torch

from .errors import ImageReadError
from .tensor_input import to_unit_range

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["IMAGE_SUFFIXES", "Photo", "load_image", "load_images", "is_batch", "batch_items", "describe"]

# file endings treated as images when a folder is scanned (pools, anonymization sets)
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".heic", ".heif"}
)
HEIF_SUFFIXES = frozenset({".heic", ".heif"})
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif")
T = TypeVar("T")
_UINT8_MODES = frozenset({"RGB", "L", "CMYK", "YCbCr", "1"})  # converted to 8-bit RGB without loss

BACKGROUND = 1.0  # transparent pixels are composited on white


def is_batch(src: Any) -> bool:
    """True for a list/tuple of images or a 4-D array/tensor (N, ...)."""
    if isinstance(src, (list, tuple)):
        return True
    return isinstance(src, (np.ndarray, torch.Tensor)) and src.ndim == 4


def batch_items(src: Any) -> list[Any]:
    """The images of a list/tuple or 4-D array/tensor batch; any other input -> ``[src]``."""
    if isinstance(src, (list, tuple)):
        return list(src)
    if isinstance(src, torch.Tensor) and src.dim() == 4:
        return list(src.unbind(0))
    if isinstance(src, np.ndarray) and src.ndim == 4:
        return list(src)
    return [src]


def describe(src: Any, index: Optional[int] = None) -> str:
    """A short name of an input for messages: its path, or its type and position."""
    if isinstance(src, (str, os.PathLike)):
        return f"image {os.fspath(src)!r}"
    where = f" #{index}" if index is not None else ""
    if isinstance(src, (np.ndarray, torch.Tensor)):
        return f"{type(src).__name__}{where} of shape {tuple(src.shape)}"
    return f"{type(src).__name__}{where}"


def _check_file(path: Path) -> None:
    """Raise :class:`ImageReadError` for a missing, directory or empty path."""
    if not path.exists():
        raise ImageReadError(f"image {str(path)!r}: file not found (working directory {os.getcwd()}); check the path.")
    if path.is_dir():
        raise ImageReadError(f"image {str(path)!r}: is a directory; pass an image file.")
    if path.stat().st_size == 0:
        raise ImageReadError(f"image {str(path)!r}: file is empty (0 bytes); re-download or re-export it.")


def _is_heif(path: Path) -> bool:
    if path.suffix.lower() in HEIF_SUFFIXES:
        return True
    with open(path, "rb") as fh:
        head = fh.read(12)
    return head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS


def _register_heif(path: Path) -> None:
    """Let Pillow open HEIC/HEIF files (``pillow-heif``); without it, name the extra."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        raise ImageReadError(
            f"image {str(path)!r}: HEIC/HEIF photos need pillow-heif; install it with "
            'pip install "perface[heic]" (or convert the photo to JPEG).'
        ) from None
    register_heif_opener()


def _read_file(
    path: Path, convert: Callable[[Any], T], draft_size: Optional[tuple[int, int]] = None, load: bool = True
) -> T:
    """Open the image file ``path`` and return ``convert(image)``, the image decoded unless
    ``load`` is False; the file is closed on every path. ``draft_size``: (w, h) in stored
    orientation; a JPEG is then decoded at the coarsest DCT scale (1/1, 1/2, 1/4, 1/8) whose
    size is at least this. Raises :class:`ImageReadError`."""
    from PIL import Image, UnidentifiedImageError

    _check_file(path)
    if _is_heif(path):
        _register_heif(path)
    try:
        with Image.open(path) as im:
            if draft_size is not None and im.format in ("JPEG", "MPO"):
                im.draft(im.mode, draft_size)
            if load:
                im.load()
            return convert(im)
    except UnidentifiedImageError:
        raise ImageReadError(
            f"image {str(path)!r}: not a readable image (format not recognized); pass a JPEG, "
            "PNG, WebP, HEIC, BMP or TIFF file."
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageReadError(
            f"image {str(path)!r}: file is truncated or corrupt ({exc}); re-download or re-export it."
        ) from None


def _composite(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return rgb * alpha + BACKGROUND * (1.0 - alpha)


def _from_pil(im: Image.Image) -> np.ndarray:
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
        raise ValueError(
            f"{name}: numpy images must be HW or HWC with 1, 3 or 4 channels (RGB order), got shape "
            f"{arr.shape}; for channels-first data pass a torch tensor."
        )
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
            raise ValueError(
                f"{name}: float values in [{lo:.4g}, {hi:.4g}] must lie in [0, 1]; divide 0..255 data "
                "by 255 or pass uint8."
            )
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
        array: np.ndarray = _read_file(Path(src), _from_pil)
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


def load_images(srcs: Any) -> list[torch.Tensor]:
    """A list/tuple of images or a 4-D batch -> list of (3, H, W) tensors; one image -> [it]."""
    if isinstance(srcs, (list, tuple)):
        return [load_image(s) for s in srcs]
    if isinstance(srcs, torch.Tensor) and srcs.dim() == 4:
        return list(to_unit_range(srcs, name=describe(srcs)).float().unbind(0))
    if isinstance(srcs, np.ndarray) and srcs.ndim == 4:
        return [load_image(a) for a in srcs]
    return [load_image(srcs)]


def _pil_pixels(im: Image.Image) -> torch.Tensor:
    """Loaded PIL image -> (3, H, W), EXIF orientation applied: uint8 0..255 for 8-bit images
    (transparent ones composited on white), else float32 in [0, 1] (16-bit and float images
    keep their precision). A large photo is copied once, not once per step: the tensor shares
    the array's memory, and nothing downstream writes into it."""
    from PIL import Image, ImageOps

    transparent = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info)
    if im.mode not in _UINT8_MODES and im.mode != "P" and not transparent:
        return torch.from_numpy(np.ascontiguousarray(_from_pil(im).transpose(2, 0, 1)))
    if im.getexif().get(0x0112, 1) != 1:
        im = ImageOps.exif_transpose(im)
    if transparent and im.mode == "RGBA" and im.getchannel("A").getextrema() == (255, 255):
        transparent = False  # opaque alpha (common in exported PNGs): 0.7 ms to check, 3.6 ms of compositing saved
    if transparent:
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im.convert("RGBA"))
    if im.mode != "RGB":
        im = im.convert("RGB")
    with warnings.catch_warnings():  # a read-only array: see above
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(np.asarray(im)).permute(2, 0, 1)


def _header(im: Image.Image) -> Optional[tuple[tuple[int, int], bool]]:
    """For a JPEG (decodable at reduced scale): (h, w) as stored and whether its EXIF orientation
    stores it sideways; None for other formats (PNG keeps EXIF after the pixels: reading the
    header would decode them)."""
    if im.format not in ("JPEG", "MPO"):
        return None
    w, h = im.size
    return (h, w), im.getexif().get(0x0112, 1) in (5, 6, 7, 8)


class Photo:
    """One input of the photo pipeline, decoded only as finely as the next step needs.

    ``Photo(src)`` accepts what :func:`load_image` accepts. A JPEG file is not decoded until
    :meth:`pixels` asks for a scale: it is then decoded at the coarsest DCT scale (1, 1/2, 1/4
    or 1/8) that is at least that fine, which is several times faster than a full decode. Other
    inputs are decoded (or held) at full resolution at once; tensors keep their device and
    autograd graph. Raises :class:`ImageReadError` (here, or from :meth:`pixels` for a JPEG).

    Attributes:
        name: the input as named in messages (:func:`describe`).
        size: ``(H, W)`` of the full-resolution image, EXIF orientation applied.
    """

    def __init__(self, src: Any) -> None:
        self.name = describe(src)
        self._path = Path(src) if isinstance(src, (str, os.PathLike)) else None
        self._decoded: Optional[tuple[float, torch.Tensor]] = None
        header = None if self._path is None else _read_file(self._path, _header, load=False)
        self._reducible = header is not None
        if header is not None:
            self._stored, sideways = header
            self.size: tuple[int, int] = self._stored[::-1] if sideways else self._stored
            return
        from PIL import Image

        if self._path is not None:
            pixels = _read_file(self._path, _pil_pixels)
        elif isinstance(src, Image.Image):
            pixels = _pil_pixels(src)
        elif isinstance(src, np.ndarray) and src.dtype == np.uint8 and src.ndim == 3 and src.shape[2] == 3:
            pixels = torch.from_numpy(src).permute(2, 0, 1)
        else:
            pixels = load_image(src)
        self._decoded = (1.0, pixels)
        self.size = (int(pixels.shape[-2]), int(pixels.shape[-1]))

    def pixels(self, min_scale: float = 1.0) -> tuple[torch.Tensor, float]:
        """The image decoded at ``scale >= min_scale`` (decoded pixels per full-resolution pixel):
        ``(pixels, scale)``, pixels (3, h, w) uint8 0..255 or float in [0, 1]. Pixel ``(i, j)``
        of the result covers full-resolution pixels ``[j / scale, (j + 1) / scale)`` (and the same
        for rows). Only the last decode is kept. Raises :class:`ImageReadError`."""
        if self._decoded is not None and self._decoded[0] >= min_scale:
            return self._decoded[1], self._decoded[0]
        assert self._path is not None
        factor = 1
        if self._reducible:
            while factor < 8 and 1.0 / (2 * factor) >= min_scale:
                factor *= 2
        h, w = self._stored
        draft = None if factor == 1 else (max(1, w // factor), max(1, h // factor))
        self._decoded = None  # free the previous decode before making the next
        pixels = _read_file(self._path, _pil_pixels, draft)
        factor = 2 ** round(math.log2(self.size[1] / pixels.shape[-1]))  # the scale libjpeg chose
        self._decoded = (1.0 / factor, pixels)
        return pixels, 1.0 / factor
