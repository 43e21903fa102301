"""The images of a triplet set as tensors, for training and evaluation.

Every image of a set is decoded once into an :class:`ImageBank`, 8-bit RGB at the network's
input size (37,632 bytes per 112 px image: 0.7 GB for all of SimCelebA's 19,200), so that epochs
after the first read no file: training batches are gathered from memory (on the GPU when
training there) and nothing but the network competes for the CPU.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from .data import PathLike, TripletSet, drop_failed

__all__ = ["ImageBank", "TripletImages", "read_crop", "align_photos"]


def read_crop(path: Path, size: int) -> torch.Tensor:
    """An aligned crop file as a float tensor (3, size, size) in [0, 1] (resized if needed)."""
    from PIL import Image

    with Image.open(path) as im:
        x = torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1).float() / 255.0
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
        x = x.clamp(0.0, 1.0)
    return x


class _Crops(Dataset):
    def __init__(self, paths: Sequence[Path], size: int) -> None:
        self.paths, self.size = list(paths), size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return (read_crop(self.paths[index], self.size) * 255).round().to(torch.uint8)


@dataclass
class ImageBank:
    """Decoded images: ``images`` (N, 3, S, S) uint8 and the row of each path in ``row``."""

    images: torch.Tensor
    row: dict[Path, int]

    @classmethod
    def decode(cls, paths: Sequence[Path], size: int, workers: int = 0, progress: bool = False) -> ImageBank:
        """Read the crops ``paths`` once (resized to ``size`` with antialiasing, rounded to 8 bits).

        ``workers``: DataLoader processes decoding in parallel; 0 decodes in this process with a
        few threads (JPEG decoding and resizing release the GIL), which needs no process start.
        """
        from concurrent.futures import ThreadPoolExecutor

        from tqdm.auto import tqdm

        paths = sorted(set(paths))
        images = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
        crops = _Crops(paths, size)
        bar = tqdm(total=len(paths), desc="decoding images", unit="image", disable=not progress, leave=False)
        if workers > 0:
            at = 0
            for chunk in DataLoader(crops, batch_size=64, num_workers=workers):
                images[at : at + len(chunk)] = chunk
                at += len(chunk)
                bar.update(len(chunk))
        else:
            with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
                for i, image in enumerate(pool.map(crops.__getitem__, range(len(paths)))):
                    images[i] = image
                    bar.update()
        bar.close()
        return cls(images, {p: i for i, p in enumerate(paths)})

    @classmethod
    def from_photos(cls, photos: dict[Path, torch.Tensor]) -> ImageBank:
        """The aligned faces of :func:`align_photos` (uint8 (3, S, S) by path)."""
        paths = sorted(photos)
        images = torch.stack([photos[p] for p in paths]) if paths else torch.empty((0, 3, 1, 1), dtype=torch.uint8)
        return cls(images, {p: i for i, p in enumerate(paths)})

    def to(self, device: torch.device) -> ImageBank:
        """The same bank with ``images`` on ``device`` (e.g. the GPU: batches are then gathered there)."""
        return ImageBank(self.images.to(device), self.row)


def align_photos(
    triplets: TripletSet, template: str, size: int, progress: bool = True, missing_list: Optional[PathLike] = None
) -> tuple[TripletSet, dict[Path, torch.Tensor]]:
    """Detect and align every photo of ``triplets`` once (the photo pipeline's
    :func:`perface.embedding.align_crops`, the most prominent face).

    Returns the triplets whose three photos all worked and the aligned faces, uint8
    (3, size, size) by path. Photos without a face or unreadable are summarized in one warning
    (and written to ``missing_list`` if given; see :func:`perface.train.data.drop_failed`);
    :class:`~perface.ImageReadError` if no triplet is left.
    """
    from ..embedding import align_crops

    paths = sorted({p for t in triplets.triplets for p in t.paths})
    crops, errors = align_crops([str(p) for p in paths], template, size, progress=progress)
    cache: dict[Path, torch.Tensor] = {
        p: (c[0] * 255).round().to(torch.uint8) for p, c in zip(paths, crops) if c is not None
    }
    failed: list[tuple[Path, str]] = [
        (paths[i], "no face" if why.startswith("NoFaceError") else "not an image") for i, why in sorted(errors.items())
    ]
    fix = "use photos with one clearly visible face (or pass aligned crops with --images crops)"
    kept = drop_failed(
        triplets,
        failed,
        fix=fix if all(why == "no face" for _, why in failed) else None,
        missing_list=missing_list,
        n_images=len(paths),
    )
    return kept, cache


class TripletImages(Dataset):
    """Item ``i``: ``(reference, positive, negative)``, each (3, S, S) float in [0, 1].

    The images come from ``bank`` (see :meth:`from_set`); :meth:`uint8_batch` gathers whole
    batches without a DataLoader. Every triplet must have a majority answer.
    """

    def __init__(self, triplets: TripletSet, bank: ImageBank) -> None:
        bad = [t.id for t in triplets.triplets if t.majority is None]
        if bad:
            raise ValueError(f"{len(bad)} triplet(s) have no majority answer (e.g. {bad[:3]}); use .majority_only()")
        self.triplets = triplets
        self.bank = bank
        rows = [[bank.row[t.reference], bank.row[t.positive], bank.row[t.negative]] for t in triplets.triplets]
        self.rows = torch.tensor(rows, dtype=torch.long).reshape(-1, 3)

    @classmethod
    def from_set(
        cls,
        triplets: TripletSet,
        size: int,
        photos: Optional[dict[Path, torch.Tensor]] = None,
        workers: int = 0,
        progress: bool = False,
    ) -> TripletImages:
        """Crops are decoded into a new bank (``workers`` processes); photos come from ``photos``,
        the aligned faces of :func:`align_photos`."""
        if triplets.images == "photos":
            if photos is None:
                raise ValueError("a set of photos needs its aligned faces: photos=align_photos(...)[1]")
            return cls(triplets, ImageBank.from_photos(photos))
        paths = [p for t in triplets.triplets for p in t.paths]
        return cls(triplets, ImageBank.decode(paths, size, workers, progress))

    @property
    def size(self) -> int:
        return int(self.bank.images.shape[-1])

    def __len__(self) -> int:
        return len(self.triplets)

    def uint8_batch(self, index: torch.Tensor) -> torch.Tensor:
        """Triplets ``index`` as (B, 3, 3, S, S) uint8: reference, positive, negative (on the bank's device)."""
        return self.bank.images[self.rows[index].to(self.bank.images.device)]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ref, pos, neg = self.uint8_batch(torch.tensor([index]))[0].float().div(255.0)
        return ref, pos, neg
