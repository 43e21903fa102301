"""Where computation runs: one rule for every ``device="auto"`` in perface."""

from __future__ import annotations

import os
from typing import Optional, Union

import torch

__all__ = ["resolve_device"]


def resolve_device(device: Union[str, torch.device, None] = "auto", local_rank: Optional[int] = None) -> torch.device:
    """``"auto"`` (or ``None``) -> ``cuda:<local rank>`` when CUDA is available, else ``cpu``;
    anything else -> ``torch.device(device)``.

    ``local_rank``: the process's GPU index under ``torchrun`` (default ``$LOCAL_RANK``, else 0).
    Raises ``ValueError`` naming the accepted forms for a malformed device string, and for a CUDA
    device when CUDA is not available.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        if not torch.cuda.is_available():
            return torch.device("cpu")
        rank = int(os.environ.get("LOCAL_RANK", "0")) if local_rank is None else local_rank
        return torch.device(f"cuda:{rank}")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device {device!r} is not a torch device; use auto, cpu, cuda, cuda:1, mps ...") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: CUDA is not available on this machine; use --device cpu (or auto)")
    return resolved
