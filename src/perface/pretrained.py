"""Load and save checkpoints: a registry name, a Hub repo id or a local directory/file.

A saved checkpoint is a directory with ``model.safetensors``, ``config.json`` (the
:class:`~perface.registry.ModelSpec` fields) and a model card ``README.md``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Tuple, Union

import torch
from safetensors.torch import load_file

from .hub import resolve_weights
from .registry import MODELS, ModelSpec, get_spec

__all__ = ["load_pretrained"]

StateDict = Dict[str, torch.Tensor]


def _load_dir(path: Path) -> Tuple[ModelSpec, StateDict]:
    config_path = path / "config.json" if path.is_dir() else path.with_name("config.json")
    weights_path = path / "model.safetensors" if path.is_dir() else path
    for p in (config_path, weights_path):
        if not p.is_file():
            raise FileNotFoundError(
                f"checkpoint {path}: {p.name} not found; a perface checkpoint directory holds "
                "model.safetensors and config.json (written by PerFace.save_pretrained)."
            )
    spec = ModelSpec.from_config(json.loads(config_path.read_text()))
    return spec, load_file(str(weights_path))


def load_pretrained(model: Union[str, Path]) -> Tuple[ModelSpec, StateDict]:
    """Return ``(spec, state_dict)`` for a registry name or a local checkpoint directory."""
    if isinstance(model, Path) or (model not in MODELS and Path(model).exists()):
        return _load_dir(Path(model))
    spec = get_spec(str(model))
    assert spec.weights is not None
    path = resolve_weights(spec.weights, spec.name)
    return spec, load_file(str(path))
