"""Backbone architectures. This package knows nothing about weights or downloads."""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from .iresnet import iresnet18, iresnet34, iresnet50, iresnet100
from .sface import SFace

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "sface": SFace,
    "iresnet18": iresnet18,
    "iresnet34": iresnet34,
    "iresnet50": iresnet50,
    "iresnet100": iresnet100,
}


def build_backbone(arch: str, **kwargs: Any) -> nn.Module:
    """Build an untrained backbone by architecture name (a key of ``ARCHITECTURES``)."""
    try:
        factory = ARCHITECTURES[arch]
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}; known: {sorted(ARCHITECTURES)}") from None
    return factory(**kwargs)
