"""A pool folder's embeddings: scanned, embedded incrementally, cached, resumable and shardable.

**Every file is accounted for.** :func:`~perface.ranking.scan.scan_pool` lists every file under the pool folder
(hidden files and folders, whose names start with ``.``, excepted). Image files are embedded;
every other file is *skipped* with a reason (not an image file, a HEIC photo without the
optional ``pillow-heif`` reader, a broken link); files the embedder cannot use become NaN rows
with a reason. :attr:`Pool.failures` lists both, so nothing is silently dropped.

**Cache.** The rows live in one safetensors file per model (:mod:`perface.ranking.cache`) in a
cache folder, by default :func:`default_cache_dir`: ``<perface cache>/pools/<folder>-<hash>``,
where the perface cache is :func:`perface.hub.perface_cache_dir` (``$PERFACE_CACHE``, default
``$HF_HOME/perface``). A row is reused while its file's size and modification time are
unchanged and the metric (weights fingerprint and signature) is the same; new or changed files
are embedded, vanished ones dropped.

**Progress is saved as it is made.** Files are embedded in chunks of at most ``save_every``
files (500) sized to take at most ``save_seconds`` (30 s); each chunk is written at once as a
small *part* file next to the cache (``<model>.part-<unique>.safetensors``), so an interrupted
or crashed run loses at most one chunk: the next run reuses the parts' rows. At the end the
cache and all parts are folded into the cache file under a file lock (read, merge, write,
delete the parts), re-reading the cache inside the lock, so processes that embed into one
cache at once keep each other's rows. Every write is atomic with the umask's permissions
(:mod:`perface._io`). A cache folder that cannot be written warns once and is only read.

**Shards.** ``update_pool(..., shard=(i, n))`` embeds only ``files[i::n]`` into its own file
(one process or machine each, e.g. under ``torchrun``); :func:`merge_shards` folds them into
the main cache, and :func:`open_pool` ranks the main cache or the set of shards, memory-mapped,
without scanning the folder or merging anything.
"""

from __future__ import annotations

import bisect
import hashlib
import inspect
import os
import re
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Optional, Union, cast

import torch

from .cache import Pool, read_cache, write_cache
from .embedder import EmbedBatch, Embedder, PhotoEmbedder, model_key
from .scan import HEIF_SUFFIXES, classify, scan_pool, walk_pool

__all__ = [
    "Pool",
    "PoolSet",
    "EmbedBatch",
    "Embedder",
    "PhotoEmbedder",
    "model_key",
    "SAVE_EVERY",
    "SAVE_SECONDS",
    "HEIF_SUFFIXES",
    "scan_pool",
    "default_cache_dir",
    "cache_path",
    "shard_path",
    "parse_shard",
    "file_digest",
    "update_pool",
    "merge_shards",
    "open_pool",
    "read_cache",
    "write_cache",
]

SAVE_EVERY = 500  # files per saved chunk at most
SAVE_SECONDS = 30.0  # seconds per saved chunk at most (the chunk size adapts to the measured rate)
_FIRST_CHUNK = 16  # before any rate is known

_clock = time.monotonic
_unwritable_warned: set = set()

PathLike = Union[str, os.PathLike]


# --------------------------------------------------------------------------- a set of pools


