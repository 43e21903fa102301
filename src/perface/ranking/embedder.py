"""What the pool needs from a photo pipeline: the embedder protocol and its adapter to PerFace.

The pool code (:mod:`perface.ranking.pool`) is written against :data:`Embedder`, a callable
``paths -> EmbedBatch``; it never loads, detects or aligns photos itself. :class:`PhotoEmbedder`
is the adapter to the package's one photo pipeline, :func:`perface.embedding.embed`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol, Union

import torch

from ..registry import DEFAULT_MODEL

if TYPE_CHECKING:
    from ..model import PerFace

__all__ = ["EmbedBatch", "Embedder", "Progress", "PhotoEmbedder", "model_key"]

Progress = Callable[[int], None]


@dataclass
class EmbedBatch:
    """What an embedder returns for M files: ``embeddings`` (M, D) float32, L2-normalized, NaN
    rows where a file failed; ``boxes`` (M, 4) float32 face boxes x1, y1, x2, y2 in photo pixels
    (NaN when unknown); ``errors``: row -> reason (one line naming the file and the cause)."""

    embeddings: torch.Tensor
    boxes: torch.Tensor
    errors: dict[int, str] = field(default_factory=dict)


class Embedder(Protocol):
    """The embedder protocol: ``embedder(paths) -> EmbedBatch``, with a ``key`` attribute
    ``{"model", "template", "fingerprint", "signature"}`` naming what makes the rows. An embedder
    may also accept a keyword ``progress``: a callable told how many files it has finished, so
    that the pool's one progress bar moves during a call."""

    key: dict[str, str]

    def __call__(self, paths: list[str], /) -> EmbedBatch: ...


class PhotoEmbedder:
    """Embeds photos with a :class:`perface.PerFace` through :func:`perface.embedding.embed`: each
    is loaded, its most prominent face detected and aligned to the model's template (in
    DataLoader workers when ``num_workers > 0``), then embedded in batches. Failures become NaN
    rows with a reason.

    Args:
        model: a ``PerFace`` or a model name/path for one.
        batch_size: faces per forward pass.
        num_workers: DataLoader worker processes for loading/detection/alignment (0: in-process).
        progress: show a tqdm progress bar per call.
        device: where the backbone runs (None: where the model is; ``"auto"``: see
            :func:`perface.devices.resolve_device`). Detection runs on the CPU.

    Attributes:
        metric: the ``PerFace``; key: see :data:`Embedder`.
    """

    def __init__(
        self,
        model: Union[str, Path, PerFace] = DEFAULT_MODEL,
        *,
        batch_size: int = 32,
        num_workers: int = 0,
        progress: bool = True,
        device: Union[str, torch.device, None] = None,
    ) -> None:
        from ..devices import resolve_device
        from ..model import PerFace

        self.metric = model if isinstance(model, PerFace) else PerFace(model)
        if device is not None:
            self.metric.to(resolve_device(device))
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.progress = progress
        self.key = model_key(self.metric)

    def __call__(self, sources: Sequence[Any], progress: Union[bool, Progress, None] = None) -> EmbedBatch:
        """Embed ``sources`` (paths or anything :func:`perface.load_image` reads).

        ``progress``: True/False overrides the bar setting for this call; a callable is told
        the number of files finished when the call ends instead of drawing a bar (the pool calls
        with chunks of at most ``save_every`` files).
        """
        from ..embedding import embed

        report: Optional[Progress] = progress if callable(progress) else None
        show = (self.progress if progress is None else bool(progress)) and report is None
        result = embed(
            list(sources),
            self.metric,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            progress=show,
            desc=f"embed ({self.metric.name})",
        )
        if report is not None:
            report(len(sources))
        return EmbedBatch(result.embeddings, result.boxes, dict(result.errors))


def model_key(metric: PerFace) -> dict[str, str]:
    """``{"model", "template", "fingerprint", "signature"}`` of a PerFace used on photos.

    ``fingerprint``: a sha256 over the network's parameters and input settings, so a changed
    checkpoint never reuses cached rows; ``signature``: ``signature_of(metric, "detect")``.
    """
    from ..signature import signature_of

    digest = hashlib.sha256()
    digest.update(f"{metric.template}|{metric.input_size}|{metric.spec.input_mean}|{metric.spec.input_std}".encode())
    for name, tensor in sorted(metric.net.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return {
        "model": metric.name,
        "template": metric.template,
        "fingerprint": digest.hexdigest(),
        "signature": str(signature_of(metric, "detect")),
    }
