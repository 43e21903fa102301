"""``make_study``: from face images (or groups of face swaps) to a study folder ready to serve."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Union

from ..signature import Signature
from .display import face_crops
from .study import Study, load_study, write_study
from .triplets import (
    catch_trials,
    collect_images,
    design_triplets,
    load_groups,
    random_triplets,
    uncertain_triplets,
    warn_failures,
)

__all__ = ["make_study", "MODES", "DISPLAYS"]

MODES = ("random", "uncertain", "design")
DISPLAYS = ("crops", "photos")
PathLike = Union[str, "os.PathLike[str]"]


def _crops(images: Sequence[Path], display: str, progress: bool) -> tuple[Optional[dict[Path, bytes]], dict[Path, str]]:
    if display != "crops":
        return None, {}
    crops, failures = face_crops(images, progress=progress)
    warn_failures(failures)
    return crops, failures


def make_study(
    out: PathLike,
    faces: Sequence[PathLike] = (),
    mode: str = "random",
    n: Optional[int] = None,
    groups: Optional[PathLike] = None,
    catch: float = 0.1,
    seed: int = 0,
    model: Any = None,
    display: str = "crops",
    batch_size: int = 32,
    progress: bool = True,
    device: Any = "auto",
) -> Study:
    """Make the questions of an annotation study and write them to the folder ``out``.

    Args:
        out: a new folder (see :mod:`perface.annotate.study` for what goes in it).
        faces: folders of face images, image files or ``.txt`` lists of images (``random`` and
            ``uncertain`` modes).
        mode: ``"random"``, ``"uncertain"`` (where ``model`` is least sure) or ``"design"``
            (SimCelebA's design over ``groups``); see :mod:`perface.annotate.triplets`.
        n: number of triplets (required for ``random`` and ``uncertain``; ``design`` default: all).
        groups: ``design`` mode: a folder of group subfolders or a CSV ``group,image[,source]``.
        catch: catch trials as a fraction of the triplets (at least one when > 0; 0 for none).
        seed: makes the choice repeatable.
        model: ``uncertain`` mode: a :class:`perface.PerFace` or checkpoint name (default model).
        display: ``"crops"``: annotators see each photo's face aligned in SimCelebA's framing
            (:mod:`perface.annotate.display`; photos without a usable face are left out with a
            warning); ``"photos"``: the files as they are (already cropped faces).

    Returns the study as read back. Raises ``ValueError`` for bad arguments or too few images,
    ``FileNotFoundError`` for missing inputs, ``FileExistsError`` when ``out`` holds a study.
    """
    if display not in DISPLAYS:
        raise ValueError(f"display must be one of {', '.join(DISPLAYS)}, got {display!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not 0.0 <= catch <= 1.0:
        raise ValueError(f"catch must be a fraction from 0 to 1, got {catch}")
    if n is not None and n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    signature = model_name = None
    if mode == "design":
        if groups is None:
            raise ValueError("design mode needs --groups: a folder of group subfolders or a CSV group,image[,source]")
        found, roots = load_groups(groups)
        crops, failures = _crops(sorted({img for members in found.values() for img, _ in members}), display, progress)
        items = design_triplets(
            {g: [m for m in members if m[0] not in failures] for g, members in found.items()}, n, seed
        )
    else:
        if groups is not None:
            raise ValueError(f"--groups goes with --mode design, not --mode {mode}")
        if not faces:
            raise ValueError(f"{mode} mode needs face images: pass folders, image files or .txt lists")
        if n is None:
            raise ValueError(f"{mode} mode needs the number of triplets (--n)")
        images, roots = collect_images(faces)
        crops, failures = _crops(images, display, progress)
        images = [p for p in images if p not in failures]
        if mode == "random":
            items = random_triplets(images, n, seed)
        else:
            items, signature, failures = uncertain_triplets(
                images, n, model, seed, batch_size=batch_size, progress=progress, device=device
            )
            warn_failures(failures)
            model_name = Signature.parse(signature).model
    n_catch = math.ceil(catch * len(items)) if catch > 0 else 0
    trials = catch_trials(sorted({p for i in items for p in (i.reference, i.a, i.b)}), n_catch, seed)
    write_study(out, items, trials, roots, mode, seed, model=model_name, signature=signature, crops=crops)
    return load_study(Path(out))