class PoolSet:
    """Several pools (e.g. the shards of one pool) ranked as one, nothing copied: rows are
    numbered part after part.

    Raises ``ValueError`` when the parts were made by different metrics (signature or
    embedding size differ): their similarities would not be comparable.
    """

    def __init__(self, parts: Sequence[Pool]) -> None:
        self.parts = list(parts)
        if not self.parts:
            raise ValueError("a pool set needs at least one pool")
        signatures = {p.model.get("signature", "") for p in self.parts}
        dims = {p.embeddings.shape[1] for p in self.parts if len(p)}
        if len(signatures) > 1 or len(dims) > 1:
            raise ValueError(
                f"the pools were made by different metrics ({sorted(signatures)}, embedding sizes "
                f"{sorted(dims)}); embed them with one model (perface embed-pool --rebuild)"
            )
        self.offsets = [0]
        for p in self.parts:
            self.offsets.append(self.offsets[-1] + len(p))

    def __len__(self) -> int:
        return self.offsets[-1]

    @property
    def root(self) -> Path:
        return self.parts[0].root

    @property
    def model(self) -> dict[str, str]:
        """The metric that made the rows (see :attr:`Pool.model`)."""
        return self.parts[0].model

    @property
    def embedded(self) -> int:
        """Files embedded by the update that made these pools (the rest came from the cache)."""
        return sum(p.embedded for p in self.parts)

    @property
    def embeddings(self) -> list[torch.Tensor]:
        """Each part's (N_i, D) embeddings (memory-mapped where read from a cache)."""
        return [p.embeddings for p in self.parts]

    @property
    def failures(self) -> dict[str, str]:
        """Every file without an embedding -> why, over all parts, sorted by name."""
        merged: dict[str, str] = {}
        for p in self.parts:
            merged.update(p.failures)
        return {name: merged[name] for name in sorted(merged)}

    def locate(self, i: int) -> tuple[Pool, int]:
        """(part, row in it) of row ``i`` of the set."""
        if not 0 <= i < len(self):
            raise IndexError(f"row {i} out of range for {len(self)} rows")
        k = bisect.bisect_right(self.offsets, i) - 1
        return self.parts[k], i - self.offsets[k]

    def file(self, i: int) -> str:
        part, row = self.locate(i)
        return part.files[row]

    def path(self, i: int) -> Path:
        part, row = self.locate(i)
        return part.path(row)

    def box(self, i: int) -> torch.Tensor:
        part, row = self.locate(i)
        return part.boxes[row].to(torch.float32)

    def rows_with_digest(self, digest: int) -> list[int]:
        """Rows whose file content hash (:func:`file_digest`) is ``digest``."""
        found: list[int] = []
        for offset, p in zip(self.offsets, self.parts):
            found.extend(offset + r for r in (p.digests == digest).nonzero().flatten().tolist())
        return found

    def find(self, name: str) -> Optional[int]:
        """Row of the relative file name ``name``, or None."""
        for offset, p in zip(self.offsets, self.parts):
            r = bisect.bisect_left(p.files, name)
            if r < len(p) and p.files[r] == name:
                return offset + r
        return None


# --------------------------------------------------------------------------- cache locations


def default_cache_dir(root: PathLike) -> Path:
    """Per-pool cache folder: ``<perface cache>/pools/<folder name>-<hash of its absolute
    path>``, the perface cache being :func:`perface.hub.perface_cache_dir`."""
    from ..hub import perface_cache_dir

    root = Path(root).resolve()
    tag = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    return perface_cache_dir() / "pools" / f"{_slug(root.name or 'root')}-{tag}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "x"


def cache_path(cache_dir: PathLike, model: str) -> Path:
    """The main cache file of ``model`` in ``cache_dir``."""
    return Path(cache_dir) / f"{_slug(model)}.safetensors"


def shard_path(cache_dir: PathLike, model: str, shard: tuple[int, int]) -> Path:
    """The cache file of shard ``(i, n)``."""
    i, n = shard
    return Path(cache_dir) / f"{_slug(model)}.shard-{i:05d}-of-{n:05d}.safetensors"


def _stem(path: Path) -> str:
    return path.name[: -len(".safetensors")]


def _part_files(path: Path) -> list[Path]:
    """Saved progress of the cache file ``path`` (complete parts only: temporary files of a
    write in progress start with a dot)."""
    return sorted(path.parent.glob(f"{_stem(path)}.part-*.safetensors"))


def _new_part_path(path: Path) -> Path:
    return path.with_name(f"{_stem(path)}.part-{time.time_ns():x}-{os.getpid()}-{uuid.uuid4().hex[:8]}.safetensors")


def _shard_files(cache_dir: Path, model: str) -> dict[tuple[int, int], Path]:
    pattern = re.compile(rf"{re.escape(_slug(model))}\.shard-(\d+)-of-(\d+)\.safetensors")
    found = {}
    for p in cache_dir.glob(f"{_slug(model)}.shard-*.safetensors"):
        m = pattern.fullmatch(p.name)
        if m:
            found[(int(m.group(1)), int(m.group(2)))] = p
    return dict(sorted(found.items()))


