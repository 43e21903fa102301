"""Triplet accuracy: does the model find the reference more similar to the positive?"""

from __future__ import annotations

from typing import Callable, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

__all__ = ["triplet_similarities", "triplet_correct"]

Embed = Callable[[torch.Tensor], torch.Tensor]


@torch.inference_mode()
def triplet_similarities(
    embed: Embed,
    dataset: Dataset,
    batch_size: int = 64,
    num_workers: int = 0,
    device: torch.device = torch.device("cpu"),
    progress: bool = False,
    desc: str = "evaluating",
) -> Tuple[np.ndarray, np.ndarray]:
    """``(cos(ref, pos), cos(ref, neg))``, two (N,) arrays, for the (ref, pos, neg) items of ``dataset``.

    ``embed``: (B, 3, H, W) in [0, 1] -> (B, D) L2-normalized embeddings (e.g. ``PerFace.embed``).
    """
    from tqdm.auto import tqdm

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    pos, neg = [], []
    for ref, p, n in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False):
        b = ref.shape[0]
        e = embed(torch.cat([ref, p, n]).to(device, non_blocking=True)).float()
        pos.append((e[:b] * e[b:2 * b]).sum(1).cpu())
        neg.append((e[:b] * e[2 * b:]).sum(1).cpu())
    if not pos:
        return np.zeros(0), np.zeros(0)
    return torch.cat(pos).numpy().astype(np.float64), torch.cat(neg).numpy().astype(np.float64)


def triplet_correct(sim_pos: np.ndarray, sim_neg: np.ndarray) -> np.ndarray:
    """Per-triplet 0/1 correctness: 1 iff ``sim(ref, pos) > sim(ref, neg)`` (a tie counts as wrong)."""
    return (np.asarray(sim_pos) > np.asarray(sim_neg)).astype(np.float64)
