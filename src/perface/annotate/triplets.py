"""Making the questions of a study: triplets of face images and catch trials.

Three ways to choose triplets (reference, candidate ``a``, candidate ``b``):

- :func:`random_triplets`: three distinct images drawn at random; no triplet (reference plus
  unordered pair of candidates) twice.
- :func:`uncertain_triplets`: where the current metric is least sure: the two candidates'
  cosine similarities to the reference are closest. These are the answers that teach a metric
  most (as in active learning); the triplet CSV records both similarities and the metric
  signature.
- :func:`design_triplets`: the SimCelebA design (Kumagai et al., ICIP 2025): each group holds
  face swaps of one target with different sources; a triplet takes three images of one group,
  one as the reference, so that the candidates differ only by what the sources brought.

:func:`catch_trials` makes attention checks: one candidate *is* the reference image, so an
attentive annotator always picks it.
"""

from __future__ import annotations

import csv
import math
import os
import random
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Union

from ..imageio import IMAGE_SUFFIXES
from .study import Item

__all__ = [
    "collect_images",
    "load_groups",
    "random_triplets",
    "uncertain_triplets",
    "design_triplets",
    "catch_trials",
    "n_possible",
    "warn_failures",
]

PathLike = Union[str, "os.PathLike[str]"]


def _norm(path: PathLike) -> Path:
    return Path(os.path.normpath(os.path.abspath(path)))


def _scan(folder: Path) -> list[Path]:
    from ..ranking.scan import scan_pool

    return [_norm(folder / rel) for rel in scan_pool(folder)[0]]


def collect_images(inputs: Sequence[PathLike]) -> tuple[list[Path], list[Path]]:
    """The face images named by ``inputs`` and the folders they were declared in.

    Each input is a folder (searched recursively; hidden files skipped), an image file, or a
    ``.txt`` list of image paths (one a line, relative to the list's folder; ``#`` comments).
    Returns ``(images, roots)``: absolute paths without duplicates in the order found, and the
    folders the annotation server may serve images from (each folder given, and the folder of
    each file given or listed). Raises ``FileNotFoundError`` for a missing input and
    ``ValueError`` when an input names no image.
    """
    images: list[Path] = []
    roots: list[Path] = []
    for spec in inputs:
        path = _norm(spec)
        if path.is_dir():
            found = _scan(path)
            roots.append(path)
        elif path.is_file() and path.suffix.lower() == ".txt":
            lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
            found = [_norm(path.parent / ln) for ln in lines if ln and not ln.startswith("#")]
            missing = [str(p) for p in found if not p.is_file()]
            if missing:
                raise FileNotFoundError(
                    f"{path}: listed image(s) not found: {', '.join(missing[:5])}"
                    + (" ..." if len(missing) > 5 else "")
                    + "; fix the list"
                )
            roots += [p.parent for p in found]
        elif path.is_file():
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise ValueError(
                    f"{spec}: not an image ({path.suffix or 'no suffix'}); pass image files, folders "
                    "or a .txt list of images"
                )
            found = [path]
            roots.append(path.parent)
        else:
            raise FileNotFoundError(
                f"{spec}: no such file or folder; pass folders of face images, image files or a .txt list of images"
            )
        if not found:
            raise ValueError(f"{spec}: no images found ({', '.join(sorted(IMAGE_SUFFIXES))})")
        images += [p for p in found if p not in images]
    return images, sorted(set(roots))


def load_groups(spec: PathLike) -> tuple[dict[str, list[tuple[Path, str]]], list[Path]]:
    """Groups of face swaps for :func:`design_triplets`, and the folders they live in.

    ``spec``: a folder whose subfolders are the groups (one per target; each image its own
    source), or a CSV with columns ``group`` and ``image`` (relative to the CSV's folder or
    absolute) and optionally ``source`` (images of one group with the same source are never put
    in one triplet). Returns ``({group: [(image, source), ...]}, roots)``.
    """
    path = _norm(spec)
    groups: dict[str, list[tuple[Path, str]]] = {}
    if path.is_dir():
        for sub in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
            groups[sub.name] = [(img, img.name) for img in _scan(sub)]
        roots = [path]
    elif path.is_file():
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if not {"group", "image"} <= set(reader.fieldnames or []):
                raise ValueError(
                    f"{spec}: a groups CSV needs columns 'group' and 'image' (optional 'source'); "
                    f"got {reader.fieldnames}"
                )
            for line, row in enumerate(reader, start=2):
                img = _norm(path.parent / row["image"].strip())
                if not img.is_file():
                    raise FileNotFoundError(f"{spec}, line {line}: image {img} not found; fix the path")
                groups.setdefault(row["group"].strip(), []).append((img, (row.get("source") or "").strip() or img.name))
        roots = sorted({img.parent for members in groups.values() for img, _ in members})
    else:
        raise FileNotFoundError(
            f"--groups {spec}: no such file or folder; pass a folder of group subfolders "
            "or a CSV with columns group,image[,source]"
        )
    groups = {g: m for g, m in groups.items() if m}
    if not groups:
        raise ValueError(f"--groups {spec}: no groups with images found")
    return groups, roots


