"""``perface.rank``: choose face-swap sources for a target from a pool of photos.

The PerFace paper's application: a source identity should be neither too similar to the target
(the swap would not anonymize) nor too dissimilar (the swap would look unnatural). ``rank``
embeds the pool once (cached, see :mod:`perface.ranking.pool`), scores every face against the
target with an exact chunked search (:mod:`perface.ranking.search`) and selects by a similarity band
or the k most/least similar, optionally within attribute groups, excluding the target's own
identity. The :class:`RankResult` writes a CSV, a contact sheet, a histogram and a failure
report.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

from ..errors import NoFaceError
from .search import DEFAULT_CHUNK_ROWS, Selection, _check_selection, search

__all__ = ["rank", "RankResult", "read_labels", "group_mask"]

PathLike = Union[str, Path]


@dataclass
class RankResult:
    """The outcome of :func:`rank`.

    Attributes:
        target: the target's name (its path, or a description).
        target_source: what was passed as the target (for thumbnails).
        target_box: (4,) face box in the target photo (NaN if unknown).
        pool: the :class:`~perface.ranking.pool.Pool` ranked (files, embeddings, boxes, errors).
        selection: chosen rows, their similarities and every row's similarity.
        rule: the selection settings (band, top, bottom, exclude_identity, groups).
        model: name of the model that made the numbers.
    """

    target: str
    target_source: object
    target_box: torch.Tensor
    pool: object
    selection: Selection
    rule: Dict[str, object] = field(default_factory=dict)
    model: str = ""

    def __len__(self) -> int:
        return len(self.selection)

    @property
    def files(self) -> List[str]:
        """Chosen pool files (relative to the pool folder), best first."""
        return [self.pool.files[i] for i in self.selection.indices.tolist()]

    @property
    def failures(self) -> Dict[str, str]:
        """Pool files without an embedding -> why (no face found, unreadable, ...)."""
        return dict(self.pool.errors)

    def rows(self) -> List[Dict[str, object]]:
        """One dict per chosen face: rank (1-based), file, similarity, box x1/y1/x2/y2."""
        out = []
        for r, (i, s) in enumerate(zip(self.selection.indices.tolist(), self.selection.scores.tolist()), start=1):
            box = [float(v) for v in self.pool.boxes[i].tolist()]
            out.append({"rank": r, "file": self.pool.files[i], "similarity": s,
                        "x1": box[0], "y1": box[1], "x2": box[2], "y2": box[3]})
        return out

    def describe_rule(self) -> str:
        """The selection rule in words (used for titles)."""
        parts = []
        if self.rule.get("band") is not None:
            lo, hi = self.rule["band"]
            parts.append(f"band [{lo:g}, {hi:g}]")
        if self.rule.get("top") is not None:
            parts.append(f"top {self.rule['top']}")
        if self.rule.get("bottom") is not None:
            parts.append(f"bottom {self.rule['bottom']}")
        if self.rule.get("exclude_identity") is not None:
            parts.append(f"same identity > {self.rule['exclude_identity']:g} excluded")
        if self.rule.get("groups"):
            parts.append("group " + ", ".join(self.rule["groups"]))
        return "; ".join(parts or ["all faces"]) + f"; model {self.model}"

    def write_csv(self, path: PathLike) -> Path:
        """CSV with columns rank, file, similarity, x1, y1, x2, y2 (box empty when unknown)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["rank", "file", "similarity", "x1", "y1", "x2", "y2"])
            for row in self.rows():
                box = ["" if v != v else f"{v:.1f}" for v in (row["x1"], row["y1"], row["x2"], row["y2"])]
                writer.writerow([row["rank"], row["file"], f"{row['similarity']:.6f}", *box])
        return path

    def write_failures(self, path: PathLike) -> Path:
        """CSV with columns file, reason: every pool photo that has no embedding."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["file", "reason"])
            for name in sorted(self.pool.errors):
                writer.writerow([name, self.pool.errors[name]])
        return path

    def contact_sheet(self, path: PathLike, *, max_faces: int = 24, tile: int = 160) -> Path:
        """PNG: the target beside the first ``max_faces`` chosen faces, each with its score."""
        from .plots import contact_sheet

        target = (_thumbnail(self.target_source, self.target_box, tile), f"target\n{Path(self.target).name}")
        tiles = []
        for r, (i, s) in enumerate(zip(self.selection.indices[:max_faces].tolist(),
                                       self.selection.scores[:max_faces].tolist()), start=1):
            caption = f"#{r}  {s:.3f}\n{self.pool.files[i]}"
            tiles.append((_thumbnail(self.pool.path(i), self.pool.boxes[i], tile), caption))
        shown = f" (first {len(tiles)} of {len(self)})" if len(tiles) < len(self) else ""
        return contact_sheet(target, tiles, path, tile=tile, title=self.describe_rule() + shown)

    def histogram(self, path: PathLike) -> Path:
        """PNG histogram of all pool similarities, band and threshold marked, choices ticked."""
        from .plots import similarity_histogram

        return similarity_histogram(self.selection.all_scores, path, band=self.rule.get("band"),
                                    exclude_above=self.rule.get("exclude_identity"), chosen=self.selection.scores,
                                    title=f"{Path(self.target).name}: {self.describe_rule()}")

    def save(self, out_dir: PathLike, *, max_faces: int = 24) -> Dict[str, Path]:
        """Write ``ranking.csv``, ``contact_sheet.png``, ``histogram.png`` and ``failures.csv``
        into ``out_dir``; returns their paths by kind."""
        out_dir = Path(out_dir)
        return {"csv": self.write_csv(out_dir / "ranking.csv"),
                "failures": self.write_failures(out_dir / "failures.csv"),
                "contact_sheet": self.contact_sheet(out_dir / "contact_sheet.png", max_faces=max_faces),
                "histogram": self.histogram(out_dir / "histogram.png")}


def _thumbnail(src, box: torch.Tensor, tile: int):
    """Face thumbnail, or a grey tile saying why there is none (an embedding as target, a file
    that changed or vanished since it was embedded)."""
    from PIL import Image, ImageDraw

    from ..errors import ImageReadError
    from .plots import face_thumbnail

    if isinstance(src, torch.Tensor) and src.dim() == 1:
        reason = "embedding"
    else:
        try:
            return face_thumbnail(src, box.tolist(), tile)
        except (ImageReadError, OSError, ValueError):
            reason = "unreadable"
    im = Image.new("RGB", (tile, tile), "#bbbbbb")
    ImageDraw.Draw(im).text((8, tile // 2 - 6), reason, fill="black")
    return im


def read_labels(path: PathLike) -> Tuple[List[str], Dict[str, Dict[str, str]]]:
    """A labels CSV: a header row, a ``file`` column (else the first column) naming each photo
    (relative to the pool folder, or a bare file name) and one column per attribute.
    Returns (attribute columns, file -> {column: value})."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames:
            raise ValueError(f"labels file {path} is empty; it needs a header row like 'file,gender,age'")
        key = "file" if "file" in reader.fieldnames else reader.fieldnames[0]
        table = {row[key].strip().replace("\\", "/"): {k: (v or "").strip() for k, v in row.items() if k != key}
                 for row in reader if row.get(key)}
    return [c for c in reader.fieldnames if c != key], table


