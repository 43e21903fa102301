"""Exact cosine search of one target against a pool of embeddings, and the choice of candidates.

Pure torch on embeddings; knows nothing about photos or files. The pool is scanned in chunks of
rows: each chunk's similarities are written straight into one preallocated (N,) float32 vector
and the chunk's best candidates are kept by a partial selection (``torch.topk``), so the extra
memory is O(N) float32 for the scores plus O(chunk) for temporaries — never a copy of the
(N, D) matrix. That ranks a million 512-d embeddings in under a second on a busy 2-core CPU
(``benchmarks/bench_rank.py``, ``docs/ranking.md``).

Ordering is total and deterministic: by similarity (descending for the most similar, ascending
for the least similar), ties broken by ascending row index — the same order as a stable sort of
the dense score vector, whatever the chunk size.

Similarities are clamped to [-1, 1] as they are computed, before any comparison: a float32 dot
product of two unit vectors can round to 1.0000001 (a face against itself, or a copy), which
would otherwise fall outside a band ending at 1 and, worse, depend on the CPU's summation order.

The pool may be one (N, D) tensor or a sequence of them (e.g. the memory-mapped shards of one
pool): rows are numbered part after part and the result is the same as for their concatenation,
which is never built.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.nn.functional as F

__all__ = ["DEFAULT_CHUNK_ROWS", "Selection", "cosine_scores", "search"]

Embeddings = Union[torch.Tensor, Sequence[torch.Tensor]]

# Rows per chunk: the per-chunk temporaries are a few bytes per row (about 5 MiB at this size,
# 0.25% of a 1M x 512 float32 matrix) and each chunk costs a fixed number of parallel regions,
# which dominate on a busy CPU (measured on 2 shared cores: 131k-row chunks 1.6 s, 1M-row chunks
# well under 1 s for 1M x 512), while the matrix-vector product runs at memory bandwidth either way.
DEFAULT_CHUNK_ROWS = 1 << 20


@dataclass(frozen=True)
class Selection:
    """The chosen pool rows, best first, and every row's similarity.

    Attributes:
        indices: (K,) int64 pool rows in rank order.
        scores: (K,) float32 cosine similarity of those rows to the target, in [-1, 1].
        all_scores: (N,) float32 similarity of every pool row, clamped to [-1, 1] (NaN for
            rows without an embedding, e.g. photos where no face was found); useful for a
            histogram.
    """

    indices: torch.Tensor
    scores: torch.Tensor
    all_scores: torch.Tensor

    def __len__(self) -> int:
        return int(self.indices.numel())


def _target_vector(target: torch.Tensor, dim: int) -> torch.Tensor:
    target = torch.as_tensor(target).detach()
    if target.dim() == 2 and target.shape[0] == 1:
        target = target[0]
    if target.dim() != 1 or target.shape[0] != dim:
        raise ValueError(f"target embedding must have shape ({dim},) to match the pool; got {tuple(target.shape)}")
    target = target.to(torch.float32)
    if not torch.isfinite(target).all():
        raise ValueError("target embedding contains NaN/inf (was no face found in the target?)")
    return F.normalize(target, dim=0)


def _check_pool(embeddings: Embeddings) -> tuple[list[torch.Tensor], int, int]:
    """The pool as a list of parts, its total row count and its embedding size."""
    parts = [embeddings] if isinstance(embeddings, torch.Tensor) else list(embeddings)
    if not parts:
        raise ValueError("the pool is an empty list of embedding tensors")
    for part in parts:
        if part.dim() != 2:
            raise ValueError(f"pool embeddings must be 2-D tensors (N, D); got shape {tuple(part.shape)}")
        if not part.is_floating_point():
            raise ValueError(f"pool embeddings must be floating point; got {part.dtype}")
    dims = {part.shape[1] for part in parts}
    if len(dims) > 1:
        raise ValueError(f"pool parts have different embedding sizes {sorted(dims)}")
    return parts, sum(part.shape[0] for part in parts), parts[0].shape[1]


def _row_chunks(parts: list[torch.Tensor], chunk_size: int) -> Iterator[tuple[int, torch.Tensor]]:
    """(global row offset, rows) of at most ``chunk_size`` rows, part after part."""
    offset = 0
    for part in parts:
        for start in range(0, part.shape[0], chunk_size):
            yield offset + start, part[start : start + chunk_size]
        offset += part.shape[0]


def _chunk_dot(rows: torch.Tensor, target: torch.Tensor, out: torch.Tensor) -> None:
    """``out = clamp(rows @ target, -1, 1)`` (float32) without copying ``rows``. Pools in
    another dtype are multiplied in that dtype (torch accumulates float16/bfloat16 products in
    float32; the result is rounded to the pool's dtype) through a chunk-sized temporary. NaN
    rows stay NaN."""
    if rows.dtype == torch.float32:
        torch.mv(rows, target, out=out)
    else:
        out.copy_(torch.mv(rows, target.to(rows.dtype)))
    out.clamp_(-1.0, 1.0)


def cosine_scores(
    target: torch.Tensor,
    embeddings: Embeddings,
    *,
    chunk_size: int = DEFAULT_CHUNK_ROWS,
    out: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Similarity of ``target`` (D,) to every row of ``embeddings`` (N, D), or of a sequence
    of such parts: (N,) float32 in [-1, 1] (clamped).

    Rows must be L2-normalized (as :meth:`perface.PerFace.embed` and the pool cache give them);
    the target is normalized here. NaN rows give NaN. ``out`` may be a preallocated (N,) float32
    tensor to write into. Raises ``ValueError`` for shapes that do not match.
    """
    parts, n, d = _check_pool(embeddings)
    q = _target_vector(target, d).to(parts[0].device)
    scores = _score_buffer(out, n, q.device)
    for start, rows in _row_chunks(parts, max(1, int(chunk_size))):
        _chunk_dot(rows, q, scores[start : start + rows.shape[0]])
    return scores


def _score_buffer(out: Optional[torch.Tensor], n: int, device: torch.device) -> torch.Tensor:
    if out is None:
        return torch.empty(n, dtype=torch.float32, device=device)
    if out.shape != (n,) or out.dtype != torch.float32 or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous float32 tensor of shape ({n},); got {out.dtype} {tuple(out.shape)}")
    return out


def _check_selection(
    band: Optional[tuple[float, float]],
    top: Optional[int],
    bottom: Optional[int],
    exclude_above: Optional[float],
    mask: Optional[torch.Tensor],
    n: int,
) -> tuple[Optional[int], bool]:
    if top is not None and bottom is not None:
        raise ValueError("give at most one of top= and bottom= (the k most or the k least similar)")
    k = top if top is not None else bottom
    if k is not None and (int(k) != k or k < 1):
        raise ValueError(f"top/bottom must be a positive integer; got {k!r}")
    if band is not None:
        lo, hi = band
        if not (-1.0 <= lo <= hi <= 1.0):
            raise ValueError(f"band must be (lo, hi) with -1 <= lo <= hi <= 1; got {band!r}")
    if exclude_above is not None and not (-1.0 <= exclude_above <= 1.0):
        raise ValueError(f"exclude_above must be a similarity in [-1, 1]; got {exclude_above!r}")
    if mask is not None and (mask.dtype != torch.bool or mask.shape != (n,)):
        raise ValueError(f"mask must be a bool tensor of shape ({n},); got {mask.dtype} {tuple(mask.shape)}")
    return (None if k is None else int(k)), bottom is None


def search(
    target: torch.Tensor,
    embeddings: Embeddings,
    *,
    band: Optional[tuple[float, float]] = None,
    top: Optional[int] = None,
    bottom: Optional[int] = None,
    exclude_above: Optional[float] = None,
    mask: Optional[torch.Tensor] = None,
    chunk_size: int = DEFAULT_CHUNK_ROWS,
    scores_out: Optional[torch.Tensor] = None,
) -> Selection:
    """Rank the pool ``embeddings`` (N, D) against ``target`` (D,) and choose candidates.

    A row is a candidate when its similarity ``s`` is finite, lies in ``band`` = (lo, hi)
    (inclusive) if given, is not above ``exclude_above`` (the target's own identity: faces more
    similar than this count as the same person) and ``mask[row]`` is True if a mask is given.
    Candidates are returned most similar first; with ``top=k`` only the k most similar, with
    ``bottom=k`` the k least similar (least similar first). A band combined with top/bottom
    takes the k most/least similar inside the band. With none of band/top/bottom every
    candidate is returned, most similar first.

    Similarities are clamped to [-1, 1] before they are compared with the band or threshold, so
    rounding never moves a face across an edge at -1 or 1.

    Args:
        target: (D,) target embedding (normalized here).
        embeddings: (N, D) L2-normalized pool rows, any float dtype (float16/bfloat16 pools are
            scored in their dtype: half the memory, scores rounded to it), or a sequence of such
            parts (shards; memory-mapped tensors are read once and never copied); NaN rows are
            never chosen.
        chunk_size: rows scored per step; memory beyond the (N,) float32 score vector is
            O(chunk_size); the pool matrix is never copied.
        scores_out: optional preallocated (N,) float32 vector for the similarities.

    Returns:
        A :class:`Selection` (indices, scores, all_scores); indices count rows part after part.

    Raises:
        ValueError: conflicting or out-of-range settings, or shapes that do not match.
    """
    parts, n, d = _check_pool(embeddings)
    k, largest = _check_selection(band, top, bottom, exclude_above, mask, n)
    q = _target_vector(target, d).to(parts[0].device)
    scores = _score_buffer(scores_out, n, q.device)

    kept_idx = torch.empty(0, dtype=torch.long, device=q.device)
    kept_key = torch.empty(0, dtype=torch.float32, device=q.device)
    parts_idx, parts_key = [], []  # k is None: every candidate, sorted once at the end
    for start, rows in _row_chunks(parts, max(1, int(chunk_size))):
        stop = start + rows.shape[0]
        chunk = scores[start:stop]
        _chunk_dot(rows, q, chunk)
        idx, key = _chunk_candidates(
            chunk, start, k, largest, band, exclude_above, None if mask is None else mask[start:stop].to(q.device)
        )
        if k is None:
            parts_idx.append(idx)
            parts_key.append(key)
            continue
        # Earlier chunks hold lower row indices, so concatenation keeps index order and a stable
        # sort breaks ties by index: exactly the dense stable order.
        kept_idx, kept_key = _best(torch.cat([kept_idx, idx]), torch.cat([kept_key, key]), k)
    if k is None:
        kept_idx, kept_key = _best(torch.cat([kept_idx, *parts_idx]), torch.cat([kept_key, *parts_key]), None)
    return Selection(indices=kept_idx, scores=scores[kept_idx], all_scores=scores)


def _chunk_candidates(
    chunk: torch.Tensor,
    offset: int,
    k: Optional[int],
    largest: bool,
    band: Optional[tuple[float, float]],
    exclude_above: Optional[float],
    mask: Optional[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of this chunk that can still make the final list: (global indices ascending, sort keys).

    Written for few passes over the chunk: each elementwise op is a parallel region, and on a
    busy machine their count, not the arithmetic, sets the time.
    """
    neg_inf = float("-inf")
    key = torch.nan_to_num(chunk if largest else chunk.neg(), nan=neg_inf)  # larger key = better rank
    if band is not None:
        key.masked_fill_((chunk < band[0]) | (chunk > band[1]), neg_inf)
    if exclude_above is not None:
        key.masked_fill_(chunk > exclude_above, neg_inf)
    if mask is not None:
        key.masked_fill_(~mask, neg_inf)
    threshold = neg_inf
    if k is not None and k < key.numel():
        # The k-th best key of the chunk; every row at or above it (ties included) is kept so
        # the index tie-break stays exact.
        threshold = float(torch.topk(key, k, sorted=False).values.min())
    local = (key > neg_inf if threshold == neg_inf else key >= threshold).nonzero().squeeze(1)
    return local + offset, key[local]


def _best(idx: torch.Tensor, key: torch.Tensor, k: Optional[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort candidates (given in ascending index order) by key descending, stable; keep k."""
    order = torch.sort(key, descending=True, stable=True).indices
    if k is not None:
        order = order[:k]
    return idx[order], key[order]
