"""Pool embeddings computed once and kept on disk, updated incrementally, shardable.

A pool is a folder of photos. Its cache is two files in a cache directory, named after the
model: ``<model>.safetensors`` (tensors ``embeddings`` (N, D) float32 with NaN rows for photos
without a usable face, ``boxes`` (N, 4) xyxy face boxes in photo pixels, ``sizes`` and
``mtimes_ns`` (N,) int64) whose metadata records the model name, template and weights
fingerprint; and ``<model>.files.json`` (the N relative file names in row order and the reason
each failed photo failed). A row is reused while its file's size and mtime are unchanged and
the model's fingerprint matches; new or changed files are embedded, vanished ones dropped.

Sharding: ``update_pool(..., shard=(i, n))`` embeds only ``files[i::n]`` into its own shard
file (one process or machine each, e.g. under ``torchrun``); :func:`merge_shards` folds the
shards into the main cache (files no shard covered are embedded then).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch.utils.data import DataLoader, Dataset

from ..imageio import IMAGE_SUFFIXES

__all__ = [
    "Pool",
    "EmbedBatch",
    "PhotoEmbedder",
    "face_crop",
    "model_key",
    "list_images",
    "default_cache_dir",
    "cache_path",
    "shard_path",
    "read_cache",
    "write_cache",
    "update_pool",
    "merge_shards",
    "parse_shard",
]

FORMAT = "perface-pool-1"


@dataclass
class EmbedBatch:
    """What an embedder returns for M files: (M, D) float32 embeddings (NaN rows where it
    failed), (M, 4) float32 face boxes (NaN when unknown) and ``errors``: row -> reason."""

    embeddings: torch.Tensor
    boxes: torch.Tensor
    errors: Dict[int, str] = field(default_factory=dict)


Embedder = Callable[[List[str]], EmbedBatch]


@dataclass
class Pool:
    """Embeddings of a folder of photos, one row per file (sorted by relative path).

    Attributes:
        root: the pool folder; ``files`` are relative to it (POSIX separators).
        embeddings: (N, D) float32 L2-normalized rows; NaN rows for failed photos.
        boxes: (N, 4) float32 face box (x1, y1, x2, y2) in photo pixels; NaN when unknown.
        sizes, mtimes_ns: (N,) int64 file size and modification time the row was made from.
        errors: relative file name -> why no embedding (no face found, unreadable file).
        model: ``{"model", "template", "fingerprint"}`` of the model that made the rows.
        embedded: how many files the last update embedded (the rest came from the cache).
    """

    root: Path
    files: List[str]
    embeddings: torch.Tensor
    boxes: torch.Tensor
    sizes: torch.Tensor
    mtimes_ns: torch.Tensor
    errors: Dict[str, str]
    model: Dict[str, str]
    embedded: int = 0

    def __len__(self) -> int:
        return len(self.files)

    @property
    def ok(self) -> torch.Tensor:
        """(N,) bool: rows with an embedding."""
        return ~torch.isnan(self.embeddings[:, 0]) if len(self) else torch.zeros(0, dtype=torch.bool)

    def path(self, i: int) -> Path:
        """Full path of row ``i``."""
        return self.root / self.files[i]


def face_crop(src, template: str, size: int, device="cpu") -> Tuple[torch.Tensor, torch.Tensor]:
    """The most prominent face of ``src`` aligned to ``template``: (3, size, size) in [0, 1],
    and its box (4,) xyxy in photo pixels. Raises NoFaceError / ImageReadError."""
    from ..alignment import choose_faces, similarity_transform, warp_affine
    from ..detection import get_detector
    from ..imageio import describe, load_image
    from ..templates import template_points

    img = load_image(src)
    face = choose_faces(get_detector(device).detect_padded(img), None, describe(src))[0]
    matrix = similarity_transform(face.landmarks, template_points(template, size))
    return warp_affine(img.unsqueeze(0), matrix, size)[0], torch.as_tensor(face.box, dtype=torch.float32)


class _Faces(Dataset):
    """Pool photos -> (index, aligned crop, box, None) or (index, None, None, reason)."""

    def __init__(self, sources: Sequence, template: str, size: int) -> None:
        self.sources, self.template, self.size = sources, template, size

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int):
        from ..errors import PerFaceError

        try:
            with torch.no_grad():
                crop, box = face_crop(self.sources[i], self.template, self.size)
            return i, crop, box, None
        except (PerFaceError, ValueError, TypeError, OSError) as exc:
            return i, None, None, f"{type(exc).__name__}: {exc}"


class PhotoEmbedder:
    """Embeds photos with a :class:`perface.PerFace`: each is loaded, its most prominent face
    detected and aligned to the model's template in DataLoader workers, then embedded in
    batches, with a tqdm progress bar. Failures become NaN rows with a reason.

    Args:
        model: a ``PerFace`` or a model name/path for one.
        batch_size: faces per forward pass.
        num_workers: DataLoader worker processes for loading/detection/alignment (0: in-process).
        progress: show a progress bar.
        device: where the backbone runs (None: where the model is; "auto": ``cuda:$LOCAL_RANK``
            when CUDA is available, as under torchrun, else CPU). Detection runs on the CPU.
    """

    def __init__(self, model="sface", *, batch_size: int = 32, num_workers: int = 0, progress: bool = True,
                 device: Union[str, torch.device, None] = None) -> None:
        from ..model import PerFace

        self.metric = model if isinstance(model, PerFace) else PerFace(model)
        if device == "auto":
            device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu"
        if device is not None:
            self.metric.to(device)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.progress = progress
        self.key = model_key(self.metric)

    def __call__(self, sources: Sequence, progress: Optional[bool] = None) -> EmbedBatch:
        """Embed ``sources`` (paths or anything :func:`perface.load_image` reads); ``progress``
        overrides the bar setting for this call."""
        from tqdm.auto import tqdm

        metric = self.metric
        device = next(metric.parameters()).device
        n = len(sources)
        emb = torch.full((n, metric.embedding_size), float("nan"))
        boxes = torch.full((n, 4), float("nan"))
        errors: Dict[int, str] = {}
        # one batch or less: worker start-up would cost more than it could overlap
        workers = self.num_workers if n > self.batch_size else 0
        loader = DataLoader(_Faces(list(sources), metric.template, metric.input_size), batch_size=self.batch_size,
                            num_workers=workers, collate_fn=list)
        with torch.no_grad(), tqdm(total=n, unit="img", desc=f"embed pool ({metric.name})",
                                   disable=not (self.progress if progress is None else progress)) as bar:
            for batch in loader:
                good = [(i, crop, box) for i, crop, box, _ in batch if crop is not None]
                errors.update((i, reason) for i, crop, _, reason in batch if crop is None)
                if good:
                    rows = torch.tensor([i for i, _, _ in good])
                    emb[rows] = metric.embed(torch.stack([c for _, c, _ in good]).to(device), aligned=True).float().cpu()
                    boxes[rows] = torch.stack([b for _, _, b in good])
                bar.update(len(batch))
        return EmbedBatch(emb, boxes, errors)


def model_key(metric) -> Dict[str, str]:
    """``{"model", "template", "fingerprint"}`` of a PerFace: the fingerprint is a sha256 over
    the network's parameters and input settings, so a changed checkpoint never reuses rows."""
    digest = hashlib.sha256()
    digest.update(f"{metric.template}|{metric.input_size}|{metric.spec.input_mean}|{metric.spec.input_std}".encode())
    for name, tensor in sorted(metric.net.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return {"model": metric.name, "template": metric.template, "fingerprint": digest.hexdigest()}


def list_images(root: Union[str, Path]) -> List[str]:
    """Image files under ``root`` (recursive; hidden files and folders skipped) as sorted
    relative POSIX paths."""
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"pool folder {root} does not exist or is not a folder; pass a folder of photos")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel_dir = Path(dirpath).relative_to(root)
        for name in filenames:
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES:
                found.append((rel_dir / name).as_posix())
    return sorted(found)


