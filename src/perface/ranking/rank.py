"""``perface.rank``: choose face-swap sources for a target from a pool of photos.

The PerFace paper's application: a source identity should be neither too similar to the target
(the swap would not anonymize) nor too dissimilar (the swap would look unnatural). ``rank``
embeds the pool once (cached, see :mod:`perface.ranking.pool`), scores every face against the
target with an exact chunked search (:mod:`perface.ranking.search`) and selects by a similarity
band or the k most/least similar, optionally within attribute groups, leaving out the target's
own file and its byte-identical copies and, optionally, its identity. The :class:`RankResult`
writes a CSV, a contact sheet, a histogram, a failure report and a summary, each carrying the
metric signature (:mod:`perface.signature`).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

import torch

from .._io import atomic_dir, atomic_write_text
from ..labels import read_labels
from ..registry import DEFAULT_MODEL
from .pool import SAVE_EVERY, Pool, PoolSet
from .search import DEFAULT_CHUNK_ROWS, Selection, _check_selection, search

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["rank", "RankResult", "group_mask", "write_failures", "OUTPUTS"]

PathLike = Union[str, Path]

#: What :meth:`RankResult.save` writes, by kind.
OUTPUTS = {
    "csv": "ranking.csv",
    "failures": "failures.csv",
    "contact_sheet": "contact_sheet.png",
    "histogram": "histogram.png",
    "summary": "summary.json",
}


@dataclass
class RankResult:
    """The outcome of :func:`rank`.

    Attributes:
        target: the target's name (its path, or a description).
        target_source: what was passed as the target (for thumbnails).
        target_box: (4,) face box in the target photo (NaN if unknown).
        pool: the :class:`~perface.ranking.pool.PoolSet` ranked (one pool, or its shards).
        selection: chosen rows, their similarities and every row's similarity.
        rule: the selection settings (band, top, bottom, exclude_identity, keep_copies, groups).
        model: name of the model that made the numbers.
        signature: the metric signature of every number here (``signature_of(metric, "detect")``
            of the metric that embedded the pool).
        excluded: pool files left out as the target's own file or a byte-identical copy of it.
    """

    target: str
    target_source: object
    target_box: torch.Tensor
    pool: PoolSet
    selection: Selection
    rule: dict[str, Any] = field(default_factory=dict)
    model: str = ""
    signature: str = ""
    excluded: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.selection)

    @property
    def files(self) -> list[str]:
        """Chosen pool files (relative to the pool folder), best first."""
        return [self.pool.file(i) for i in self.selection.indices.tolist()]

    @property
    def failures(self) -> dict[str, str]:
        """Every pool file without an embedding -> why (no face found, unreadable, not an image
        file, HEIC without its reader), sorted by name."""
        return self.pool.failures

    def rows(self) -> list[dict[str, object]]:
        """One dict per chosen face: rank (1-based), file, similarity, box x1/y1/x2/y2."""
        out = []
        for r, (i, s) in enumerate(zip(self.selection.indices.tolist(), self.selection.scores.tolist()), start=1):
            box = [float(v) for v in self.pool.box(i).tolist()]
            out.append(
                {
                    "rank": r,
                    "file": self.pool.file(i),
                    "similarity": s,
                    "x1": box[0],
                    "y1": box[1],
                    "x2": box[2],
                    "y2": box[3],
                }
            )
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

    def summary(self) -> dict[str, Any]:
        """The run in numbers (what ``summary.json`` holds): signature, pool counts (files,
        faces, failures, embedded now, from the cache), the rule and what was chosen."""
        scores = self.selection.all_scores
        faces = int(torch.isfinite(scores).sum())
        failures = self.failures
        return {
            "signature": self.signature,
            "model": self.model,
            "target": self.target,
            "pool": str(self.pool.root),
            "files": len(self.pool) + sum(len(p.skipped) for p in self.pool.parts),
            "faces": faces,
            "failed": len(failures),
            "embedded_now": self.pool.embedded,
            "from_cache": len(self.pool) - self.pool.embedded,
            "rule": {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.rule.items()},
            "selected": len(self),
            "excluded_copies": list(self.excluded),
        }

    def write_csv(self, path: PathLike) -> Path:
        """CSV with columns rank, file, similarity, x1, y1, x2, y2, signature (box empty when
        unknown; the metric signature on every row, so that concatenated files keep it)."""
        rows = [
            [
                row["rank"],
                row["file"],
                f"{row['similarity']:.6f}",
                *("" if v != v else f"{v:.1f}" for v in (row["x1"], row["y1"], row["x2"], row["y2"])),
                self.signature,
            ]
            for row in self.rows()
        ]
        return _write_csv(path, ["rank", "file", "similarity", "x1", "y1", "x2", "y2", "signature"], rows)

    def write_failures(self, path: PathLike) -> Path:
        """CSV with columns file, reason: every pool file that has no embedding."""
        return write_failures(path, self.failures)

    def write_summary(self, path: PathLike) -> Path:
        """JSON of :meth:`summary`."""
        return Path(atomic_write_text(path, json.dumps(self.summary(), indent=2, ensure_ascii=False) + "\n"))

    def contact_sheet(self, path: PathLike, *, max_faces: int = 24, tile: int = 160) -> Path:
        """PNG: the target beside the first ``max_faces`` chosen faces, each with its score."""
        from .plots import contact_sheet

        target = (_thumbnail(self.target_source, self.target_box, tile), f"target\n{Path(self.target).name}")
        tiles = []
        for r, (i, s) in enumerate(
            zip(self.selection.indices[:max_faces].tolist(), self.selection.scores[:max_faces].tolist()), start=1
        ):
            caption = f"#{r}  {s:.3f}\n{self.pool.file(i)}"
            tiles.append((_thumbnail(self.pool.path(i), self.pool.box(i), tile), caption))
        shown = f" (first {len(tiles)} of {len(self)})" if len(tiles) < len(self) else ""
        return contact_sheet(target, tiles, path, tile=tile, title=self.describe_rule() + shown)

    def histogram(self, path: PathLike) -> Path:
        """PNG histogram of all pool similarities, band and threshold marked, choices ticked."""
        from .plots import similarity_histogram

        return similarity_histogram(
            self.selection.all_scores,
            path,
            band=self.rule.get("band"),
            exclude_above=self.rule.get("exclude_identity"),
            chosen=self.selection.scores,
            title=f"pool {Path(self.pool.root).name}/ vs target {Path(self.target).name}: {self.describe_rule()}",
            footer=[self.signature],
        )

    def save(self, out_dir: PathLike, *, max_faces: int = 24) -> dict[str, Path]:
        """Write ``ranking.csv``, ``failures.csv``, ``contact_sheet.png``, ``histogram.png`` and
        ``summary.json`` (see :data:`OUTPUTS`) into ``out_dir``; returns their paths by kind.

        The files are made in a temporary folder beside ``out_dir`` and moved in only when all
        are complete: an error or Ctrl-C leaves ``out_dir`` as it was.
        """
        out_dir = Path(out_dir)
        with atomic_dir(out_dir) as tmp:
            self.write_csv(tmp / OUTPUTS["csv"])
            self.write_failures(tmp / OUTPUTS["failures"])
            self.contact_sheet(tmp / OUTPUTS["contact_sheet"], max_faces=max_faces)
            self.histogram(tmp / OUTPUTS["histogram"])
            self.write_summary(tmp / OUTPUTS["summary"])
        return {kind: out_dir / name for kind, name in OUTPUTS.items()}


def _write_csv(path: PathLike, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    """A UTF-8 CSV written atomically."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return Path(atomic_write_text(path, buffer.getvalue()))


