"""``PerFace``: a differentiable face-similarity metric as an ``nn.Module`` (LPIPS-style)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from ._malloc import tune_malloc
from .alignment import align_modes, build_aligner
from .archs import build_backbone
from .pretrained import PublishedCheckpoint, load_pretrained
from .registry import DEFAULT_MODEL, ModelSpec
from .tensor_input import to_unit_range

__all__ = ["PerFace"]

AlignMode = Union[str, tuple[str, str]]


def _align_pair(align: Union[str, Sequence[str]]) -> tuple[str, str]:
    """One mode for both inputs, or ``(mode_x, mode_y)``; ``ValueError`` names the valid modes."""
    modes = (align, align) if isinstance(align, str) else tuple(align)
    if len(modes) != 2 or not all(isinstance(m, str) for m in modes):
        raise ValueError(f"align must be one mode or a pair (mode_x, mode_y), got {align!r}")
    for mode in modes:
        if mode not in align_modes():
            raise ValueError(f"unknown align mode {mode!r}; use one of {', '.join(map(repr, align_modes()))}")
    return modes[0], modes[1]


def _batch_size(x: torch.Tensor, name: str) -> int:
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{name}: expected a torch.Tensor, got {type(x).__name__}; for paths, PIL images or numpy "
            "arrays use perface.similarity"
        )
    return x.shape[0] if x.dim() == 4 else 1


class PerFace(nn.Module):
    """Perceptual face similarity between two batches of face images.

    ``forward(x, y)`` returns the distance ``d = 1 - cos(f(x), f(y))`` per pair, shape (N,),
    in [0, 2]; :meth:`similarity` returns the cosine in [-1, 1]; :meth:`embed` the
    L2-normalized embeddings (N, D).

    Inputs: RGB tensors (N, 3, H, W) or (3, H, W), floats in [0, 1] (or [-1, 1] with
    ``value_range=(-1, 1)``), or uint8 0..255. Any H, W: with ``align="none"`` the input must
    be a face crop aligned to the model's template (``self.template``) and is resized to
    ``self.input_size``. Out-of-range input raises :class:`~perface.InputRangeError` unless
    ``check_range=False``. ``x`` and ``y`` batches broadcast when one has N = 1; other
    different sizes raise ``ValueError`` before any work; an empty batch gives shape (0,).

    Args:
        model: registry name (see ``perface.list_models()``), Hub repo id or local checkpoint
            directory. The default is the embedded identity baseline ``"sface"``.
        value_range: range of float inputs, ``(0, 1)`` or ``(-1, 1)``.
        check_range: check float inputs against ``value_range``.
        align: how inputs reach the template. ``"none"``: already aligned to ``self.template``
            (only resized). ``"detect"``: photos; RetinaFace finds the landmarks (no gradient)
            and a differentiable similarity warp aligns the most prominent face, so gradients
            reach the original pixels (raises :class:`~perface.NoFaceError` for a faceless
            image). ``"ffhq"``, ``"arcface"``, ``"simceleba"``: square crops already aligned in
            that format (FFHQ/CelebA-HQ 256/512/1024, ArcFace 112, SimCelebA 224, any size)
            are converted to the model's template by a fixed warp, no detection: the per-step
            loss mode for face-swap training. A pair ``(mode_x, mode_y)`` aligns the two inputs
            of ``forward(x, y)`` differently, e.g. ``("ffhq", "arcface")`` for a generator's
            FFHQ crop against a stored ArcFace crop. See ``docs/alignment.md``.
        trainable: if False (default) the network is frozen and stays in eval mode even inside
            a parent module switched to ``train()``; True for fine-tuning.
    """

    _mean: torch.Tensor  # buffers (register_buffer in __init__)
    _std: torch.Tensor

    def __init__(
        self,
        model: Union[str, Path] = DEFAULT_MODEL,
        *,
        value_range: tuple[float, float] = (0.0, 1.0),
        check_range: bool = True,
        align: AlignMode = "none",
        trainable: bool = False,
    ) -> None:
        super().__init__()
        spec, state_dict, sha256 = load_pretrained(model)
        self.spec: ModelSpec = spec
        self.weights_sha256: str = sha256
        self.value_range = value_range
        self.check_range = check_range
        self.trainable = trainable
        self.net = build_backbone(spec.arch, **spec.arch_kwargs)
        self.net.load_state_dict(state_dict, strict=True)
        modes = _align_pair(align)
        self._align_modes = modes
        self.align: AlignMode = modes[0] if modes[0] == modes[1] else modes
        # one aligner per mode in use (more are added when embed() is called with another mode)
        self.aligners = nn.ModuleDict(
            {m: build_aligner(m, spec.template, spec.input_size) for m in dict.fromkeys(modes + ("none",))}
        )
        self.register_buffer("_mean", torch.tensor(spec.input_mean), persistent=False)
        self.register_buffer("_std", torch.tensor(spec.input_std), persistent=False)
        self.net.requires_grad_(trainable)
        self._modified_before_move = False
        self._loaded_versions = self._weight_versions()
        self.eval()
        tune_malloc()

    def _weight_versions(self) -> tuple[int, ...]:
        return tuple(t._version for t in self.net.state_dict().values())

    @property
    def weights_modified(self) -> bool:
        """True if the network's parameters or buffers changed in place since loading (training).

        Moves and casts (``.to(device)``, ``.half()``) are not changes: the signature's ``prec``
        field reports the dtype."""
        return self._modified_before_move or self._weight_versions() != self._loaded_versions

    def _apply(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> PerFace:
        # A move or cast makes new tensors with fresh version counters: carry over what changed so far.
        loaded = hasattr(self, "_loaded_versions")
        modified = loaded and self.weights_modified
        out = super()._apply(fn, *args, **kwargs)
        if loaded:
            self._modified_before_move = modified
            self._loaded_versions = self._weight_versions()
        return out

    @property
    def align_modes(self) -> tuple[str, str]:
        """The alignment mode of ``x`` and of ``y`` in ``forward(x, y)``."""
        return self._align_modes

    @property
    def aligner(self) -> nn.Module:
        """The module aligning ``x`` (see :func:`perface.alignment.build_aligner`)."""
        return self.aligners[self._align_modes[0]]

    def _aligner(self, mode: str) -> nn.Module:
        if mode not in self.aligners:
            self.aligners[_align_pair(mode)[0]] = build_aligner(mode, self.template, self.input_size)
        return self.aligners[mode]

    @property
    def signature(self) -> str:
        """The metric signature of ``metric(x, y)``: report it beside every number (see
        :mod:`perface.signature`), e.g.
        ``perface:0.2.0|model:sface@0f0fbaa2|det:none|align:none|tpl:arcface|size:112|prec:fp32``."""
        from .signature import signature_of

        return str(signature_of(self))

    @classmethod
    def from_pretrained(cls, model: Union[str, Path], **kwargs: Any) -> PerFace:
        """Same as ``PerFace(model, **kwargs)``: a registry name, Hub repo id or local directory."""
        return cls(model, **kwargs)

    def save_pretrained(self, directory: Union[str, Path], **overrides: Any) -> Path:
        """Write ``model.safetensors``, ``config.json`` and a model card ``README.md`` to ``directory``.

        ``overrides`` replace checkpoint fields in the saved config/card (``name``, ``perceptual``,
        ``trained_on``, ``scores``, ``description``, ``license``, ...). Reload with
        ``PerFace.from_pretrained(directory)``. See :func:`perface.pretrained.save_pretrained`.
        """
        from .pretrained import save_pretrained

        return save_pretrained(self, directory, **overrides)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: Optional[bool] = None,
        token: Optional[str] = None,
        commit_message: Optional[str] = None,
        **overrides: Any,
    ) -> PublishedCheckpoint:
        """Save and upload this checkpoint to the Hugging Face Hub repo ``repo_id`` (created if needed).

        Returns a :class:`perface.pretrained.PublishedCheckpoint` with the commit and sha256 to pin
        in a registry entry. See :func:`perface.pretrained.push_to_hub`.
        """
        from .pretrained import push_to_hub

        return push_to_hub(self, repo_id, private=private, token=token, commit_message=commit_message, **overrides)

    @property
    def name(self) -> str:
        """Name of the checkpoint that makes this metric's numbers (report it with results)."""
        return self.spec.name

    @property
    def template(self) -> str:
        """Landmark template the network was trained on (see ``perface.templates``)."""
        return self.spec.template

    @property
    def input_size(self) -> int:
        """Side of the square crop the network sees."""
        return self.spec.input_size

    @property
    def embedding_size(self) -> int:
        """Dimension D of :meth:`embed`'s output."""
        return self.spec.embedding_size

    def train(self, mode: bool = True) -> PerFace:
        """Switch the network to training mode only if ``trainable``; a frozen metric stays in eval."""
        super().train(mode and self.trainable)
        return self

    def preprocess(self, x: torch.Tensor, aligned: bool = False, align: Optional[str] = None) -> torch.Tensor:
        """Input contract -> aligned, resized, normalized network input (N, 3, S, S).

        ``align``: the alignment mode for this call (default: the mode of ``x``, i.e.
        ``self.align_modes[0]``). ``aligned=True`` is ``align="none"``: ``x`` is already aligned
        to ``self.template`` (e.g. crops from :func:`perface.align_faces`) and only resized.
        """
        mode = "none" if aligned else (align if align is not None else self._align_modes[0])
        x = to_unit_range(x, self.value_range, self.check_range)
        x = x.to(self._mean.device, self._mean.dtype)
        return (self._aligner(mode)(x) - self._mean) / self._std

    def embed(self, x: torch.Tensor, aligned: bool = False, align: Optional[str] = None) -> torch.Tensor:
        """L2-normalized embeddings (N, D) of images ``x`` (see the class docstring for inputs;
        ``aligned`` and ``align`` as in :meth:`preprocess`). An empty batch gives (0, D)."""
        if _batch_size(x, "x") == 0:
            to_unit_range(x, self.value_range, self.check_range)  # still check shape and dtype
            return torch.zeros((0, self.embedding_size), device=x.device)
        x = self.preprocess(x, aligned, align)
        # The spec may ask for CPU batches in chunks (``cpu_chunk``; same results and gradients):
        # not in training mode, where BatchNorm's batch statistics depend on the whole batch.
        chunk = self.spec.cpu_chunk
        if chunk is None or self.net.training or x.device.type != "cpu" or x.shape[0] <= chunk:
            return F.normalize(self.net(x), dim=1)
        return F.normalize(torch.cat([self.net(part) for part in x.split(chunk)]), dim=1)

    def similarity(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cosine similarity per pair, shape (N,), in [-1, 1]; higher looks more alike.

        Raises ``ValueError`` before any work when the batch sizes differ and neither is 1."""
        nx, ny = _batch_size(x, "x"), _batch_size(y, "y")
        if nx != ny and 1 not in (nx, ny):
            raise ValueError(
                f"x has {nx} images and y has {ny}: pass batches of equal size, or one image on "
                "either side (it is compared with every image of the other)"
            )
        mode_x, mode_y = self._align_modes
        return (self.embed(x, align=mode_x) * self.embed(y, align=mode_y)).sum(dim=1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Distance ``1 - cos`` per pair, shape (N,), in [0, 2]; 0 for identical faces."""
        return 1.0 - self.similarity(x, y)

    def extra_repr(self) -> str:
        return f"model={self.name!r}, template={self.template!r}, align={self.align!r}, trainable={self.trainable}"