def default_cache_dir(root: Union[str, Path]) -> Path:
    """Per-pool cache folder: ``$PERFACE_CACHE`` or ``$XDG_CACHE_HOME/perface`` or
    ``~/.cache/perface``, then ``pools/<folder name>-<hash of its absolute path>``."""
    root = Path(root).resolve()
    base = os.environ.get("PERFACE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "perface"
    tag = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    return Path(base) / "pools" / f"{_slug(root.name or 'root')}-{tag}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "x"


def cache_path(cache_dir: Union[str, Path], model: str) -> Path:
    """The main cache file of ``model`` in ``cache_dir``."""
    return Path(cache_dir) / f"{_slug(model)}.safetensors"


def shard_path(cache_dir: Union[str, Path], model: str, shard: Tuple[int, int]) -> Path:
    """The cache file of shard ``(i, n)``."""
    i, n = shard
    return Path(cache_dir) / f"{_slug(model)}.shard-{i:05d}-of-{n:05d}.safetensors"


def parse_shard(text: str) -> Tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n; ``"auto"`` reads torchrun's RANK and WORLD_SIZE."""
    if text == "auto":
        i, n = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    else:
        match = re.fullmatch(r"(\d+)/(\d+)", text.strip())
        if not match:
            raise ValueError(f"shard {text!r}: write it as i/n (e.g. 0/4), 0-based, or 'auto' under torchrun")
        i, n = int(match.group(1)), int(match.group(2))
    if not 0 <= i < n:
        raise ValueError(f"shard {i}/{n}: need 0 <= i < n")
    return i, n


def _files_path(path: Path) -> Path:
    return path.with_name(path.name[: -len(".safetensors")] + ".files.json")


def write_cache(path: Union[str, Path], pool: Pool) -> None:
    """Write ``pool`` to ``path`` (+ its ``.files.json``), each file replaced atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    listing = json.dumps({"root": str(pool.root), "files": pool.files, "errors": pool.errors}, ensure_ascii=False)
    meta = dict(pool.model, format=FORMAT, count=str(len(pool)),
                files_sha256=hashlib.sha256(listing.encode()).hexdigest())
    tensors = {"embeddings": pool.embeddings.contiguous(), "boxes": pool.boxes.contiguous(),
               "sizes": pool.sizes.contiguous(), "mtimes_ns": pool.mtimes_ns.contiguous()}
    files_path = _files_path(path)
    tmp_files, tmp = files_path.with_suffix(".json.tmp"), path.with_suffix(".safetensors.tmp")
    tmp_files.write_text(listing, encoding="utf-8")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp_files, files_path)
    os.replace(tmp, path)


def read_cache(path: Union[str, Path], root: Union[str, Path]) -> Optional[Pool]:
    """The pool stored at ``path``, or None when missing; a corrupt or inconsistent cache
    warns and returns None (it is rebuilt)."""
    from safetensors import safe_open

    path = Path(path)
    files_path = _files_path(path)
    if not path.is_file() or not files_path.is_file():
        return None
    try:
        listing_text = files_path.read_text(encoding="utf-8")
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            if meta.get("format") != FORMAT:
                raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT!r}")
            if meta.get("files_sha256") != hashlib.sha256(listing_text.encode()).hexdigest():
                raise ValueError("file list does not match the embeddings (interrupted write?)")
            tensors = {name: fh.get_tensor(name) for name in ("embeddings", "boxes", "sizes", "mtimes_ns")}
        listing = json.loads(listing_text)
        if len(listing["files"]) != tensors["embeddings"].shape[0]:
            raise ValueError("row count differs from the file list")
    except Exception as exc:  # any damage: rebuild rather than trust it
        warnings.warn(f"pool cache {path} is unusable ({exc}); it will be rebuilt", stacklevel=2)
        return None
    return Pool(root=Path(root), files=listing["files"], errors=dict(listing["errors"]),
                model={k: meta.get(k, "") for k in ("model", "template", "fingerprint")}, **tensors)


def _stat(root: Path, files: Sequence[str]) -> Tuple[List[str], torch.Tensor, torch.Tensor]:
    kept, sizes, mtimes = [], [], []
    for name in files:
        try:
            st = os.stat(root / name)
        except FileNotFoundError:  # vanished since listing
            continue
        kept.append(name)
        sizes.append(st.st_size)
        mtimes.append(st.st_mtime_ns)
    return kept, torch.tensor(sizes, dtype=torch.int64), torch.tensor(mtimes, dtype=torch.int64)


def update_pool(
    root: Union[str, Path],
    embedder: Embedder,
    *,
    model: Optional[Dict[str, str]] = None,
    cache_dir: Union[str, Path, None, bool] = None,
    files: Optional[Sequence[str]] = None,
    shard: Optional[Tuple[int, int]] = None,
    extra: Sequence[Path] = (),
    rebuild: bool = False,
) -> Pool:
    """Embeddings of every photo in ``root``, reusing the cache and embedding only what changed.

    Args:
        root: pool folder.
        embedder: callable ``paths -> EmbedBatch`` (e.g. :class:`PhotoEmbedder`); called at most
            once, with only the new or changed files.
        model: ``{"model", "template", "fingerprint"}`` of the embedder (default: its ``.key``).
        cache_dir: cache folder (None: :func:`default_cache_dir`; False: no cache at all).
        files: relative names to use instead of listing ``root``.
        shard: ``(i, n)``: only ``files[i::n]``, cached in that shard's own file.
        extra: further cache files whose rows may be reused (shards being merged).
        rebuild: ignore existing cache rows.
    """
    root = Path(root)
    model = dict(embedder.key) if model is None else model
    names = list_images(root) if files is None else sorted(files)
    if shard is not None:
        names = names[shard[0]::shard[1]]
    names, sizes, mtimes = _stat(root, names)
    path = None
    if cache_dir is not False:
        cache_dir = default_cache_dir(root) if cache_dir in (None, True) else Path(cache_dir)
        path = cache_path(cache_dir, model["model"]) if shard is None else shard_path(cache_dir, model["model"], shard)

    main = None if rebuild or path is None else _matching(read_cache(path, root), model, path)
    extras = [c for c in (_matching(read_cache(p, root), model, p) for p in extra) if c is not None]
    sources = ([main] if main is not None else []) + extras
    pool, todo = _reuse(root, names, sizes, mtimes, sources, model)

    if todo:
        batch = embedder([str(root / names[r]) for r in todo])
        rows = torch.tensor(todo, dtype=torch.long)
        if pool.embeddings.shape[1] != batch.embeddings.shape[1]:  # nothing reused: size from the batch
            pool.embeddings = torch.full((len(names), batch.embeddings.shape[1]), float("nan"))
        pool.embeddings[rows] = batch.embeddings.to(torch.float32)
        pool.boxes[rows] = batch.boxes.to(torch.float32)
        for i, reason in batch.errors.items():
            pool.errors[names[todo[i]]] = reason
            pool.embeddings[todo[i]] = float("nan")
    pool.embedded = len(todo)

    unchanged = main is not None and not extras and not todo and len(names) == len(main)
    if path is not None and not unchanged:
        write_cache(path, pool)
    return pool


def _matching(cached: Optional[Pool], model: Dict[str, str], path: Path) -> Optional[Pool]:
    """``cached`` if made by the same model (fingerprint), else None with a warning."""
    if cached is not None and cached.model.get("fingerprint") != model["fingerprint"]:
        warnings.warn(f"pool cache {path} was made by another model ({cached.model.get('model')!r}); "
                      "its rows are re-embedded", stacklevel=3)
        return None
    return cached


def _reuse(root: Path, names: List[str], sizes: torch.Tensor, mtimes: torch.Tensor,
           sources: Sequence[Pool], model: Dict[str, str]) -> Tuple[Pool, List[int]]:
    """A pool of ``names`` filled from cached rows whose file size and mtime still match
    (later sources win), and the rows left to embed."""
    n = len(names)
    dim = next((s.embeddings.shape[1] for s in sources), 0)
    pool = Pool(root=root, files=names, embeddings=torch.full((n, dim), float("nan")),
                boxes=torch.full((n, 4), float("nan")), sizes=sizes, mtimes_ns=mtimes, errors={}, model=dict(model))
    index: Dict[str, Tuple[int, int]] = {}
    for s, src in enumerate(sources):
        index.update((name, (s, row)) for row, name in enumerate(src.files))
    hits = [index.get(name, (-1, -1)) for name in names]
    hit_src = torch.tensor([h[0] for h in hits], dtype=torch.long)
    hit_row = torch.tensor([h[1] for h in hits], dtype=torch.long)
    fresh = torch.zeros(n, dtype=torch.bool)
    for s, src in enumerate(sources):
        new = (hit_src == s).nonzero().flatten()
        old = hit_row[new]
        same = (src.sizes[old] == sizes[new]) & (src.mtimes_ns[old] == mtimes[new])
        new, old = new[same], old[same]
        pool.embeddings[new] = src.embeddings[old].to(torch.float32)
        pool.boxes[new] = src.boxes[old].to(torch.float32)
        fresh[new] = True
    for s, src in enumerate(sources):  # failures stay failures while their file is unchanged
        for name, reason in src.errors.items():
            r = bisect.bisect_left(names, name)
            if r < n and names[r] == name and fresh[r] and int(hit_src[r]) == s:
                pool.errors[name] = reason
    return pool, (~fresh).nonzero().flatten().tolist()


def merge_shards(
    root: Union[str, Path],
    embedder: Embedder,
    *,
    model: Optional[Dict[str, str]] = None,
    cache_dir: Union[str, Path, None] = None,
    keep_shards: bool = False,
) -> Pool:
    """Fold every shard cache of ``model`` in ``cache_dir`` into the main cache and return the
    pool; files no shard covered (or that changed since) are embedded now. Shard files are
    deleted afterwards unless ``keep_shards``."""
    model = dict(embedder.key) if model is None else model
    cache_dir = default_cache_dir(root) if cache_dir is None else Path(cache_dir)
    shards = sorted(cache_dir.glob(f"{_slug(model['model'])}.shard-*-of-*.safetensors"))
    if not shards:
        warnings.warn(f"no shard files for model {model['model']!r} in {cache_dir}; nothing to merge", stacklevel=2)
    counts = {int(m.group(1)) for m in (re.search(r"-of-(\d+)\.safetensors$", p.name) for p in shards) if m}
    if len(counts) > 1:
        raise ValueError(f"shards in {cache_dir} come from different splits (n = {sorted(counts)}); "
                         "delete the stale ones and merge again")
    pool = update_pool(root, embedder, model=model, cache_dir=cache_dir, extra=shards)
    if not keep_shards:
        for p in shards:
            p.unlink(missing_ok=True)
            _files_path(p).unlink(missing_ok=True)
    return pool