def write_failures(path: PathLike, failures: dict[str, str]) -> Path:
    """The failure report: a CSV with columns file, reason (written atomically)."""
    return _write_csv(path, ["file", "reason"], list(failures.items()))


def _thumbnail(src: Any, box: torch.Tensor, tile: int) -> Image.Image:
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


def _lookup(table: dict[str, dict[str, str]], name: str) -> Optional[dict[str, str]]:
    return table.get(name) or table.get(name.rsplit("/", 1)[-1])


def group_mask(
    files: Sequence[str],
    labels: PathLike,
    groups: Sequence[str],
    target_name: Optional[str] = None,
) -> tuple[torch.Tensor, list[str]]:
    """(N,) bool mask of pool ``files`` inside every group, and the groups spelled out.

    Each group is ``COLUMN=VALUE`` (keep photos whose label equals VALUE) or ``COLUMN`` (keep
    photos sharing the target's label in COLUMN; the target must be in the labels file).
    Photos missing from the labels file are left out. ``labels``: see :func:`perface.labels.read_labels`
    (a ``file`` column, else the first column, with paths relative to the pool folder or bare names).
    """
    read = read_labels(labels, first_column_is_key=True)
    columns = read.columns
    table = {name.replace("\\", "/"): row for name, row in zip(read.keys(), read.rows)}
    resolved = []
    for group in groups:
        column, sep, value = group.partition("=")
        column = column.strip()
        if column not in columns:
            raise ValueError(f"group {group!r}: labels file {labels} has no column {column!r}; columns: {columns}")
        if not sep:
            row = _lookup(table, target_name.replace("\\", "/")) if target_name else None
            if row is None:
                raise ValueError(
                    f"group {group!r}: the target {target_name!r} has no row in {labels}; "
                    f"name the value instead, e.g. {column}=VALUE"
                )
            value = row[column]
        resolved.append((column, value.strip()))
    keep = []
    for name in files:
        row = _lookup(table, name)
        keep.append(row is not None and all(row.get(c) == v for c, v in resolved))
    return torch.tensor(keep, dtype=torch.bool), [f"{c}={v}" for c, v in resolved]