def parse_shard(text: str) -> tuple[int, int]:
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


def _writable(folder: Path) -> bool:
    """Whether files can be created in ``folder`` (created if missing); warns once per folder."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".perface-write-test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
        return True
    except OSError as exc:
        if str(folder) not in _unwritable_warned:
            _unwritable_warned.add(str(folder))
            warnings.warn(
                f"pool cache folder {folder} is not writable ({exc.strerror or exc}); embeddings "
                "found there are used, new ones are not saved. Choose a writable folder with --cache DIR "
                "(cache=DIR) or the PERFACE_CACHE environment variable, or run without a cache with "
                "--no-cache (cache=False)",
                stacklevel=3,
            )
        return False


# --------------------------------------------------------------------------- update


def file_digest(path: PathLike) -> int:
    """The first 8 bytes of the sha256 of a file's bytes as a signed int64 (0 when it cannot be
    read): the content hash stored per pool row, to find copies of a target."""
    from ..hub import sha256_file

    try:
        return int.from_bytes(bytes.fromhex(sha256_file(Path(path))[:16]), "big", signed=True)
    except OSError:
        return 0


def _stat(root: Path, files: Sequence[str]) -> tuple[list[str], torch.Tensor, torch.Tensor]:
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


def _matching(cached: Optional[Pool], model: dict[str, str], path: Path, warn: bool = True) -> Optional[Pool]:
    """``cached`` if made by the same metric (weights fingerprint and signature), else None."""
    if cached is None:
        return None
    for key in ("fingerprint", "signature"):
        if cached.model.get(key, "") != model.get(key, ""):
            if warn:
                warnings.warn(
                    f"pool cache {path} was made by another metric ({key} {cached.model.get(key)!r}, now "
                    f"{model.get(key)!r}); its rows are embedded again",
                    stacklevel=3,
                )
            return None
    return cached


def _unchanged(main: Pool, names: list[str], sizes: torch.Tensor, mtimes: torch.Tensor) -> bool:
    return (
        len(main) == len(names)
        and torch.equal(main.sizes, sizes)
        and torch.equal(main.mtimes_ns, mtimes)
        and main.files == names
    )


def _reuse(
    root: Path,
    names: list[str],
    sizes: torch.Tensor,
    mtimes: torch.Tensor,
    sources: Sequence[Pool],
    model: dict[str, str],
    dtype: Optional[torch.dtype],
) -> tuple[Pool, list[int]]:
    """A pool of ``names`` filled from cached rows whose file size and mtime still match
    (later sources win), and the rows left to embed."""
    n = len(names)
    dim = next((s.embeddings.shape[1] for s in sources if len(s)), 0)
    dtype = dtype or next((s.embeddings.dtype for s in sources if len(s)), torch.float32)
    errors: dict[str, str] = {}
    pool = Pool(
        root=root,
        files=names,
        embeddings=torch.full((n, dim), float("nan"), dtype=dtype),
        boxes=torch.full((n, 4), float("nan")),
        sizes=sizes,
        mtimes_ns=mtimes,
        digests=torch.zeros(n, dtype=torch.int64),
        errors=errors,
        model=dict(model),
    )
    index: dict[str, tuple[int, int]] = {}
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
        pool.embeddings[new] = src.embeddings[old].to(dtype)
        pool.boxes[new] = src.boxes[old].to(torch.float32)
        pool.digests[new] = src.digests[old]
        fresh[new] = True
    for s, src in enumerate(sources):  # failures stay failures while their file is unchanged
        for name, reason in src.errors.items():
            r = bisect.bisect_left(names, name)
            if r < n and names[r] == name and fresh[r] and int(hit_src[r]) == s:
                errors[name] = reason
    return pool, (~fresh).nonzero().flatten().tolist()


def _chunks(todo: list[int], save_every: int, save_seconds: float) -> Iterator[list[int]]:
    """Consecutive pieces of ``todo``: at most ``save_every`` rows, sized from the rate measured
    so far (time between yields) to take at most ``save_seconds`` each."""
    start, size = 0, max(1, min(save_every, _FIRST_CHUNK))
    while start < len(todo):
        began = _clock()
        yield todo[start : start + size]
        start += size
        rate = size / max(_clock() - began, 1e-6)
        size = max(1, min(save_every, int(rate * save_seconds * 0.8)))


def _accepts_progress(embedder: Embedder) -> bool:
    try:
        params = inspect.signature(embedder).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "progress" or p.kind is p.VAR_KEYWORD for p in params)


def _fill(pool: Pool, rows: list[int], batch: EmbedBatch) -> None:
    """Put an embedder's answer for ``rows`` into ``pool`` (and each file's content hash)."""
    if batch.embeddings.dim() != 2 or batch.embeddings.shape[0] != len(rows) or batch.boxes.shape != (len(rows), 4):
        raise ValueError(
            f"the embedder returned embeddings {tuple(batch.embeddings.shape)} and boxes "
            f"{tuple(batch.boxes.shape)} for {len(rows)} files; expected (M, D) and (M, 4)"
        )
    index = torch.tensor(rows, dtype=torch.long)
    if pool.embeddings.shape[1] != batch.embeddings.shape[1]:
        if pool.ok.any():
            raise ValueError(
                f"the embedder gives {batch.embeddings.shape[1]}-d embeddings, the cache holds "
                f"{pool.embeddings.shape[1]}-d ones"
            )
        pool.embeddings = torch.full((len(pool), batch.embeddings.shape[1]), float("nan"), dtype=pool.embeddings.dtype)
    emb = batch.embeddings.to(pool.embeddings.dtype)
    for i in batch.errors:
        emb[i] = float("nan")
    pool.embeddings[index] = emb
    pool.boxes[index] = batch.boxes.to(torch.float32)
    errors = pool.errors if isinstance(pool.errors, dict) else dict(pool.errors)
    for i, r in enumerate(rows):
        name = pool.files[r]
        pool.digests[r] = file_digest(pool.root / name)
        if i in batch.errors:
            errors[name] = batch.errors[i]
    pool.errors = errors


def _embed(
    pool: Pool,
    todo: list[int],
    embedder: Embedder,
    save_to: Optional[Path],
    save_every: int,
    save_seconds: float,
    progress: bool,
) -> None:
    """Embed the rows ``todo`` chunk by chunk, writing each chunk as a part of ``save_to``."""
    from tqdm.auto import tqdm

    takes_progress = _accepts_progress(embedder)
    with tqdm(
        total=len(todo), unit="img", desc=f"embed pool ({pool.model.get('model')})", disable=not (progress and todo)
    ) as bar:
        for rows in _chunks(todo, save_every, save_seconds):
            paths = [str(pool.root / pool.files[r]) for r in rows]
            batch = cast(Any, embedder)(paths, progress=bar.update) if takes_progress else embedder(paths)
            if not takes_progress:
                bar.update(len(rows))
            _fill(pool, rows, batch)
            if save_to is not None:
                write_cache(_new_part_path(save_to), pool.subset(rows))
            pool.embedded += len(rows)


def _concat(pools: Sequence[Pool]) -> Pool:
    """One in-memory pool of several with disjoint file names, sorted by name."""
    names = [name for p in pools for name in p.files]
    order = torch.tensor(sorted(range(len(names)), key=names.__getitem__), dtype=torch.long)
    first = pools[0]

    def cat(attr: str) -> torch.Tensor:
        return torch.cat([getattr(p, attr).to(getattr(first, attr).dtype) for p in pools])[order]

    errors: dict[str, str] = {}
    for p in pools:
        errors.update(p.errors)
    return Pool(
        root=first.root,
        files=[names[i] for i in order.tolist()],
        embeddings=cat("embeddings"),
        boxes=cat("boxes"),
        sizes=cat("sizes"),
        mtimes_ns=cat("mtimes_ns"),
        digests=cat("digests"),
        errors=errors,
        model=dict(first.model),
        skipped=dict(first.skipped),
        embedded=first.embedded,
    )


def _consolidate(path: Path, pool: Pool, model: dict[str, str]) -> None:
    """Under the cache's lock: fold the cache file, every saved part and ``pool`` into the cache
    file and delete the parts. Rows of files ``pool`` does not list (another process's newer
    listing, another subset) are kept while their file is unchanged."""
    from .._io import file_lock

    with file_lock(path):
        others, merged = [], []
        for p in [path, *_part_files(path)]:
            cached = read_cache(p, pool.root)
            usable = _matching(cached, model, p, warn=False)
            if usable is not None:
                others.append(usable)
            if p != path and (cached is None or usable is not None):  # merged now, or damaged: done with
                merged.append(p)
        ours = set(pool.files) | set(pool.skipped)
        foreign = sorted({name for src in others for name in src.files} - ours)
        names, sizes, mtimes = _stat(pool.root, foreign)
        kept, missing = _reuse(pool.root, names, sizes, mtimes, others, model, pool.embeddings.dtype)
        if missing:
            kept = kept.subset(sorted(set(range(len(kept))) - set(missing)))
        write_cache(path, _concat([pool, kept]) if len(kept) else pool)
        for p in merged:  # parts of another metric (another perface version at work) are left alone
            p.unlink(missing_ok=True)


def update_pool(
    root: PathLike,
    embedder: Embedder,
    *,
    model: Optional[dict[str, str]] = None,
    cache_dir: Union[PathLike, bool, None] = None,
    files: Optional[Sequence[str]] = None,
    shard: Optional[tuple[int, int]] = None,
    extra: Sequence[Path] = (),
    rebuild: bool = False,
    dtype: Optional[torch.dtype] = None,
    save_every: int = SAVE_EVERY,
    save_seconds: float = SAVE_SECONDS,
    progress: bool = False,
) -> Pool:
    """Embeddings of every image file in ``root``, reusing the cache and embedding only what
    changed; progress is saved every chunk (see the module docstring).

    Args:
        root: pool folder.
        embedder: callable ``paths -> EmbedBatch`` (e.g. :class:`PhotoEmbedder`), called with
            the new or changed files only, a chunk at a time.
        model: ``{"model", "template", "fingerprint", "signature"}`` of the embedder (default:
            its ``.key``).
        cache_dir: cache folder (None: :func:`default_cache_dir`; False: no cache at all).
        files: relative names to use instead of scanning ``root``.
        shard: ``(i, n)``: only ``files[i::n]``, cached in that shard's own file.
        extra: further cache files whose rows may be reused (shards being merged).
        rebuild: ignore existing cache rows and saved progress.
        dtype: dtype of the stored embeddings, ``torch.float32`` or ``torch.float16`` (half the
            disk and memory; scores keep about 3 digits); default: the cache's, else float32.
        save_every, save_seconds: a chunk is at most this many files and takes at most about
            this long; each chunk is saved before the next starts.
        progress: one tqdm progress bar over the files to embed.

    Returns:
        The :class:`Pool` (rows sorted by file name; ``skipped`` lists files not embedded and
        ``embedded`` counts the files embedded now). When nothing changed it is the cache
        file itself, memory-mapped.

    Raises:
        NotADirectoryError: ``root`` is not a folder.
        KeyboardInterrupt: passed on; the chunks finished so far are saved.
    """
    root = Path(root)
    model = dict(embedder.key) if model is None else dict(model)
    path = None
    if cache_dir is not False:
        folder = default_cache_dir(root) if cache_dir is None or isinstance(cache_dir, bool) else Path(cache_dir)
        path = cache_path(folder, model["model"]) if shard is None else shard_path(folder, model["model"], shard)
    if files is None:
        entries = walk_pool(root, [path.parent] if path is not None else [])
    else:
        entries = [(name, None) for name in sorted(set(files))]
    names, skipped = classify(entries)
    if shard is not None:  # images split evenly; the first shard reports the files not embedded
        names, skipped = names[shard[0] :: shard[1]], (skipped if shard[0] == 0 else {})
    names, sizes, mtimes = _stat(root, names)
    writable = path is not None and _writable(path.parent)

    parts = [] if path is None or rebuild else _part_files(path)
    main = None if rebuild or path is None else _matching(read_cache(path, root), model, path)
    sources = [
        c
        for c in [
            main,
            *(_matching(read_cache(p, root), model, p) for p in extra),
            *(_matching(read_cache(p, root), model, p, warn=False) for p in parts),
        ]
        if c is not None
    ]
    if (
        main is not None
        and sources == [main]
        and (dtype is None or dtype == main.embeddings.dtype)
        and _unchanged(main, names, sizes, mtimes)
    ):
        main.skipped = skipped
        return main

    pool, todo = _reuse(root, names, sizes, mtimes, sources, model, dtype)
    pool.skipped = skipped
    _embed(pool, todo, embedder, path if writable else None, save_every, save_seconds, progress)
    if writable and path is not None:
        _consolidate(path, pool, model)
    return pool


def merge_shards(
    root: PathLike,
    embedder: Embedder,
    *,
    model: Optional[dict[str, str]] = None,
    cache_dir: Union[PathLike, None] = None,
    keep_shards: bool = False,
    **kwargs: Any,
) -> Pool:
    """Fold every shard cache of ``model`` in ``cache_dir`` (and their saved progress) into the
    main cache and return the pool; files no shard covered (or that changed since) are embedded
    now. Shard files are deleted afterwards unless ``keep_shards``. ``kwargs`` go to
    :func:`update_pool` (``save_every``, ``progress``, ...)."""
    model = dict(embedder.key) if model is None else model
    cache_dir = default_cache_dir(root) if cache_dir is None else Path(cache_dir)
    shards = _shard_files(cache_dir, model["model"])
    if not shards:
        warnings.warn(f"no shard files for model {model['model']!r} in {cache_dir}; nothing to merge", stacklevel=2)
    counts = {n for _, n in shards}
    if len(counts) > 1:
        raise ValueError(
            f"shards in {cache_dir} come from different splits (n = {sorted(counts)}); "
            "delete the stale ones and merge again"
        )
    files = [f for p in shards.values() for f in [p, *_part_files(p)]]
    pool = update_pool(root, embedder, model=model, cache_dir=cache_dir, extra=files, **kwargs)
    if not keep_shards:
        for p in files:
            p.unlink(missing_ok=True)
        for p in shards.values():  # their locks, left by filelock (only the shard processes used them)
            Path(f"{p}.lock").unlink(missing_ok=True)
    return pool


def open_pool(root: PathLike, model: str, cache_dir: Union[PathLike, None] = None) -> PoolSet:
    """The cached pool of ``model`` for the folder ``root``, memory-mapped, without scanning the
    folder or embedding anything: the main cache file if there is one, else the complete set of
    shard files (ranked together, not merged).

    Raises ``FileNotFoundError`` naming the folder and the command that fills it when there is
    no cache, and ``ValueError`` when a shard set is incomplete.
    """
    cache_dir = default_cache_dir(root) if cache_dir is None else Path(cache_dir)
    candidates = [cache_path(cache_dir, model)]
    if not candidates[0].is_file():
        shards = _shard_files(cache_dir, model)
        counts = {n for _, n in shards}
        if shards and (len(counts) > 1 or len(shards) != next(iter(counts))):
            have = ", ".join(f"{i}/{n}" for i, n in shards)
            raise ValueError(
                f"shard caches in {cache_dir} are incomplete or mixed ({have}); run the missing "
                "shards (perface embed-pool --shard I/N) or merge them (perface embed-pool --merge)"
            )
        candidates = list(shards.values())
    pools = [read_cache(p, root) for p in candidates]
    if not pools or any(p is None for p in pools):
        raise FileNotFoundError(
            f"no usable pool cache of model {model!r} in {cache_dir}; fill it first with "
            f"perface embed-pool {root} --cache {cache_dir} (or rank without --no-update)"
        )
    return PoolSet([p for p in pools if p is not None])
