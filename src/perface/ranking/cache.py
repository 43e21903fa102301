"""The pool cache file: one safetensors file per pool (or shard, or saved progress), read memory-mapped.

A :class:`Pool` (the embeddings of a folder of photos, one row per file) is stored as one
safetensors file (format ``perface-pool-2``) with these tensors, N rows:

=================  ==========================  ===============================================
tensor             shape, dtype                content
=================  ==========================  ===============================================
``embeddings``     (N, D) float32 or float16   L2-normalized rows; NaN rows for failed files
``boxes``          (N, 4) float32              face box x1, y1, x2, y2 in photo pixels (NaN: none)
``sizes``          (N,) int64                  file size in bytes when the row was made
``mtimes_ns``      (N,) int64                  file modification time (ns) when the row was made
``digests``        (N,) int64                  first 8 bytes of the sha256 of the file's bytes
``names``          (B,) uint8                  the N relative file names, UTF-8, concatenated
``name_offsets``   (N + 1,) int64              name ``i`` is ``names[name_offsets[i]:name_offsets[i + 1]]``
``error_rows``     (K,) int64                  rows without an embedding, ascending
``errors``         (E,) uint8                  their K reasons, UTF-8, concatenated
``error_offsets``  (K + 1,) int64              as ``name_offsets``, for ``errors``
``skipped``        (S,) uint8                  JSON ``{file: reason}`` of the files not embedded
                                               at the last scan (not image files, ...)
=================  ==========================  ===============================================

and string metadata ``format``, ``model``, ``template``, ``fingerprint`` (sha256 of the network's
parameters and input settings), ``signature`` (:func:`perface.signature.signature_of`) and
``root`` (the pool folder when written). Names are sorted, so a name is found by bisection.

One file holds everything, so a reader never sees names and rows from two different writes;
files are replaced atomically (:func:`perface._io.atomic_write`) with the umask's permissions.
:func:`read_cache` maps the file into memory (``mmap``, copy-on-write) and hands out tensors
that point into the mapping: opening a 2.5 GB cache reads only its header, the pages of the
matrix are read by the search that scans them, and they count as file-backed (page cache), not
as the process's own memory. Names and failure reasons are decoded only when asked for.
"""

from __future__ import annotations

import bisect
import json
import mmap
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union, overload

import torch

from .._io import atomic_write

__all__ = ["FORMAT", "Strings", "Pool", "write_cache", "read_cache"]

FORMAT = "perface-pool-2"
_META_KEYS = ("model", "template", "fingerprint", "signature")
_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_ROW_TENSORS = ("embeddings", "boxes", "sizes", "mtimes_ns", "digests")


class Strings(Sequence[str]):
    """N strings kept as one UTF-8 byte tensor and N + 1 offsets (possibly memory-mapped);
    each string is decoded when it is read. Compares equal to any sequence of the same strings."""

    def __init__(self, blob: torch.Tensor, offsets: torch.Tensor) -> None:
        if blob.dtype != torch.uint8 or blob.dim() != 1 or offsets.dtype != torch.int64 or offsets.dim() != 1:
            raise ValueError("Strings need a 1-D uint8 blob and 1-D int64 offsets")
        if offsets.numel() == 0 or int(offsets[0]) != 0 or int(offsets[-1]) != blob.numel():
            raise ValueError(f"string offsets must run from 0 to the blob size {blob.numel()}")
        self.blob, self.offsets = blob, offsets

    @classmethod
    def from_list(cls, items: Sequence[str]) -> Strings:
        encoded = [s.encode("utf-8") for s in items]
        offsets = torch.zeros(len(encoded) + 1, dtype=torch.int64)
        if encoded:
            offsets[1:] = torch.tensor([len(e) for e in encoded], dtype=torch.int64).cumsum(0)
        blob = (
            torch.frombuffer(bytearray(b"".join(encoded)), dtype=torch.uint8)
            if offsets[-1]
            else torch.empty(0, dtype=torch.uint8)
        )
        return cls(blob, offsets)

    def __len__(self) -> int:
        return self.offsets.numel() - 1

    @overload
    def __getitem__(self, i: int) -> str: ...

    @overload
    def __getitem__(self, i: slice) -> list[str]: ...

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"string index {i} out of range for {n} strings")
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.blob[a:b].numpy().tobytes().decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        data = self.blob.numpy().tobytes()
        bounds = self.offsets.tolist()
        for a, b in zip(bounds[:-1], bounds[1:]):
            yield data[a:b].decode("utf-8")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"Strings({len(self)} strings)"


