"""Photos in, similarity out: load, detect, align and embed many images, never losing a batch
to one bad item.

- :func:`prepare_face`: one image -> its most prominent face aligned to a template (3, S, S).
- :func:`embed_images`: many images -> :class:`EmbedResult` (NaN rows + reasons for failures),
  with a DataLoader (``num_workers``) and a tqdm progress bar.
- :func:`similarity`: ``perface.similarity(a, b)``. A single pair returns a ``float`` and raises
  :class:`~perface.NoFaceError` / :class:`~perface.ImageReadError`; lists or batches return a
  :class:`SimilarityResult` (NaN scores plus reasons for failed pairs). It scores without
  gradients; for a differentiable loss on photo tensors use ``PerFace(align="detect")``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch.utils.data import DataLoader, Dataset

from .alignment import align_faces
from .errors import PerFaceError
from .imageio import describe, is_batch
from .registry import DEFAULT_MODEL

__all__ = ["prepare_face", "embed_images", "EmbedResult", "similarity", "SimilarityResult"]

_FAILURES = (PerFaceError, ValueError, TypeError, OSError)


def prepare_face(src: Any, template: str = "arcface", size: int = 112, face_index: Optional[int] = None,
                 device: Union[str, torch.device, None] = None) -> torch.Tensor:
    """Load ``src``, detect, pick one face (most prominent, or rank ``face_index``) and align it
    to ``template``: (3, size, size) float32 in [0, 1]. Raises :class:`~perface.NoFaceError` or
    :class:`~perface.ImageReadError`; safe inside DataLoader workers."""
    if face_index == "all":
        raise ValueError("prepare_face returns one face; use perface.align_faces(..., face_index='all')")
    return align_faces(src, template=template, size=size, face_index=face_index, device=device)[0]


@dataclass
class EmbedResult:
    """Embeddings of many images. Row ``r`` comes from input ``source[r]``.

    ``embeddings``: (R, D) float32, L2-normalized, NaN rows where an input failed; ``ok``: (R,)
    bool; ``errors``: input index -> reason; ``source``: (R,) input index of each row (one row
    per input unless ``face_index="all"``); ``model``: checkpoint name.
    """

    embeddings: torch.Tensor
    ok: torch.Tensor
    errors: Dict[int, str]
    source: torch.Tensor
    model: str

    def __len__(self) -> int:
        return self.embeddings.shape[0]


class _Faces(Dataset):
    def __init__(self, sources: Sequence[Any], template: str, size: int, face_index, device) -> None:
        self.sources, self.template, self.size = sources, template, size
        self.face_index, self.device = face_index, device

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> Tuple[int, Optional[torch.Tensor], Optional[str]]:
        src = self.sources[i]
        try:
            with torch.no_grad():
                crops = align_faces(src, self.template, self.size, self.face_index, device=self.device)
            return i, crops.detach().cpu(), None
        except _FAILURES as exc:
            message, plain, indexed = str(exc), describe(src), describe(src, i)
            reason = indexed + message[len(plain):] if message.startswith(plain) else f"{indexed}: {message}"
            return i, None, f"{type(exc).__name__}: {reason}"


def _collate(items):
    return items


@functools.lru_cache(maxsize=4)
def _cached_metric(name: str):
    from .model import PerFace

    return PerFace(name)


def _metric(model: Any):
    from .model import PerFace

    return model if isinstance(model, PerFace) else _cached_metric(str(model))


def _as_list(sources: Any) -> List[Any]:
    if isinstance(sources, torch.Tensor) and sources.dim() == 4:
        return list(sources.detach().unbind(0))
    if is_batch(sources):
        return list(sources)
    return [sources]


def embed_images(sources: Any, model: Any = DEFAULT_MODEL, batch_size: int = 32, num_workers: int = 0,
                 progress: bool = True, face_index: Union[int, str, None] = None,
                 device: Union[str, torch.device, None] = None) -> EmbedResult:
    """Embed the faces in many images; failures become NaN rows with a reason, never an exception.

    ``sources``: a list of anything :func:`perface.load_image` accepts (or a 4-D batch).
    ``model``: a :class:`~perface.PerFace` or a checkpoint name. Images are loaded, detected and
    aligned to the model's template in ``num_workers`` DataLoader workers (detection on CPU
    there; in-process on ``device``, default the model's device); ``face_index``: ``None`` (most
    prominent face), an int rank, or ``"all"`` (one row per face, see ``EmbedResult.source``).
    No gradients.
    """
    metric = _metric(model)
    items = _as_list(sources)
    model_device = next(metric.parameters()).device
    det_device = "cpu" if num_workers > 0 else (device if device is not None else model_device)
    dataset = _Faces(items, metric.template, metric.input_size, face_index, det_device)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=_collate)
    rows: List[torch.Tensor] = []
    sources_of: List[int] = []
    errors: Dict[int, str] = {}
    nan_row = torch.full((1, metric.embedding_size), float("nan"))
    from tqdm.auto import tqdm

    with torch.no_grad(), tqdm(total=len(items), unit="img", desc=f"embed ({metric.name})", disable=not progress) as bar:
        for batch in loader:
            good = [crops for _, crops, _ in batch if crops is not None]
            emb = metric.embed(torch.cat(good).to(model_device), aligned=True).float().cpu() if good else None
            start = 0
            for i, crops, reason in batch:
                if crops is None:
                    errors[i] = reason
                    rows.append(nan_row)
                    sources_of.append(i)
                else:
                    rows.append(emb[start:start + len(crops)])
                    sources_of.extend([i] * len(crops))
                    start += len(crops)
            bar.update(len(batch))
    embeddings = torch.cat(rows) if rows else torch.empty(0, metric.embedding_size)
    source = torch.tensor(sources_of, dtype=torch.long)
    ok = ~torch.isnan(embeddings).any(dim=1)
    return EmbedResult(embeddings, ok, errors, source, metric.name)


@dataclass
class SimilarityResult:
    """Scores of many pairs: ``scores`` (P,) cosine similarity in [-1, 1], NaN where a pair
    failed; ``ok`` (P,) bool; ``errors``: pair index -> reason; ``pairs``: (a index, b index)
    of each score; ``model``: checkpoint name. Iterating yields floats."""

    scores: torch.Tensor
    ok: torch.Tensor
    errors: Dict[int, str]
    pairs: List[Tuple[int, int]]
    model: str = field(default="")

    def __len__(self) -> int:
        return self.scores.shape[0]

    def __iter__(self) -> Iterator[float]:
        return iter(self.scores.tolist())

    def tolist(self) -> List[float]:
        return self.scores.tolist()


def _pairs(n_a: int, n_b: int) -> List[Tuple[int, int]]:
    if n_a == n_b:
        return [(i, i) for i in range(n_a)]
    if n_a == 1:
        return [(0, j) for j in range(n_b)]
    if n_b == 1:
        return [(i, 0) for i in range(n_a)]
    raise ValueError(f"similarity: {n_a} images in a and {n_b} in b; pass equal lengths (pairwise) or one image "
                     "on either side (one against many).")


def similarity(a: Any, b: Any, model: Any = DEFAULT_MODEL, *, face_index: Optional[int] = None,
               batch_size: int = 32, num_workers: int = 0, progress: bool = False,
               device: Union[str, torch.device, None] = None) -> Union[float, SimilarityResult]:
    """How alike the faces in ``a`` and ``b`` look: cosine similarity in [-1, 1] (higher = more alike).

    ``a``, ``b``: images (paths, ``PIL.Image``, numpy HWC, tensors (3, H, W)) or lists/batches of
    them; faces are detected and aligned to the model's template. One image each: returns a
    ``float`` and raises :class:`~perface.NoFaceError` or :class:`~perface.ImageReadError`.
    Lists/batches: pairwise for equal lengths, one-against-many when one side has a single
    image; returns a :class:`SimilarityResult` whose failed pairs are NaN with a reason.
    ``model``: checkpoint name or :class:`~perface.PerFace`. No gradients (use
    ``PerFace(align="detect")`` for a differentiable loss).
    """
    if face_index == "all":
        raise ValueError("similarity compares one face per image; pass face_index=None or an int")
    metric = _metric(model)
    if not is_batch(a) and not is_batch(b):
        dev = device if device is not None else next(metric.parameters()).device
        with torch.no_grad():
            crops = torch.stack([prepare_face(x, metric.template, metric.input_size, face_index, dev) for x in (a, b)])
            emb = metric.embed(crops.to(next(metric.parameters()).device), aligned=True)
        return float((emb[0] * emb[1]).sum())
    list_a, list_b = _as_list(a), _as_list(b)
    pairs = _pairs(len(list_a), len(list_b))
    result = embed_images(list_a + list_b, metric, batch_size=batch_size, num_workers=num_workers,
                          progress=progress, face_index=face_index, device=device)
    emb, n_a = result.embeddings, len(list_a)
    scores = torch.stack([(emb[i] * emb[n_a + j]).sum() for i, j in pairs]) if pairs else torch.empty(0)
    errors = {}
    for p, (i, j) in enumerate(pairs):
        reasons = [f"a[{i}]: {result.errors[i]}"] if i in result.errors else []
        reasons += [f"b[{j}]: {result.errors[n_a + j]}"] if n_a + j in result.errors else []
        if reasons:
            errors[p] = "; ".join(reasons)
    return SimilarityResult(scores, ~torch.isnan(scores), errors, pairs, metric.name)