def _pool_set(
    pool: Any,
    embedder: Callable[[], Any],
    model: Any,
    cache: Union[PathLike, bool, None],
    update: bool,
    rebuild: bool,
    **update_args: Any,
) -> PoolSet:
    """Whatever :func:`rank` was given as the pool, as a :class:`PoolSet`."""
    from .pool import open_pool, update_pool

    if isinstance(pool, PoolSet):
        return pool
    if isinstance(pool, Pool):
        return PoolSet([pool])
    if isinstance(pool, (str, os.PathLike)):
        if update:
            return PoolSet([update_pool(pool, embedder(), cache_dir=cache, rebuild=rebuild, **update_args)])
        if cache is False:
            raise ValueError("update=False ranks what the cache holds; it needs a cache (cache=None or a folder)")
        return open_pool(pool, _model_name(model, embedder), None if cache is None or cache is True else cache)
    items = list(pool)
    if items and all(isinstance(p, Pool) for p in items):
        return PoolSet(items)
    paths = [Path(p).resolve() for p in items]
    if not paths:
        raise ValueError("the pool is empty: pass a folder of photos or a list of image paths")
    root = Path(os.path.commonpath([str(p.parent) for p in paths]))
    return PoolSet(
        [
            update_pool(
                root,
                embedder(),
                files=[p.relative_to(root).as_posix() for p in paths],
                cache_dir=False if cache is None else cache,
                rebuild=rebuild,
                **update_args,
            )
        ]
    )


def _model_name(model: Any, embedder: Callable[[], Any]) -> str:
    """The checkpoint name a cache file is named after, loading the model only when needed."""
    from ..model import PerFace
    from ..registry import list_models

    if isinstance(model, PerFace):
        return model.name
    if isinstance(model, str) and model in list_models():
        return model
    return embedder().metric.name


