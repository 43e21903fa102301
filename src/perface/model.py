"""``PerFace``: a differentiable face-similarity metric as an ``nn.Module`` (LPIPS-style)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ._malloc import tune_malloc
from .alignment import ResizeTo, build_aligner
from .archs import build_backbone
from .pretrained import load_pretrained
from .registry import DEFAULT_MODEL, ModelSpec
from .tensor_input import to_unit_range

__all__ = ["PerFace"]


class PerFace(nn.Module):
    """Perceptual face similarity between two batches of face images.

    ``forward(x, y)`` returns the distance ``d = 1 - cos(f(x), f(y))`` per pair, shape (N,),
    in [0, 2]; :meth:`similarity` returns the cosine in [-1, 1]; :meth:`embed` the
    L2-normalized embeddings (N, D).

    Inputs: RGB tensors (N, 3, H, W) or (3, H, W), floats in [0, 1] (or [-1, 1] with
    ``value_range=(-1, 1)``), or uint8 0..255. Any H, W: with ``align="none"`` the input must
    be a face crop aligned to the model's template (``self.template``) and is resized to
    ``self.input_size``. Out-of-range input raises :class:`~perface.InputRangeError` unless
    ``check_range=False``. ``x`` and ``y`` batches broadcast when one has N = 1.

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
            loss mode for face-swap training. See ``docs/alignment.md``.
        trainable: if False (default) the network is frozen and stays in eval mode even inside
            a parent module switched to ``train()``; True for fine-tuning.
    """

    def __init__(
        self,
        model: Union[str, Path] = DEFAULT_MODEL,
        *,
        value_range: Tuple[float, float] = (0.0, 1.0),
        check_range: bool = True,
        align: str = "none",
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
        self.aligner = build_aligner(align, template=spec.template, size=spec.input_size)
        self._resize = ResizeTo(spec.input_size)
        self.align = align
        self.register_buffer("_mean", torch.tensor(spec.input_mean), persistent=False)
        self.register_buffer("_std", torch.tensor(spec.input_std), persistent=False)
        self.net.requires_grad_(trainable)
        self._modified_before_move = False
        self._loaded_versions = self._weight_versions()
        self.eval()
        tune_malloc()

    def _weight_versions(self) -> Tuple[int, ...]:
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
    def align_modes(self) -> Tuple[str, str]:
        """The alignment mode of ``x`` and of ``y`` in ``forward(x, y)``."""
        return (self.align, self.align)

    @property
    def signature(self) -> str:
        """The metric signature of ``metric(x, y)``: report it beside every number (see
        :mod:`perface.signature`), e.g.
        ``perface:0.2.0|model:sface@0f0fbaa2|det:none|align:none|tpl:arcface|size:112|prec:fp32``."""
        from .signature import signature_of

        return str(signature_of(self))

    @classmethod
    def from_pretrained(cls, model: Union[str, Path], **kwargs) -> "PerFace":
        """Same as ``PerFace(model, **kwargs)``: a registry name, Hub repo id or local directory."""
        return cls(model, **kwargs)

    def save_pretrained(self, directory: Union[str, Path], **overrides) -> Path:
        """Write ``model.safetensors``, ``config.json`` and a model card ``README.md`` to ``directory``.

        ``overrides`` replace checkpoint fields in the saved config/card (``name``, ``perceptual``,
        ``trained_on``, ``scores``, ``description``, ``license``, ...). Reload with
        ``PerFace.from_pretrained(directory)``. See :func:`perface.pretrained.save_pretrained`.
        """
        from .pretrained import save_pretrained

        return save_pretrained(self, directory, **overrides)

    def push_to_hub(self, repo_id: str, *, private: Optional[bool] = None, token: Optional[str] = None,
                    commit_message: Optional[str] = None, **overrides):
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

    def train(self, mode: bool = True) -> "PerFace":
        """Switch the network to training mode only if ``trainable``; a frozen metric stays in eval."""
        super().train(mode and self.trainable)
        return self

    def preprocess(self, x: torch.Tensor, aligned: bool = False) -> torch.Tensor:
        """Input contract -> aligned, resized, normalized network input (N, 3, S, S).

        ``aligned=True``: ``x`` is already aligned to ``self.template`` (e.g. crops from
        :func:`perface.align_faces`), so the ``align`` mode is skipped and ``x`` is only resized.
        """
        x = to_unit_range(x, self.value_range, self.check_range)
        x = x.to(self._mean.device, self._mean.dtype)
        x = self._resize(x) if aligned else self.aligner(x)
        return (x - self._mean) / self._std

    def embed(self, x: torch.Tensor, aligned: bool = False) -> torch.Tensor:
        """L2-normalized embeddings (N, D) of images ``x`` (see the class docstring for inputs;
        ``aligned`` as in :meth:`preprocess`)."""
        x = self.preprocess(x, aligned)
        # A backbone may ask for CPU batches in chunks (``cpu_chunk``; same results and gradients):
        # not in training mode, where BatchNorm's batch statistics depend on the whole batch.
        chunk = getattr(self.net, "cpu_chunk", None)
        if chunk is None or self.net.training or x.device.type != "cpu" or x.shape[0] <= chunk:
            return F.normalize(self.net(x), dim=1)
        return F.normalize(torch.cat([self.net(part) for part in x.split(chunk)]), dim=1)

    def similarity(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cosine similarity per pair, shape (N,), in [-1, 1]; higher looks more alike."""
        return (self.embed(x) * self.embed(y)).sum(dim=1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Distance ``1 - cos`` per pair, shape (N,), in [0, 2]; 0 for identical faces."""
        return 1.0 - self.similarity(x, y)

    def extra_repr(self) -> str:
        return f"model={self.name!r}, template={self.template!r}, align={self.align!r}, trainable={self.trainable}"
