"""The images of a triplet set as tensors, for training and evaluation."""

from __future__ import annotations

from pathlib import Path
import warnings
from dataclasses import replace
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .data import TripletSet

__all__ = ["TripletImages", "read_crop", "align_photos"]


def read_crop(path: Path, size: int) -> torch.Tensor:
    """An aligned crop file as a float tensor (3, size, size) in [0, 1] (resized if needed)."""
    from PIL import Image

    with Image.open(path) as im:
        x = torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1).float() / 255.0
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
        x = x.clamp(0.0, 1.0)
    return x


def align_photos(triplets: TripletSet, template: str, size: int, progress: bool = True
                 ) -> Tuple[TripletSet, Dict[Path, torch.Tensor]]:
    """Detect and align every photo of ``triplets`` once (the photo pipeline's
    :func:`perface.embedding.align_crops`, the most prominent face).

    Returns the triplets whose three photos all worked and the aligned faces, uint8
    (3, size, size) by path. Photos without a face or unreadable are listed in one warning.
    """
    from ..embedding import align_crops

    paths = sorted({p for t in triplets.triplets for p in t.paths})
    crops, errors = align_crops([str(p) for p in paths], template, size, progress=progress)
    cache: Dict[Path, torch.Tensor] = {p: (c[0] * 255).round().to(torch.uint8) for p, c in zip(paths, crops)
                                       if c is not None}
    failed: Dict[Path, str] = {paths[i]: why for i, why in errors.items()}
    if failed:
        warnings.warn(f"{triplets.source}: skipped triplets using {len(failed)} photo(s) that failed: "
                      + "; ".join(f"{p}: {why}" for p, why in failed.items()), stacklevel=2)
    kept = tuple(t for t in triplets.triplets if not set(t.paths) & set(failed))
    return replace(triplets, triplets=kept), cache


class TripletImages(Dataset):
    """Item ``i``: ``(reference, positive, negative)``, each (3, size, size) float in [0, 1].

    Crops are read and resized to ``size``; photos come from ``photos``, the aligned faces made
    by :func:`align_photos`. Every triplet must have a majority answer.
    """

    def __init__(self, triplets: TripletSet, size: int, photos: Optional[Dict[Path, torch.Tensor]] = None) -> None:
        bad = [t.id for t in triplets.triplets if t.majority is None]
        if bad:
            raise ValueError(f"{len(bad)} triplet(s) have no majority answer (e.g. {bad[:3]}); use .majority_only()")
        if triplets.images == "photos" and photos is None:
            raise ValueError("a set of photos needs its aligned faces: photos=align_photos(...)[1]")
        self.triplets = triplets
        self.size = size
        self.photos = photos

    def __len__(self) -> int:
        return len(self.triplets)

    def _read(self, path: Path) -> torch.Tensor:
        if self.photos is None:
            return read_crop(path, self.size)
        return self.photos[path].float() / 255.0

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        t = self.triplets.triplets[index]
        return self._read(t.reference), self._read(t.positive), self._read(t.negative)