class _Errors(Mapping[str, str]):
    """Failure reasons of a cached pool, keyed by file name, decoded on access."""

    def __init__(self, names: Sequence[str], rows: torch.Tensor, reasons: Strings) -> None:
        self.names, self.rows, self.reasons = names, rows, reasons

    def __len__(self) -> int:
        return self.rows.numel()

    def __iter__(self) -> Iterator[str]:
        return (self.names[r] for r in self.rows.tolist())

    def __getitem__(self, name: str) -> str:
        row = _find(self.names, name)
        k = int(torch.searchsorted(self.rows, torch.tensor(row))) if row is not None else len(self)
        if k >= len(self) or int(self.rows[k]) != row:
            raise KeyError(name)
        return self.reasons[k]


def _find(names: Sequence[str], name: str) -> Optional[int]:
    """Row of ``name`` in sorted ``names``, or None."""
    r = bisect.bisect_left(names, name)
    return r if r < len(names) and names[r] == name else None


@dataclass
class Pool:
    """Embeddings of a folder of photos, one row per image file (sorted by relative path).

    Attributes:
        root: the pool folder; ``files`` are relative to it (POSIX separators).
        files: the N relative file names, sorted (a list, or :class:`Strings` when read from a
            cache).
        embeddings: (N, D) float32 or float16 L2-normalized rows; NaN rows for failed files.
            Memory-mapped (read-only in practice) when read from a cache.
        boxes: (N, 4) float32 face box (x1, y1, x2, y2) in photo pixels; NaN when unknown.
        sizes, mtimes_ns: (N,) int64 file size (bytes) and modification time (ns) the row was
            made from.
        digests: (N,) int64 first 8 bytes of the sha256 of each file's bytes (0: unknown), used
            to find copies of the target.
        errors: file name -> why it has no embedding (no face found, unreadable image).
        model: ``{"model", "template", "fingerprint", "signature"}`` of the metric that made the
            rows.
        skipped: file name -> why it was not embedded at all (not an image file, HEIC without
            its reader); found again by each scan of the folder (a cache keeps the last scan's).
        embedded: how many files the last update embedded (the other rows came from the cache).
    """

    root: Path
    files: Sequence[str]
    embeddings: torch.Tensor
    boxes: torch.Tensor
    sizes: torch.Tensor
    mtimes_ns: torch.Tensor
    digests: torch.Tensor
    errors: Mapping[str, str]
    model: dict[str, str]
    skipped: dict[str, str] = field(default_factory=dict)
    embedded: int = 0

    def __len__(self) -> int:
        return len(self.files)

    @property
    def ok(self) -> torch.Tensor:
        """(N,) bool: rows with an embedding."""
        if not len(self) or self.embeddings.shape[1] == 0:
            return torch.zeros(len(self), dtype=torch.bool)
        return ~torch.isnan(self.embeddings[:, 0])

    @property
    def failures(self) -> dict[str, str]:
        """Every file of the folder without an embedding -> why: the failed rows (``errors``)
        and the files not tried (``skipped``), sorted by name."""
        merged = {**dict(self.errors), **self.skipped}
        return {name: merged[name] for name in sorted(merged)}

    def path(self, i: int) -> Path:
        """Full path of row ``i``."""
        return self.root / self.files[i]

    def subset(self, rows: Sequence[int]) -> Pool:
        """A new in-memory pool of ``rows`` (ascending), with their failure reasons."""
        index = torch.as_tensor(list(rows), dtype=torch.long)
        files = [self.files[r] for r in index.tolist()]
        errors = {name: self.errors[name] for name in files if name in self.errors}
        return Pool(
            root=self.root,
            files=files,
            embeddings=self.embeddings[index],
            boxes=self.boxes[index],
            sizes=self.sizes[index],
            mtimes_ns=self.mtimes_ns[index],
            digests=self.digests[index],
            errors=errors,
            model=dict(self.model),
        )


