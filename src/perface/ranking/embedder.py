"""What the pool needs from a photo pipeline: the embedder protocol and its adapter to PerFace.

The pool code (:mod:`perface.ranking.pool`) is written against :data:`Embedder`, a callable
``paths -> EmbedBatch``; it never loads, detects or aligns photos itself. :class:`PhotoEmbedder`
is the adapter that embeds photos with a :class:`perface.PerFace` (to be backed by the package's
one photo pipeline, :mod:`perface.embedding`, once that lands).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Protocol, Sequence, Tuple, Union

import torch
from torch.utils.data import DataLoader, Dataset

__all__ = ["EmbedBatch", "Embedder", "Progress", "PhotoEmbedder", "face_crop", "model_key"]

Progress = Callable[[int], None]


@dataclass
class EmbedBatch:
    """What an embedder returns for M files: ``embeddings`` (M, D) float32, L2-normalized, NaN
    rows where a file failed; ``boxes`` (M, 4) float32 face boxes x1, y1, x2, y2 in photo pixels
    (NaN when unknown); ``errors``: row -> reason (one line naming the file and the cause)."""

    embeddings: torch.Tensor
    boxes: torch.Tensor
    errors: Dict[int, str] = field(default_factory=dict)


class Embedder(Protocol):
    """The embedder protocol: ``embedder(paths) -> EmbedBatch``, with a ``key`` attribute
    ``{"model", "template", "fingerprint", "signature"}`` naming what makes the rows. An embedder
    may also accept a keyword ``progress``: a callable told how many files it has finished, so
    that the pool's one progress bar moves during a call."""

    key: Dict[str, str]

    def __call__(self, paths: List[str], /) -> EmbedBatch: ...


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
    batches. Failures become NaN rows with a reason.

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

    def __init__(self, model="sface", *, batch_size: int = 32, num_workers: int = 0, progress: bool = True,
                 device: Union[str, torch.device, None] = None) -> None:
        from ..devices import resolve_device
        from ..model import PerFace

        self.metric = model if isinstance(model, PerFace) else PerFace(model)
        if device is not None:
            self.metric.to(resolve_device(device))
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.progress = progress
        self.key = model_key(self.metric)

    def __call__(self, sources: Sequence, progress: Union[bool, Progress, None] = None) -> EmbedBatch:
        """Embed ``sources`` (paths or anything :func:`perface.load_image` reads).

        ``progress``: True/False overrides the bar setting for this call; a callable is told
        the number of files finished after each batch instead of drawing a bar.
        """
        from tqdm.auto import tqdm

        metric = self.metric
        device = next(metric.parameters()).device
        n = len(sources)
        emb = torch.full((n, metric.embedding_size), float("nan"))
        boxes = torch.full((n, 4), float("nan"))
        errors: Dict[int, str] = {}
        report: Optional[Progress] = progress if callable(progress) else None
        show = (self.progress if progress is None else bool(progress)) and report is None
        # one batch or less: worker start-up would cost more than it could overlap
        workers = self.num_workers if n > self.batch_size else 0
        loader = DataLoader(_Faces(list(sources), metric.template, metric.input_size), batch_size=self.batch_size,
                            num_workers=workers, collate_fn=list)
        with torch.no_grad(), tqdm(total=n, unit="img", desc=f"embed ({metric.name})", disable=not show) as bar:
            for batch in loader:
                good = [(i, crop, box) for i, crop, box, _ in batch if crop is not None]
                errors.update((i, reason) for i, crop, _, reason in batch if crop is None)
                if good:
                    rows = torch.tensor([i for i, _, _ in good])
                    emb[rows] = metric.embed(torch.stack([c for _, c, _ in good]).to(device), aligned=True).float().cpu()
                    boxes[rows] = torch.stack([b for _, _, b in good])
                bar.update(len(batch))
                if report is not None:
                    report(len(batch))
        return EmbedBatch(emb, boxes, errors)


def model_key(metric) -> Dict[str, str]:
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
    return {"model": metric.name, "template": metric.template, "fingerprint": digest.hexdigest(),
            "signature": str(signature_of(metric, "detect"))}