def n_possible(n_images: int) -> int:
    """How many distinct triplets (reference, unordered candidate pair) ``n_images`` images give."""
    return n_images * (n_images - 1) * (n_images - 2) // 2


def _check_count(n: int, n_images: int, what: str) -> None:
    if n_images < 3:
        raise ValueError(f"{what}: a triplet needs 3 different images, got {n_images}; add more faces")
    if n > n_possible(n_images):
        raise ValueError(
            f"{what}: {n_images} images give only {n_possible(n_images)} distinct triplets, "
            f"{n} asked; ask for fewer (--n) or add faces"
        )


def _item(
    index: int,
    ref: Path,
    first: Path,
    second: Path,
    kind: str,
    rng: random.Random,
    extra: Optional[dict[str, str]] = None,
) -> Item:
    """A triplet with the two candidates in random order (so neither side is favoured)."""
    a, b = (first, second) if rng.random() < 0.5 else (second, first)
    return Item(f"q{index:05d}", ref, a, b, kind, extra=dict(extra or {}))


def random_triplets(images: Sequence[Path], n: int, seed: int = 0) -> list[Item]:
    """``n`` triplets of three distinct images drawn uniformly, none repeated (a reference with
    the same two candidates in either order counts as the same triplet). Deterministic for a
    ``seed``. Raises ``ValueError`` when fewer than ``n`` distinct triplets exist."""
    _check_count(n, len(images), "random triplets")
    rng = random.Random(seed)
    seen = set()
    items: list[Item] = []
    while len(items) < n:
        r, i, j = rng.sample(range(len(images)), 3)
        key = (r, min(i, j), max(i, j))
        if key in seen:
            continue
        seen.add(key)
        items.append(_item(len(items) + 1, images[r], images[i], images[j], "random", rng))
    return items


def uncertain_triplets(
    images: Sequence[Path],
    n: int,
    model: Any = None,
    seed: int = 0,
    window: int = 4,
    batch_size: int = 32,
    progress: bool = True,
    device: Any = "auto",
) -> tuple[list[Item], str, dict[Path, str]]:
    """The ``n`` triplets where ``model`` is least sure: smallest ``|sim(ref, a) - sim(ref, b)|``.

    Every image is embedded once (:func:`perface.embed_images`; images without a usable face
    are left out and returned with the reason). For each reference the other faces are sorted
    by cosine similarity to it and pairs at most ``window`` places apart are candidates (the
    closest pairs of similarities are neighbours in that order); the candidates with the
    smallest gaps are taken, each reference at most ``ceil(n / faces) + 1`` times while others
    remain so that every face serves as a reference. Returns ``(items, signature, failures)``:
    ``items`` carry ``sim_a``/``sim_b``; ``signature`` is the metric's
    (:func:`perface.signature.signature_of` with ``"detect"``).

    ``model``: a :class:`perface.PerFace` or a checkpoint name (default: the default model).
    Raises ``ValueError`` when fewer than three faces are usable or ``n`` is more than the
    candidates.
    """
    import torch

    from ..devices import resolve_device
    from ..model import PerFace
    from ..photos import embed_images
    from ..signature import signature_of

    metric = model if isinstance(model, PerFace) else (PerFace(model) if model is not None else PerFace())
    metric = metric.to(resolve_device(device)).eval()
    result = embed_images([str(p) for p in images], model=metric, batch_size=batch_size, progress=progress)
    failures = {images[i]: reason for i, reason in result.errors.items()}
    keep = [int(i) for i in torch.nonzero(result.ok).flatten()]
    faces = [images[int(result.source[i])] for i in keep]
    emb = result.embeddings[keep].double()
    _check_count(n, len(faces), "uncertain triplets")
    sims = (emb @ emb.T).numpy()
    candidates = []  # (gap, reference, i, j)
    for r in range(len(faces)):
        order = [k for k in sorted(range(len(faces)), key=lambda k: -sims[r, k]) if k != r]
        for p in range(len(order)):
            for q in range(p + 1, min(len(order), p + 1 + window)):
                i, j = order[p], order[q]
                candidates.append((abs(sims[r, i] - sims[r, j]), r, min(i, j), max(i, j)))
    if len(candidates) < n:
        raise ValueError(
            f"uncertain triplets: only {len(candidates)} candidates from {len(faces)} faces, {n} asked; "
            "ask for fewer (--n), raise the window or add faces"
        )
    candidates.sort()
    cap = math.ceil(n / len(faces)) + 1
    chosen: list[tuple[float, int, int, int]] = []  # (gap, reference, i, j)
    rest, uses = [], [0] * len(faces)
    for cand in candidates:
        if len(chosen) == n:
            break
        if uses[cand[1]] < cap:
            chosen.append(cand)
            uses[cand[1]] += 1
        else:
            rest.append(cand)
    chosen += rest[: n - len(chosen)]
    chosen.sort()
    rng = random.Random(seed)
    signature = str(signature_of(metric, "detect"))
    items = []
    for index, (_, r, i, j) in enumerate(chosen, start=1):
        item = _item(index, faces[r], faces[i], faces[j], "uncertain", rng)
        sim = {faces[i]: sims[r, i], faces[j]: sims[r, j]}
        items.append(
            Item(
                item.id,
                item.reference,
                item.a,
                item.b,
                item.kind,
                extra={"sim_a": f"{sim[item.a]:.6f}", "sim_b": f"{sim[item.b]:.6f}", "signature": signature},
            )
        )
    return items, signature, failures


