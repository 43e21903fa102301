"""Named five-point landmark templates: where a face's eyes, nose and mouth corners sit in an
aligned crop. Each model checkpoint names the template it was trained on (``ModelSpec.template``).

Points are ``(x, y)`` in pixels of a ``size`` x ``size`` crop, pixel-centre convention (pixel
``(i, j)`` has its centre at ``x = j, y = i``, as in OpenCV), ordered left eye, right eye, nose
tip, left mouth corner, right mouth corner ("left" = smaller x).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Template", "TEMPLATES", "get_template", "template_points", "list_templates"]

Points = tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Template:
    """A five-point template defined at ``size`` x ``size`` pixels."""

    name: str
    size: int
    points: Points
    description: str

    def scaled(self, size: int) -> np.ndarray:
        """(5, 2) float64 points for a ``size`` x ``size`` crop of the same framing.

        Pixel-centre convention: ``p' = (p + 0.5) * size / self.size - 0.5``, so that resizing
        the crop with ``align_corners=False`` interpolation keeps the points on the features.
        """
        ratio = size / self.size
        return (np.asarray(self.points, dtype=np.float64) + 0.5) * ratio - 0.5


TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in (
        Template(
            name="arcface",
            size=112,
            points=((38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366), (41.5493, 92.3655), (70.7299, 92.2041)),
            description="insightface ArcFace 112x112 template (what SFace and insightface models expect)",
        ),
        Template(
            name="simceleba",
            size=112,
            points=((39.730, 51.138), (72.270, 51.138), (56.000, 68.493), (42.463, 87.010), (69.537, 87.010)),
            description="SimSwap's frontal template at 112; SimCelebA crops are this framing at 224 "
            "(mouth row ~174 of 224)",
        ),
        Template(
            name="ffhq",
            size=512,
            points=(
                (192.98138, 239.94708),
                (318.90277, 240.1936),
                (256.63416, 314.01935),
                (201.26117, 371.41043),
                (313.08905, 371.15118),
            ),
            description="FFHQ / CelebA-HQ aligned crops: mean five-point positions in FFHQ-aligned 512x512 faces "
            "(the template of facexlib's FaceRestoreHelper, used by GFPGAN and CodeFormer)",
        ),
    )
}

# the size pre-aligned crops of each format usually come in (used when none is given)
DEFAULT_SIZES = {"arcface": 112, "simceleba": 224, "ffhq": 512}


def list_templates() -> tuple[str, ...]:
    """Names of the known templates."""
    return tuple(sorted(TEMPLATES))


def get_template(name: str) -> Template:
    """The template ``name``; ``ValueError`` names the known ones."""
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown template {name!r}; known templates: {', '.join(list_templates())}") from None


def template_points(name: str, size: int) -> np.ndarray:
    """(5, 2) float64 points of template ``name`` for a ``size`` x ``size`` crop."""
    return get_template(name).scaled(size)