def write_cache(path: Union[str, Path], pool: Pool) -> Path:
    """Write ``pool`` to ``path`` (atomically, umask permissions); returns the path.

    The embeddings keep their dtype (float32 or float16). Raises ``OSError`` when the folder
    cannot be written.
    """
    from safetensors.torch import save_file

    names = pool.files if isinstance(pool.files, Strings) else Strings.from_list(list(pool.files))
    found = sorted((row, reason) for name, reason in pool.errors.items() if (row := _find(names, name)) is not None)
    error_rows = [row for row, _ in found]
    reason_strings = Strings.from_list([reason for _, reason in found])
    tensors = {
        "embeddings": pool.embeddings,
        "boxes": pool.boxes.to(torch.float32),
        "sizes": pool.sizes,
        "mtimes_ns": pool.mtimes_ns,
        "digests": pool.digests,
        "names": names.blob,
        "name_offsets": names.offsets,
        "error_rows": torch.tensor(error_rows, dtype=torch.int64),
        "errors": reason_strings.blob,
        "error_offsets": reason_strings.offsets,
        "skipped": _json_bytes(pool.skipped),
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    seen = set()
    for key, value in tensors.items():  # safetensors refuses tensors that share memory: copy those
        ptr = value.untyped_storage().data_ptr()
        if value.numel() and ptr in seen:
            tensors[key] = value.clone()
        seen.add(ptr)
    meta = {k: str(pool.model.get(k, "")) for k in _META_KEYS}
    meta.update(format=FORMAT, root=str(pool.root))
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def _json_bytes(data: dict[str, str]) -> torch.Tensor:
    encoded = json.dumps(data, ensure_ascii=False, sort_keys=True).encode("utf-8")
    return torch.frombuffer(bytearray(encoded), dtype=torch.uint8)


def _map_file(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """Parse a safetensors file and return (metadata, tensors viewing a private mapping)."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size < 8:
            raise ValueError(f"{size} bytes, too short for a safetensors file")
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY)
    header_len = int.from_bytes(mm[:8], "little")
    if header_len > size - 8:
        raise ValueError("header runs past the end of the file (truncated?)")
    header = json.loads(mm[8 : 8 + header_len])
    meta = header.pop("__metadata__", None) or {}
    base = 8 + header_len
    tensors = {}
    for name, info in header.items():
        dtype = _DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"tensor {name!r} has unsupported dtype {info['dtype']}")
        shape, (start, stop) = list(info["shape"]), info["data_offsets"]
        itemsize = torch.empty(0, dtype=dtype).element_size()
        count = 1
        for s in shape:
            count *= s
        if stop - start != count * itemsize or base + stop > size:
            raise ValueError(f"tensor {name!r} does not fit the file (truncated?)")
        if count == 0:
            tensors[name] = torch.empty(shape, dtype=dtype)
        elif (base + start) % itemsize == 0:
            tensors[name] = torch.frombuffer(mm, dtype=dtype, count=count, offset=base + start).view(shape)
            if name == "embeddings" and hasattr(mm, "madvise"):  # scanned front to back: read ahead far
                page = (base + start) // mmap.PAGESIZE * mmap.PAGESIZE
                mm.madvise(mmap.MADV_SEQUENTIAL, page, base + stop - page)
        else:  # unaligned (not written by safetensors >= 0.4): copy
            raw = bytearray(mm[base + start : base + stop])
            tensors[name] = torch.frombuffer(raw, dtype=dtype).view(shape)
    return meta, tensors


def read_cache(path: Union[str, os.PathLike[str]], root: Union[str, os.PathLike[str], None] = None) -> Optional[Pool]:
    """The pool stored at ``path``, memory-mapped; None when there is no such file.

    ``root``: the pool folder (default: the one recorded in the file). A damaged file or one in
    another format warns and returns None (it is then rebuilt); an unreadable one (permissions)
    warns naming the fix and returns None.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        meta, t = _map_file(path)
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT!r}")
        names = Strings(t["names"], t["name_offsets"])
        n = len(names)
        for key in _ROW_TENSORS:
            if t[key].shape[0] != n:
                raise ValueError(f"{key} has {t[key].shape[0]} rows for {n} file names")
        if t["embeddings"].dim() != 2 or t["boxes"].shape != (n, 4):
            raise ValueError("embeddings must be (N, D) and boxes (N, 4)")
        errors = _Errors(names, t["error_rows"], Strings(t["errors"], t["error_offsets"]))
        if len(errors.reasons) != len(errors):
            raise ValueError("failure reasons do not match their rows")
        skipped = json.loads(t["skipped"].numpy().tobytes().decode("utf-8"))
    except FileNotFoundError:  # removed since it was listed (another process folded it in)
        return None
    except PermissionError as exc:
        warnings.warn(
            f"pool cache {path} cannot be read ({exc.strerror}); it is ignored. Ask its owner to make "
            "it readable, or use another cache folder (--cache DIR, PERFACE_CACHE=DIR)",
            stacklevel=2,
        )
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:  # any damage: rebuild rather than trust it
        warnings.warn(f"pool cache {path} is unusable ({exc}); it will be rebuilt", stacklevel=2)
        return None
    return Pool(
        root=Path(root if root is not None else meta.get("root", "")),
        files=names,
        embeddings=t["embeddings"],
        boxes=t["boxes"],
        sizes=t["sizes"],
        mtimes_ns=t["mtimes_ns"],
        digests=t["digests"],
        errors=errors,
        model={k: meta.get(k, "") for k in _META_KEYS},
        skipped=skipped,
    )