def design_triplets(groups: dict[str, list[tuple[Path, str]]], n: Optional[int] = None, seed: int = 0) -> list[Item]:
    """Triplets in the SimCelebA design: three images of one group (one target swapped with
    three different sources), one of them the reference.

    Each group's images are shuffled and cut into disjoint triples with three different
    sources (as SimCelebA uses each swap once); images left over are unused. ``n``: take this
    many, spread evenly over the groups (round robin); default all. Items carry ``group``.
    Raises ``ValueError`` when no group has three images of different sources, or fewer than
    ``n`` triples exist.
    """
    rng = random.Random(seed)
    per_group: list[list[tuple[str, tuple[Path, Path, Path]]]] = []
    for name in sorted(groups):
        members = list(groups[name])
        rng.shuffle(members)
        triples = []
        while True:
            picked: list[tuple[Path, str]] = []
            for member in members:
                if member[1] not in {m[1] for m in picked}:
                    picked.append(member)
                    if len(picked) == 3:
                        break
            if len(picked) < 3:
                break
            for member in picked:
                members.remove(member)
            triples.append((name, (picked[0][0], picked[1][0], picked[2][0])))
        per_group.append(triples)
    total = sum(len(t) for t in per_group)
    if total == 0:
        raise ValueError(
            "design triplets: no group has three images of different sources; each group needs "
            "face swaps of one target with at least three sources"
        )
    if n is not None and n > total:
        raise ValueError(
            f"design triplets: the groups give {total} disjoint triplets, {n} asked; ask for fewer (--n) or add swaps"
        )
    ordered = []
    for rank in range(max(len(t) for t in per_group)):  # round robin over groups
        ordered += [t[rank] for t in per_group if rank < len(t)]
    ordered = ordered[: n if n is not None else total]
    return [
        _item(index, ref, first, second, "design", rng, {"group": group})
        for index, (group, (ref, first, second)) in enumerate(ordered, start=1)
    ]


def catch_trials(images: Sequence[Path], n: int, seed: int = 0) -> list[Item]:
    """``n`` catch trials: a reference, itself as one candidate and another image as the other,
    the side chosen at random (``expected`` names it). References cycle through ``images`` in a
    random order. Raises ``ValueError`` when fewer than two images are given and ``n > 0``."""
    if n <= 0:
        return []
    if len(images) < 2:
        raise ValueError("catch trials need at least two different images")
    rng = random.Random(f"catch-{seed}")
    order = list(images)
    rng.shuffle(order)
    items = []
    for k in range(n):
        ref = order[k % len(order)]
        other = rng.choice([p for p in images if p != ref])
        side = rng.choice("ab")
        a, b = (ref, other) if side == "a" else (other, ref)
        items.append(Item(f"c{k + 1:04d}", ref, a, b, "catch", expected=side))
    return items


def warn_failures(failures: dict[Path, str]) -> None:
    """One warning listing the images left out because no usable face was found."""
    if failures:
        warnings.warn(
            f"left out {len(failures)} image(s) without a usable face: "
            + "; ".join(failures[p] for p in sorted(failures)),
            stacklevel=2,
        )
