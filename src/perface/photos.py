"""Photos in, similarity out: ``perface.similarity`` and ``perface.embed_images``, thin wrappers
over the one photo pipeline, :func:`perface.embedding.embed`.

- :func:`embed_images`: many images -> :class:`~perface.EmbedResult` (NaN rows + reasons for
  failures), with a DataLoader (``num_workers``) and a tqdm progress bar.
- :func:`similarity`: ``perface.similarity(a, b)``. A single pair returns a ``float`` and raises
  :class:`~perface.NoFaceError` / :class:`~perface.ImageReadError`; lists or batches return a
  :class:`SimilarityResult` (NaN scores plus reasons for failed pairs). It scores without
  gradients; for a differentiable loss on photo tensors use ``PerFace(align="detect")``.
- :func:`prepare_face`: one image -> its most prominent face aligned to a template (3, S, S).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import torch

from .alignment import align_faces
from .embedding import EmbedResult, FaceIndex, embed, get_metric
from .imageio import batch_items, is_batch
from .registry import DEFAULT_MODEL

__all__ = ["prepare_face", "embed_images", "EmbedResult", "similarity", "SimilarityResult"]


def prepare_face(
    src: Any,
    template: str = "arcface",
    size: int = 112,
    face_index: Optional[int] = None,
    device: Union[str, torch.device, None] = None,
) -> torch.Tensor:
    """Load ``src``, detect, pick one face (most prominent, or rank ``face_index``) and align it
    to ``template``: (3, size, size) float32 in [0, 1]. Raises :class:`~perface.NoFaceError` or
    :class:`~perface.ImageReadError`; safe inside DataLoader workers."""
    if isinstance(face_index, str) and face_index == "all":  # callers without type checking
        raise ValueError("prepare_face returns one face; use perface.align_faces(..., face_index='all')")
    return align_faces(src, template=template, size=size, face_index=face_index, device=device)[0]


def embed_images(
    sources: Any,
    model: Any = DEFAULT_MODEL,
    batch_size: int = 32,
    num_workers: int = 0,
    progress: bool = True,
    face_index: Union[FaceIndex, Sequence[FaceIndex]] = None,
    device: Union[str, torch.device, None] = None,
    *,
    align: str = "detect",
) -> EmbedResult:
    """Embed the faces in many images; failures become NaN rows with a reason, never an exception.

    ``sources``: a list of anything :func:`perface.load_image` accepts (or a 4-D batch).
    ``model``: a :class:`~perface.PerFace` or a checkpoint name. ``face_index``: ``None`` (most
    prominent face), an int rank, ``"all"`` (one row per face, see ``EmbedResult.source``), or
    one of those per image. ``align``: ``"detect"`` for photos, or the format of pre-aligned
    crops. Everything else as in :func:`perface.embedding.embed`. No gradients.
    """
    return embed(
        sources,
        model,
        align=align,
        face_index=face_index,
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
        device=device,
    )


@dataclass
class SimilarityResult:
    """Scores of many pairs: ``scores`` (P,) cosine similarity in [-1, 1], NaN where a pair
    failed; ``ok`` (P,) bool; ``errors``: pair index -> reason; ``pairs``: (a index, b index)
    of each score; ``model``: checkpoint name; ``signature``: the metric signature to report
    with the scores. Iterating yields floats."""

    scores: torch.Tensor
    ok: torch.Tensor
    errors: dict[int, str]
    pairs: list[tuple[int, int]]
    model: str = field(default="")
    signature: str = field(default="")

    def __len__(self) -> int:
        return self.scores.shape[0]

    def __iter__(self) -> Iterator[float]:
        return iter(self.scores.tolist())

    def tolist(self) -> list[float]:
        return self.scores.tolist()


def _pairs(n_a: int, n_b: int) -> list[tuple[int, int]]:
    if n_a == n_b:
        return [(i, i) for i in range(n_a)]
    if n_a == 1:
        return [(0, j) for j in range(n_b)]
    if n_b == 1:
        return [(i, 0) for i in range(n_a)]
    raise ValueError(
        f"similarity: {n_a} images in a and {n_b} in b; pass equal lengths (pairwise) or one image "
        "on either side (one against many)."
    )


_RENAMED = {
    "face_index": "face_index was split into face_index_a (which face of the photos in a) and face_index_b "
    "(of those in b), so that choosing a face on one side leaves the other alone: pass face_index_a=N "
    "and/or face_index_b=N",
}


def _unknown_keywords(function: str, unknown: dict[str, Any]) -> str:
    """The message for keywords ``function`` does not take, naming replacements of old ones."""
    names = ", ".join(repr(k) for k in unknown)
    hints = [_RENAMED[k] for k in unknown if k in _RENAMED]
    return f"{function}() got unexpected keyword argument(s) {names}" + ("; " + "; ".join(hints) if hints else "")


def similarity(
    a: Any,
    b: Any,
    model: Any = DEFAULT_MODEL,
    *,
    face_index_a: Union[Optional[int], Sequence[Optional[int]]] = None,
    face_index_b: Union[Optional[int], Sequence[Optional[int]]] = None,
    batch_size: int = 32,
    num_workers: int = 0,
    progress: bool = False,
    device: Union[str, torch.device, None] = None,
    **unknown: Any,
) -> Union[float, SimilarityResult]:
    """How alike the faces in ``a`` and ``b`` look: cosine similarity in [-1, 1] (higher = more alike).

    ``a``, ``b``: images (paths, ``PIL.Image``, numpy HWC, tensors (3, H, W)) or lists/batches of
    them; faces are detected and aligned to the model's template. ``face_index_a`` /
    ``face_index_b``: which face of the photos in ``a`` / in ``b`` (``None``: the most prominent;
    an int rank, 0 = most prominent; or a list with one value per image), so choosing the second
    face of a group photo leaves the other side alone. One image each: returns a ``float`` and
    raises :class:`~perface.NoFaceError` or :class:`~perface.ImageReadError`. Lists/batches:
    pairwise for equal lengths, one-against-many when one side has a single image; returns a
    :class:`SimilarityResult` whose failed pairs are NaN with a reason. ``model``: checkpoint
    name or :class:`~perface.PerFace`. No gradients (use ``PerFace(align="detect")`` for a
    differentiable loss). Raises ``ValueError`` for list lengths that cannot pair (before any work),
    ``TypeError`` for an unknown keyword (naming its replacement for the old ``face_index=``).
    """
    if unknown:
        raise TypeError(_unknown_keywords("similarity", unknown))
    for name, value in (("face_index_a", face_index_a), ("face_index_b", face_index_b)):
        if (isinstance(value, str) and value == "all") or (isinstance(value, (list, tuple)) and "all" in value):
            raise ValueError(f"similarity compares one face per image; pass {name}=None or an int")
    metric = get_metric(model)
    single = not is_batch(a) and not is_batch(b)
    list_a, list_b = batch_items(a), batch_items(b)
    pairs = _pairs(len(list_a), len(list_b))
    on_error = "raise" if single else "record"
    emb_a, emb_b = (
        embed(
            side,
            metric,
            face_index=index,
            argument=name,
            batch_size=batch_size,
            num_workers=num_workers,
            progress=progress,
            device=device,
            on_error=on_error,
        )
        for side, index, name in ((a, face_index_a, "face_index_a"), (b, face_index_b, "face_index_b"))
    )
    if single:
        return float((emb_a.embeddings[0] * emb_b.embeddings[0]).sum())
    rows_a, rows_b = (
        torch.tensor([i for i, _ in pairs], dtype=torch.long),
        torch.tensor([j for _, j in pairs], dtype=torch.long),
    )
    scores = (emb_a.embeddings[rows_a] * emb_b.embeddings[rows_b]).sum(dim=1)
    errors = {}
    for p, (i, j) in enumerate(pairs):
        reasons = [f"a[{i}]: {emb_a.errors[i]}"] if i in emb_a.errors else []
        reasons += [f"b[{j}]: {emb_b.errors[j]}"] if j in emb_b.errors else []
        if reasons:
            errors[p] = "; ".join(reasons)
    return SimilarityResult(scores, ~torch.isnan(scores), errors, pairs, metric.name, emb_a.signature)