def _lookup(table: Dict[str, Dict[str, str]], name: str) -> Optional[Dict[str, str]]:
    return table.get(name) or table.get(name.rsplit("/", 1)[-1])


def group_mask(
    files: Sequence[str],
    labels: PathLike,
    groups: Sequence[str],
    target_name: Optional[str] = None,
) -> Tuple[torch.Tensor, List[str]]:
    """(N,) bool mask of pool ``files`` inside every group, and the groups spelled out.

    Each group is ``COLUMN=VALUE`` (keep photos whose label equals VALUE) or ``COLUMN`` (keep
    photos sharing the target's label in COLUMN; the target must be in the labels file).
    Photos missing from the labels file are left out.
    """
    columns, table = read_labels(labels)
    resolved = []
    for group in groups:
        column, sep, value = group.partition("=")
        column = column.strip()
        if column not in columns:
            raise ValueError(f"group {group!r}: labels file {labels} has no column {column!r}; columns: {columns}")
        if not sep:
            row = _lookup(table, target_name.replace("\\", "/")) if target_name else None
            if row is None:
                raise ValueError(f"group {group!r}: the target {target_name!r} has no row in {labels}; "
                                 f"name the value instead, e.g. {column}=VALUE")
            value = row[column]
        resolved.append((column, value.strip()))
    keep = []
    for name in files:
        row = _lookup(table, name)
        keep.append(row is not None and all(row.get(c) == v for c, v in resolved))
    return torch.tensor(keep, dtype=torch.bool), [f"{c}={v}" for c, v in resolved]