def _copies(target: Path, pool: PoolSet, keep_copies: bool) -> list[int]:
    """Rows of the target's own file and, unless ``keep_copies``, of every pool file with the
    same bytes (copies, links): found by the cached content hash, confirmed on the file."""
    from ..hub import sha256_file
    from .pool import file_digest

    rows = set()
    rel = os.path.relpath(os.path.abspath(target), os.path.abspath(pool.root))
    if not rel.startswith(".."):
        own = pool.find(Path(rel).as_posix())
        if own is not None:
            rows.add(own)
    if not keep_copies:
        whole = sha256_file(target)
        for r in pool.rows_with_digest(file_digest(target)):
            try:
                same = sha256_file(pool.path(r)) == whole
            except OSError:  # gone since it was embedded: its row was made from the same bytes
                same = True
            if same:
                rows.add(r)
    return sorted(rows)


def rank(
    target: Any,
    pool: Any,
    *,
    band: Optional[tuple[float, float]] = None,
    top: Optional[int] = None,
    bottom: Optional[int] = None,
    exclude_identity: Optional[float] = None,
    keep_copies: bool = False,
    labels: Optional[PathLike] = None,
    group: Union[str, Sequence[str], None] = None,
    model: Any = DEFAULT_MODEL,
    cache: Union[PathLike, bool, None] = None,
    update: bool = True,
    rebuild: bool = False,
    dtype: Optional[torch.dtype] = None,
    batch_size: int = 32,
    num_workers: int = 0,
    progress: bool = True,
    device: Any = None,
    chunk_size: int = DEFAULT_CHUNK_ROWS,
    save_every: int = SAVE_EVERY,
) -> RankResult:
    """Rank every face of ``pool`` by similarity to ``target`` and choose swap sources.

    Args:
        target: photo of the target (path, PIL image, array or tensor), or its (D,) embedding.
            When it is a path, the pool's own copy of that file and every byte-identical copy
            (including links to it) are never chosen.
        pool: a folder of photos (embedded once and cached), a list of image paths, a
            :class:`~perface.ranking.pool.Pool`, several pools (shards, ranked as one without
            merging) or a :class:`~perface.ranking.pool.PoolSet`.
        band: (lo, hi): keep faces with lo <= similarity <= hi, most similar first. Similarities
            are cosines clamped to [-1, 1], so ``(-1, 1)`` keeps every face.
        top: the k most similar (inside the band if one is given). With none of
            band/top/bottom, every face is returned, most similar first.
        bottom: the k least similar (inside the band if one is given).
        exclude_identity: similarity above which a face counts as the target's own identity
            and is dropped (e.g. a verification threshold of the model).
        keep_copies: keep byte-identical copies of the target file (the target's own file in
            the pool is still left out).
        labels: a labels CSV (see :func:`perface.labels.read_labels`): a ``file`` column (else the
            first column) naming each pool file, relative to the pool folder or bare, and one column
            per attribute.
        group: with ``labels``, one or more groups ``COLUMN`` (same value as the target) or
            ``COLUMN=VALUE``; only faces in every group are chosen.
        model: a :class:`perface.PerFace` or a model name/path.
        cache: cache folder for a pool folder (None: per-user default, see
            :func:`perface.ranking.pool.default_cache_dir`; False: none). Lists of paths are
            cached only when a folder is given.
        update: scan the folder and embed what is new or changed (default). False ranks what
            the cache holds (the main cache, or the set of shard caches), memory-mapped, without
            scanning the folder: for pools too large to rescan on every query.
        rebuild: re-embed everything, ignoring the cache.
        dtype: stored embedding dtype for a new cache (``torch.float16`` halves disk and memory).
        batch_size: images embedded per batch.
        num_workers: DataLoader worker processes for loading and detecting.
        progress: show a tqdm progress bar while embedding.
        device: where the backbone runs (``"auto"``: :func:`perface.devices.resolve_device`).
        chunk_size: rows per search step (memory bound, see :func:`perface.ranking.search.search`).
        save_every: files per saved chunk of pool embedding at most (progress kept on Ctrl-C).

    Returns:
        A :class:`RankResult`; ``.save(out_dir)`` writes the CSV, PNGs, failure report and summary.

    Raises:
        NoFaceError / ImageReadError: the target has no usable face.
        ValueError: bad settings, an empty pool, or a pool embedded by another metric than the
            target (their signatures differ).
        FileNotFoundError: ``update=False`` and no cache for this pool and model.
    """
    from .pool import PhotoEmbedder

    _check_selection(band, top, bottom, exclude_identity, None, 0)  # before any slow embedding
    if group and labels is None:
        raise ValueError("group= needs labels= (a CSV of file name and attribute columns)")
    if rebuild and not update:
        raise ValueError("rebuild=True re-embeds the pool; it cannot go with update=False")
    made: list[PhotoEmbedder] = []

    def embedder() -> PhotoEmbedder:
        if not made:
            made.append(
                PhotoEmbedder(model, batch_size=batch_size, num_workers=num_workers, progress=False, device=device)
            )
        return made[0]

    target_path = Path(target) if isinstance(target, (str, os.PathLike)) else None
    target_name = str(target_path) if target_path is not None else type(target).__name__
    target_signature = None
    if isinstance(target, torch.Tensor) and target.dim() == 1:
        target_emb, target_box = target, torch.full((4,), float("nan"))
    else:
        from ..embedding import embed

        got = embed(
            [target_path if target_path is not None else target], embedder().metric, on_error="raise", progress=False
        )
        target_emb, target_box, target_signature = got.embeddings[0], got.boxes[0], embedder().key["signature"]
    # after the target: fail fast on a bad one
    the_pool = _pool_set(
        pool, embedder, model, cache, update, rebuild, dtype=dtype, progress=progress, save_every=save_every
    )
    if not len(the_pool):
        skipped = sum(len(p.skipped) for p in the_pool.parts)
        raise ValueError(
            f"the pool {the_pool.root} holds no image files ({skipped} other files); pass a folder "
            "of photos (.jpg, .png, .webp, ...)"
        )
    signature = the_pool.model.get("signature", "")
    if target_signature is not None and signature != target_signature:
        raise ValueError(
            f"the pool was embedded by another metric ({signature}) than the target ({target_signature}); "
            "similarities would not be comparable: update the pool (rank without update=False / "
            "--no-update, or perface embed-pool)"
        )

    mask = None
    groups: list[str] = []
    if group and labels is not None:
        rel = None
        if target_path is not None:
            try:
                rel = target_path.resolve().relative_to(Path(the_pool.root).resolve()).as_posix()
            except ValueError:
                rel = target_path.name
        files = [name for p in the_pool.parts for name in p.files]
        mask, groups = group_mask(files, labels, [group] if isinstance(group, str) else list(group), rel)
    excluded = _copies(target_path, the_pool, keep_copies) if target_path is not None else []
    if excluded:
        mask = torch.ones(len(the_pool), dtype=torch.bool) if mask is None else mask
        mask[excluded] = False

    selection = search(
        target_emb,
        the_pool.embeddings,
        band=band,
        top=top,
        bottom=bottom,
        exclude_above=exclude_identity,
        mask=mask,
        chunk_size=chunk_size,
    )
    rule = {
        "band": band,
        "top": top,
        "bottom": bottom,
        "exclude_identity": exclude_identity,
        "keep_copies": keep_copies,
        "groups": groups,
    }
    return RankResult(
        target=target_name,
        target_source=target_path if target_path is not None else target,
        target_box=target_box,
        pool=the_pool,
        selection=selection,
        rule=rule,
        model=the_pool.model.get("model", ""),
        signature=signature,
        excluded=[the_pool.file(i) for i in excluded],
    )
