"""What annotators see: each photo's face, cut out in SimCelebA's framing at a fixed size.

People judge what they are shown. Whole photos bring clothes, background and scale into the
judgment; the SimCelebA annotators saw 224x224 face crops. :func:`face_crops` detects the most
prominent face of each photo (RetinaFace) and aligns it to the ``simceleba`` template, the same
framing at any ``size``. The crops are for display only: the triplet CSVs keep the original
photos, which training detects and aligns to its own model's template.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from pathlib import Path

__all__ = ["face_crops", "crop_name", "DISPLAY_TEMPLATE", "DISPLAY_SIZE"]

DISPLAY_TEMPLATE = "simceleba"
DISPLAY_SIZE = 256


def crop_name(path: Path) -> str:
    """The file name of ``path``'s crop in ``STUDY/crops/`` (a hash of its absolute path)."""
    return hashlib.sha256(str(path).encode()).hexdigest()[:20] + ".png"


def face_crops(
    images: Sequence[Path], size: int = DISPLAY_SIZE, progress: bool = True
) -> tuple[dict[Path, bytes], dict[Path, str]]:
    """PNG bytes of each image's most prominent face aligned to the ``simceleba`` template,
    ``size`` x ``size`` pixels, and ``{image: reason}`` for images without a usable face."""
    from PIL import Image
    from tqdm.auto import tqdm

    from ..errors import PerFaceError
    from ..photos import prepare_face

    crops: dict[Path, bytes] = {}
    failures: dict[Path, str] = {}
    for path in tqdm(images, unit="img", desc="face crops", disable=not progress):
        try:
            crop = prepare_face(str(path), template=DISPLAY_TEMPLATE, size=size, device="cpu")
        except (PerFaceError, OSError, ValueError) as exc:
            failures[path] = f"{path}: {exc}" if str(path) not in str(exc) else str(exc)
            continue
        pixels = (crop.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG")
        crops[path] = buf.getvalue()
    return crops, failures
