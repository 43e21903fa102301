"""The PerFace training loss on L2-normalized embeddings."""

from __future__ import annotations

import torch

__all__ = ["triplet_margin_cosine_loss"]


def triplet_margin_cosine_loss(
    ref: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, margin: float = 0.1
) -> torch.Tensor:
    """Mean of ``max(0, cos(ref, neg) - cos(ref, pos) + margin)`` over the batch (a scalar).

    ``ref``, ``pos``, ``neg``: (N, D) L2-normalized embeddings of the reference, of the face people
    judged more similar to it (positive) and of the other one (negative).
    """
    if not (ref.shape == pos.shape == neg.shape) or ref.dim() != 2:
        raise ValueError(
            f"expected three (N, D) tensors of one shape, got {tuple(ref.shape)}, "
            f"{tuple(pos.shape)}, {tuple(neg.shape)}"
        )
    cos_pos = (ref * pos).sum(dim=1)
    cos_neg = (ref * neg).sum(dim=1)
    return torch.clamp(cos_neg - cos_pos + margin, min=0).mean()
