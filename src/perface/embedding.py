"""THE photo path: images in, one :class:`EmbedResult` out. Every entry point that embeds photos
uses :func:`embed` (``perface.similarity``, ``perface.embed_images``, ``perface matrix``, the
CLI, ranking pools, evaluation and training's photo preparation).

Per input, in DataLoader workers (or in-process)::

    Photo (decoded only as finely as needed) -> find_faces -> choose_faces -> crop_faces
                                                              (or, for pre-aligned crops: a fixed warp)

then the crops of a batch go through ``PerFace.embed`` together. An input that fails for one of
the reasons in :data:`FAILURES` becomes a NaN row with a reason; anything else is a bug and
propagates.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Union, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .errors import PerFaceError
from .imageio import batch_items, describe
from .registry import DEFAULT_MODEL

if TYPE_CHECKING:
    from .model import PerFace
    from .signature import Signature

__all__ = ["FAILURES", "EmbedResult", "embed", "align_crops", "get_metric"]

# What counts as one input's failure (a NaN row + a reason), everywhere: perface's own errors
# (unreadable file, no face, range), bad values or types of one input, and file-system errors.
FAILURES: tuple[type[Exception], ...] = (PerFaceError, ValueError, TypeError, OSError)

FaceIndex = Union[int, str, None]


@dataclass
class EmbedResult:
    """Embeddings of the faces in many images. Row ``r`` comes from input ``source[r]``; one row
    per input unless ``face_index="all"``.

    Attributes:
        embeddings: (R, D) float32, L2-normalized; NaN rows where an input failed.
        boxes: (R, 4) float32 face boxes ``x0, y0, x1, y1`` in full-resolution photo pixels
            (pixel-centre convention); NaN for failed inputs and pre-aligned crops.
        landmarks: (R, 5, 2) float32 ``(x, y)`` of eyes, nose and mouth corners, like ``boxes``.
        detection_scores: (R,) float32 detector confidence in [0, 1]; NaN like ``boxes``.
        source: (R,) int64 index of the input each row came from.
        ok: (R,) bool, False for failed rows.
        errors: input index -> reason (exception type and message naming the input).
        model: name of the checkpoint that made the embeddings.
        signature: the metric signature of these embeddings (see :mod:`perface.signature`).
    """

    embeddings: torch.Tensor
    boxes: torch.Tensor
    landmarks: torch.Tensor
    detection_scores: torch.Tensor
    source: torch.Tensor
    ok: torch.Tensor
    errors: dict[int, str] = field(default_factory=dict)
    model: str = ""
    signature: str = ""

    def __len__(self) -> int:
        return self.embeddings.shape[0]


@dataclass
class _Item:
    """What a worker returns for one input: crops and detections, or the reason it failed."""

    index: int
    crops: Optional[torch.Tensor] = None  # (K, 3, S, S) float32
    boxes: Optional[torch.Tensor] = None  # (K, 4)
    landmarks: Optional[torch.Tensor] = None  # (K, 5, 2)
    scores: Optional[torch.Tensor] = None  # (K,)
    reason: Optional[str] = None
    exception: Optional[BaseException] = None


def _only_the_first(face_index: FaceIndex) -> bool:
    """Whether ``face_index`` asks for the most prominent face only (None or 0)."""
    return face_index is None or (isinstance(face_index, (int, np.integer)) and face_index == 0)


def _reason(exc: BaseException, src: Any, index: int) -> str:
    """``Type: message`` with the input named by its position when it has no path."""
    message, plain, indexed = str(exc), describe(src), describe(src, index)
    text = indexed + message[len(plain) :] if message.startswith(plain) else f"{indexed}: {message}"
    return f"{type(exc).__name__}: {text}"


class _Faces(Dataset):
    """Input ``i`` -> :class:`_Item` (its aligned crops, or why it failed)."""

    def __init__(
        self,
        sources: Sequence[Any],
        align: str,
        template: str,
        size: int,
        face_index: Sequence[FaceIndex],
        argument: Sequence[str],
        many: bool,
        device: Union[str, torch.device, None],
    ) -> None:
        self.sources, self.align, self.template, self.size = sources, align, template, size
        self.face_index, self.argument, self.many, self.device = face_index, argument, many, device

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> _Item:
        src = self.sources[i]
        try:
            with torch.no_grad():
                return self._crops(i, src) if self.align == "detect" else self._converted(i, src)
        except FAILURES as exc:
            return _Item(i, reason=_reason(exc, src, i), exception=exc)

    def _crops(self, i: int, src: Any) -> _Item:
        from .alignment import choose_faces, crop_faces
        from .detection import find_faces, get_detector
        from .imageio import Photo

        photo = Photo(src)
        name = describe(src, i if self.many else None)
        faces = find_faces(
            photo,
            get_detector(self.device) if self.device is not None else None,
            prominent=_only_the_first(self.face_index[i]),
        )
        chosen = choose_faces(faces, self.face_index[i], name, self.argument[i])
        crops = crop_faces(photo, chosen, self.template, self.size).float()
        return _Item(
            i,
            crops.cpu(),
            torch.from_numpy(np.stack([f.box for f in chosen])).float(),
            torch.from_numpy(np.stack([f.landmarks for f in chosen])).float(),
            torch.tensor([f.score for f in chosen], dtype=torch.float32),
        )

    def _converted(self, i: int, src: Any) -> _Item:
        from .alignment import build_aligner
        from .imageio import load_image

        image = load_image(src).float()
        crop = build_aligner(self.align, self.template, self.size)(image.unsqueeze(0))
        nan = float("nan")
        return _Item(i, crop.cpu(), torch.full((1, 4), nan), torch.full((1, 5, 2), nan), torch.full((1,), nan))


@functools.lru_cache(maxsize=4)
def _cached_metric(name: str) -> PerFace:
    from .model import PerFace

    return PerFace(name)


def get_metric(model: Any) -> PerFace:
    """``model`` if it is a :class:`~perface.PerFace`, else the (cached) ``PerFace(model)``."""
    from .model import PerFace

    return model if isinstance(model, PerFace) else _cached_metric(str(model))


def _face_indices(
    face_index: Union[FaceIndex, Sequence[FaceIndex]], n: int, argument: str
) -> tuple[list[FaceIndex], list[str]]:
    """One face index per input, and how messages name the option that sets it."""
    if isinstance(face_index, (list, tuple)):
        if len(face_index) != n:
            raise ValueError(
                f"{argument} has {len(face_index)} entries for {n} images; pass one per image, or one value for all"
            )
        return list(face_index), [f"{argument}[{i}]" for i in range(n)]
    # not a list or tuple: one value for every input (a str such as "all" is a Sequence too)
    return [cast(FaceIndex, face_index)] * n, [argument] * n


def _batches(
    sources: Any,
    align: str,
    template: str,
    size: int,
    face_index: Union[FaceIndex, Sequence[FaceIndex]],
    argument: str,
    batch_size: int,
    num_workers: int,
    device: Any,
    progress: bool,
    desc: str,
) -> Iterator[list[_Item]]:
    """Batches of :class:`_Item` in input order, from DataLoader workers (for more than one
    batch), from one thread per CPU thread of torch (photos on the CPU, see :func:`_threaded`),
    or in-process on ``device``; with a tqdm bar. ``ValueError`` for a malformed ``align`` or
    ``face_index`` (before any work)."""
    from tqdm.auto import tqdm

    from .alignment import align_modes

    if align not in align_modes():
        raise ValueError(f"unknown align mode {align!r}; use one of {', '.join(map(repr, align_modes()))}")
    items = batch_items(sources)
    many = (
        isinstance(sources, (list, tuple))
        or len(items) != 1
        or (isinstance(sources, torch.Tensor) and sources.dim() == 4)
    )
    indices, arguments = _face_indices(face_index, len(items), argument)
    workers = num_workers if len(items) > batch_size else 0
    dataset = _Faces(items, align, template, size, indices, arguments, many, "cpu" if workers > 0 else device)
    threads = min(torch.get_num_threads(), len(items)) if workers == 0 and align == "detect" and _on_cpu(device) else 1
    with tqdm(total=len(items), unit="img", desc=desc, disable=not progress) as bar:
        if threads > 1:
            batches: Iterator[list[_Item]] = _threaded(dataset, batch_size, threads)
        else:
            batches = iter(DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=list))
        for batch in batches:
            yield batch
            bar.update(len(batch))


def _on_cpu(device: Any) -> bool:
    return device is None or torch.device(device).type == "cpu"


def _one_torch_thread() -> None:
    torch.set_num_threads(1)


def _threaded(dataset: _Faces, batch_size: int, threads: int) -> Iterator[list[_Item]]:
    """Batches of ``dataset`` in order, its photos read, detected and aligned ``threads`` at a
    time, each thread running torch on one thread of its own.

    Why (2-core EPYC, 2 torch threads, 8 shared photos): RetinaFace and the warp are many small
    operations that two OpenMP threads share badly (640 x 512 detection: 19.2 ms on 1 thread,
    11.5 ms on 2), and Pillow decodes on one thread; one photo per core keeps both cores busy,
    and decoding overlaps torch's work (both release the GIL): 22.2 -> 18.5 ms per face end to
    end. The caller's thread count is the budget; it is set again at the end
    (``torch.set_num_threads`` in a worker also changes the count that threads started later
    begin with). An exception or Ctrl-C cancels the photos not yet started, so an interrupt
    waits for at most ``threads`` photos, not the rest of the batch.
    """
    budget = torch.get_num_threads()
    pool = ThreadPoolExecutor(threads, thread_name_prefix="perface-photo", initializer=_one_torch_thread)
    try:
        for start in range(0, len(dataset), batch_size):
            yield list(pool.map(dataset.__getitem__, range(start, min(start + batch_size, len(dataset)))))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(budget)


def align_crops(
    sources: Any,
    template: str = "arcface",
    size: int = 112,
    *,
    face_index: Union[FaceIndex, Sequence[FaceIndex]] = None,
    batch_size: int = 32,
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "aligning photos",
) -> tuple[list[Optional[torch.Tensor]], dict[int, str]]:
    """The first half of :func:`embed` without a model: each input's faces aligned to
    ``template`` at ``size``, as (K, 3, size, size) float32 in [0, 1] (``None`` where the input
    failed), and ``errors``: input index -> reason. Options as in :func:`embed` (detection on
    the CPU)."""
    crops: list[Optional[torch.Tensor]] = []
    errors: dict[int, str] = {}
    for batch in _batches(
        sources,
        "detect",
        template,
        size,
        face_index,
        "face_index",
        batch_size,
        num_workers,
        torch.device("cpu"),
        progress,
        desc,
    ):
        for item in batch:
            crops.append(item.crops)
            if item.reason is not None:
                errors[item.index] = item.reason
    return crops, errors


def embed(
    sources: Any,
    model: Any = DEFAULT_MODEL,
    *,
    align: str = "detect",
    face_index: Union[FaceIndex, Sequence[FaceIndex]] = None,
    batch_size: int = 32,
    num_workers: int = 0,
    progress: bool = True,
    device: Union[str, torch.device, None] = None,
    on_error: str = "record",
    argument: str = "face_index",
    desc: Optional[str] = None,
) -> EmbedResult:
    """Embed the faces in many images: the one photo pipeline of perface.

    Args:
        sources: a list of images (paths, ``PIL.Image``, numpy HWC, tensors (3, H, W)), a 4-D
            batch (N, 3, H, W), or one image.
        model: a :class:`~perface.PerFace` or a checkpoint name.
        align: ``"detect"`` (photos: RetinaFace landmarks, warp to the model's template), or
            the format of pre-aligned crops (``"arcface"``, ``"ffhq"``, ``"simceleba"``: a fixed
            warp; ``"none"``: already in the model's template, only resized). No detection for
            crops: their ``boxes``, ``landmarks`` and ``detection_scores`` are NaN.
        face_index: which face of each photo: ``None`` (the most prominent), an int rank
            (0 = most prominent), ``"all"`` (one row per face), or a list with one such value
            per input.
        batch_size: inputs per DataLoader batch (their faces are embedded together).
        num_workers: DataLoader worker processes for decoding, detection and alignment (on the
            CPU there; in-process they run on ``device``). Used only for more than one batch.
        progress: show a tqdm progress bar.
        device: where the backbone and in-process detection run (``"auto"``: see
            :func:`perface.devices.resolve_device`); the model is moved there. Default: the
            model's device.
        on_error: ``"record"`` (a failed input is a NaN row and a reason in ``errors``) or
            ``"raise"`` (raise the first failure's exception).
        argument: the name of the face-choosing option in warnings and errors (wrappers pass
            their own, e.g. ``"face_index_b"``).
        desc: the progress bar's label.

    Returns:
        An :class:`EmbedResult`. No gradients.

    Raises:
        ValueError: ``align``, ``on_error`` or ``face_index`` is malformed (before any work).
        The failure's own exception (one of :data:`FAILURES`) with ``on_error="raise"``.
    """
    from .signature import signature_of

    if on_error not in ("record", "raise"):
        raise ValueError(f"on_error must be 'record' or 'raise', got {on_error!r}")
    metric = get_metric(model)
    if device is not None:
        from .devices import resolve_device

        metric.to(resolve_device(device))
    model_device = next(metric.parameters()).device
    parts: list[_Item] = []
    errors: dict[int, str] = {}
    embedded: list[torch.Tensor] = []
    with torch.no_grad():
        for batch in _batches(
            sources,
            align,
            metric.template,
            metric.input_size,
            face_index,
            argument,
            batch_size,
            num_workers,
            model_device,
            progress,
            desc or f"embed ({metric.name})",
        ):
            good = [item.crops for item in batch if item.crops is not None]
            for item in batch:
                if item.crops is None:
                    if on_error == "raise":
                        assert item.exception is not None
                        raise item.exception
                    errors[item.index] = item.reason or "failed"
            if good:
                embedded.append(_embed_crops(metric, torch.cat(good).to(model_device)).float().cpu())
            parts.extend(batch)
    return _assemble(
        parts,
        torch.cat(embedded) if embedded else torch.empty(0, metric.embedding_size),
        errors,
        metric,
        signature_of(metric, align),
    )


# metric.net -> (its weights' identity and versions, its frozen CPU copy or None)
_FROZEN: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, Optional[nn.Module]]] = weakref.WeakKeyDictionary()


def _frozen_net(metric: PerFace) -> Optional[nn.Module]:
    """The metric's network as :func:`perface._inference.frozen_for_cpu` makes it (cached, remade
    when its weights change), or None where it does not apply: not on the CPU, not float32, in
    training mode, or not traceable."""
    from ._inference import frozen_for_cpu

    net = metric.net
    tensors = list(net.state_dict().values())
    if (
        net.training
        or any(t.device.type != "cpu" for t in tensors)
        or any(t.is_floating_point() and t.dtype != torch.float32 for t in tensors)
    ):
        return None
    stamp = tuple((t.data_ptr(), t._version) for t in tensors)
    cached = _FROZEN.get(net)
    if cached is None or cached[0] != stamp:
        try:
            frozen: Optional[nn.Module] = frozen_for_cpu(net)
        except Exception:  # a network torch.fx cannot trace keeps its own forward
            frozen = None
        cached = _FROZEN[net] = (stamp, frozen)
    return cached[1]


def _embed_crops(metric: PerFace, crops: torch.Tensor) -> torch.Tensor:
    """(K, 3, S, S) float32 crops in [0, 1], aligned to the metric's template -> (K, D)
    L2-normalized embeddings: ``metric.embed``, through the frozen CPU copy of its network where
    there is one (SFace, 8 faces, 1 thread: 15.7 -> 7.0 ms per face), in batches of the model
    spec's ``cpu_chunk``."""
    frozen = _frozen_net(metric)
    if frozen is None:
        return metric.embed(crops, align="none")
    x = metric.preprocess(crops, align="none").contiguous(memory_format=torch.channels_last)
    chunk = metric.spec.cpu_chunk or x.shape[0]
    return F.normalize(torch.cat([frozen(part) for part in x.split(chunk)]), dim=1)


def _assemble(
    parts: list[_Item], embedded: torch.Tensor, errors: dict[int, str], metric: PerFace, signature: Signature
) -> EmbedResult:
    """Rows in input order (the DataLoader keeps it): each input's faces, or one NaN row."""
    nan = float("nan")
    rows, boxes, points, scores, source = [], [], [], [], []
    start = 0
    for item in parts:
        if item.crops is None:
            k = 1
            rows.append(torch.full((1, metric.embedding_size), nan))
            boxes.append(torch.full((1, 4), nan))
            points.append(torch.full((1, 5, 2), nan))
            scores.append(torch.full((1,), nan))
        else:
            assert item.boxes is not None and item.landmarks is not None and item.scores is not None
            k = item.crops.shape[0]
            rows.append(embedded[start : start + k])
            boxes.append(item.boxes)
            points.append(item.landmarks)
            scores.append(item.scores)
            start += k
        source.extend([item.index] * k)
    if not parts:
        return EmbedResult(
            torch.empty(0, metric.embedding_size),
            torch.empty(0, 4),
            torch.empty(0, 5, 2),
            torch.empty(0),
            torch.empty(0, dtype=torch.long),
            torch.zeros(0, dtype=torch.bool),
            {},
            metric.name,
            str(signature),
        )
    embeddings = torch.cat(rows)
    return EmbedResult(
        embeddings,
        torch.cat(boxes),
        torch.cat(points),
        torch.cat(scores),
        torch.tensor(source, dtype=torch.long),
        ~torch.isnan(embeddings).any(dim=1),
        dict(sorted(errors.items())),
        metric.name,
        str(signature),
    )