def _as_pool(pool, embedder, cache, rebuild: bool):
    from .pool import Pool, update_pool

    if isinstance(pool, Pool):
        return pool
    if isinstance(pool, (str, os.PathLike)):
        return update_pool(pool, embedder, cache_dir=cache, rebuild=rebuild)
    paths = [Path(p).resolve() for p in pool]
    if not paths:
        raise ValueError("the pool is empty: pass a folder of photos or a list of image paths")
    root = Path(os.path.commonpath([str(p.parent) for p in paths]))
    return update_pool(root, embedder, files=[p.relative_to(root).as_posix() for p in paths],
                       cache_dir=False if cache is None else cache, rebuild=rebuild)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def rank(
    target: Any,
    pool: Any,
    *,
    band: Optional[Tuple[float, float]] = None,
    top: Optional[int] = None,
    bottom: Optional[int] = None,
    exclude_identity: Optional[float] = None,
    labels: Optional[PathLike] = None,
    group: Union[str, Sequence[str], None] = None,
    model: Any = "sface",
    cache: Union[PathLike, None, bool] = None,
    rebuild: bool = False,
    batch_size: int = 32,
    num_workers: int = 0,
    progress: bool = True,
    device: Any = None,
    chunk_size: int = DEFAULT_CHUNK_ROWS,
) -> RankResult:
    """Rank every face of ``pool`` by similarity to ``target`` and choose swap sources.

    Args:
        target: photo of the target (path, PIL image, array or tensor), or its (D,) embedding.
            When it is a file of the pool, that file is never chosen.
        pool: a folder of photos (embedded once and cached), a list of image paths, or a
            :class:`~perface.ranking.pool.Pool`.
        band: (lo, hi): keep faces with lo <= similarity <= hi, most similar first.
        top: the k most similar (inside the band if one is given). With none of
            band/top/bottom, every face is returned, most similar first.
        bottom: the k least similar (inside the band if one is given).
        exclude_identity: similarity above which a face counts as the target's own identity
            and is dropped (e.g. a verification threshold of the model).
        labels: a labels CSV (see :func:`read_labels`) naming each pool file's attributes.
        group: with ``labels``, one or more groups ``COLUMN`` (same value as the target) or
            ``COLUMN=VALUE``; only faces in every group are chosen.
        model: a :class:`perface.PerFace` or a model name/path.
        cache: cache folder for a pool folder (None: per-user default; False: none).
            Lists of paths are cached only when a folder is given.
        rebuild: re-embed everything, ignoring the cache.
        batch_size: images embedded per batch.
        num_workers: DataLoader worker processes for loading and detecting.
        progress: show a tqdm progress bar while embedding.
        device: where the backbone runs (see :class:`~perface.ranking.pool.PhotoEmbedder`).
        chunk_size: rows per search step (memory bound, see :func:`perface.ranking.search`).

    Returns:
        A :class:`RankResult`; ``.save(out_dir)`` writes the CSV, PNGs and failure report.

    Raises:
        NoFaceError / ImageReadError: the target has no usable face.
    """
    from ..errors import ImageReadError
    from .pool import PhotoEmbedder

    _check_selection(band, top, bottom, exclude_identity, None, 0)  # before any slow embedding
    if group and labels is None:
        raise ValueError("group= needs labels= (a CSV of file name and attribute columns)")
    embedder = PhotoEmbedder(model, batch_size=batch_size, num_workers=num_workers, progress=progress, device=device)
    target_path = Path(target) if isinstance(target, (str, os.PathLike)) else None
    target_name = str(target_path) if target_path is not None else type(target).__name__
    if isinstance(target, torch.Tensor) and target.dim() == 1:
        target_emb, target_box = target, torch.full((4,), float("nan"))
    else:
        got = embedder([target_path if target_path is not None else target], progress=False)
        if got.errors:
            reason = got.errors[0]
            error = ImageReadError if reason.startswith(ImageReadError.__name__) else NoFaceError
            raise error(f"target {target_name}: {reason}")
        target_emb, target_box = got.embeddings[0], got.boxes[0]
    the_pool = _as_pool(pool, embedder, cache, rebuild)  # after the target: fail fast on a bad one
    if not len(the_pool):
        raise ValueError(f"the pool {the_pool.root} holds no images (.jpg, .png, .webp, ...); check the folder")

    mask = None
    groups: List[str] = []
    if group:
        rel = None
        if target_path is not None:
            try:
                rel = target_path.resolve().relative_to(Path(the_pool.root).resolve()).as_posix()
            except ValueError:
                rel = target_path.name
        mask, groups = group_mask(the_pool.files, labels, [group] if isinstance(group, str) else list(group), rel)
    if target_path is not None:
        own = [i for i, name in enumerate(the_pool.files)
               if name.rsplit("/", 1)[-1] == target_path.name and _same_file(the_pool.path(i), target_path)]
        if own:
            mask = torch.ones(len(the_pool), dtype=torch.bool) if mask is None else mask
            mask[own] = False

    selection = search(target_emb, the_pool.embeddings, band=band, top=top, bottom=bottom,
                       exclude_above=exclude_identity, mask=mask, chunk_size=chunk_size)
    rule = {"band": band, "top": top, "bottom": bottom, "exclude_identity": exclude_identity, "groups": groups}
    return RankResult(target=target_name, target_source=target_path if target_path is not None else target,
                      target_box=target_box, pool=the_pool, selection=selection, rule=rule,
                      model=embedder.metric.name)
