"""Triplet accuracy: does the model find the reference more similar to the positive?"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .dataset import TripletImages

__all__ = ["triplet_similarities", "triplet_correct"]

Embed = Callable[[torch.Tensor], torch.Tensor]


@torch.inference_mode()
def triplet_similarities(
    embed: Embed,
    data: TripletImages,
    batch_size: int = 64,
    device: torch.device = torch.device("cpu"),
    progress: bool = False,
    desc: str = "evaluating",
) -> tuple[np.ndarray, np.ndarray]:
    """``(cos(ref, pos), cos(ref, neg))``, two (N,) float64 arrays, for the triplets of ``data``.

    ``embed``: (B, 3, H, W) uint8 RGB -> (B, D) L2-normalized embeddings (e.g. ``PerFace.embed``,
    which accepts uint8 0..255); ``batch_size`` triplets (3 x ``batch_size`` images) per call.
    """
    from tqdm.auto import tqdm

    pos, neg = [], []
    starts = range(0, len(data), batch_size)
    for start in tqdm(starts, desc=desc, unit="batch", disable=not progress, leave=False):
        x = data.uint8_batch(torch.arange(start, min(start + batch_size, len(data))))
        b = x.shape[0]
        e = embed(x.transpose(0, 1).reshape(3 * b, *x.shape[2:]).to(device, non_blocking=True)).float()
        pos.append((e[:b] * e[b : 2 * b]).sum(1).cpu())
        neg.append((e[:b] * e[2 * b :]).sum(1).cpu())
    if not pos:
        return np.zeros(0), np.zeros(0)
    return torch.cat(pos).numpy().astype(np.float64), torch.cat(neg).numpy().astype(np.float64)


def triplet_correct(sim_pos: np.ndarray, sim_neg: np.ndarray) -> np.ndarray:
    """Per-triplet 0/1 correctness: 1 iff ``sim(ref, pos) > sim(ref, neg)`` (a tie counts as wrong)."""
    return (np.asarray(sim_pos) > np.asarray(sim_neg)).astype(np.float64)
