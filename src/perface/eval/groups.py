"""Attribute-group classification from embeddings alone (the PerFace paper's attribute task).

A query image's distance to a group is the upper bound of the 95% confidence interval (Student
t) of the per-image distances ``d = 1 - cos`` between the query and the group's images, the query
itself excluded; the nearest group wins. Per group: precision, recall, one-vs-rest accuracy and
ROC AUC with the negated group distances as scores. Pure tensor math, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypedDict

import torch

__all__ = ["MIN_GROUP_SIZE", "group_distances", "classify", "GroupScores", "group_scores", "roc_auc", "t_quantile"]

MIN_GROUP_SIZE = 3  # images a group needs so that each member has 2 others: the fewest a t interval takes


def t_quantile(q: float, df: torch.Tensor) -> torch.Tensor:
    """Quantile ``q`` of Student's t distribution for each degrees-of-freedom value in ``df``."""
    from scipy.special import stdtrit  # scipy comes with facexlib

    return torch.from_numpy(stdtrit(df.double().cpu().numpy(), q)).to(df.device)


def group_distances(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    num_groups: int,
    confidence: float = 0.95,
    chunk: int = 1024,
) -> torch.Tensor:
    """Distance of every image to every group, shape (N, G).

    Args:
        embeddings: (N, D) L2-normalized embeddings.
        labels: (N,) group index in ``0..num_groups-1`` per image, or -1 for images outside
            every group (they are queries but never group members).
        num_groups: G.
        confidence: two-sided level of the interval whose upper bound is the distance.
        chunk: queries processed at once (memory is ``chunk * N``).

    Returns:
        (N, G) float64: for query i and group g, ``mean + t * sd / sqrt(n)`` over the
        distances ``1 - cos(e_i, e_j)`` to the ``n`` members ``j != i`` of g. ``inf`` where a
        group has fewer than 2 members besides the query (no interval), so it never wins: a
        group of fewer than :data:`MIN_GROUP_SIZE` images is never predicted for its own members.
    """
    if embeddings.dim() != 2 or labels.shape != embeddings.shape[:1]:
        raise ValueError(
            f"expected embeddings (N, D) and labels (N,), got {tuple(embeddings.shape)} and {tuple(labels.shape)}"
        )
    e = embeddings.double()
    n_img = e.shape[0]
    member = torch.stack([labels == g for g in range(num_groups)], dim=1).double()  # (N, G)
    out = torch.empty(n_img, num_groups, dtype=torch.float64)
    tq = (1.0 + confidence) / 2.0
    for start in range(0, n_img, chunk):
        idx = torch.arange(start, min(start + chunk, n_img))
        d = 1.0 - e[idx] @ e.T  # (C, N)
        d[torch.arange(len(idx)), idx] = 0.0  # the query's own term adds nothing to the sums
        n = member.sum(dim=0).expand(len(idx), -1) - member[idx]  # (C, G) members besides the query
        s1, s2 = d @ member, (d * d) @ member
        mean = s1 / n.clamp(min=1)
        var = ((s2 - n * mean * mean) / (n - 1).clamp(min=1)).clamp(min=0)
        upper = mean + t_quantile(tq, (n - 1).clamp(min=1)) * (var / n.clamp(min=1)).sqrt()
        out[idx] = torch.where(n >= 2, upper, torch.full_like(upper, float("inf")))
    return out


def classify(distances: torch.Tensor) -> torch.Tensor:
    """Predicted group per row of ``distances`` (N, G): the nearest group, shape (N,)."""
    return distances.argmin(dim=1)


def roc_auc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """Area under the ROC curve of ``scores`` (N,) for the boolean labels ``positive`` (N,).

    The Mann-Whitney statistic with tied scores counted half; NaN when either class is empty.
    """
    scores = scores.double()
    n_pos = int(positive.sum())
    n_neg = int(positive.numel() - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = torch.argsort(scores)
    sorted_scores = scores[order]
    _, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    avg_rank = ends - (counts.double() - 1.0) / 2.0  # 1-based average rank of each tie block
    ranks = torch.empty_like(scores)
    ranks[order] = avg_rank[inverse]
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


@dataclass
class GroupScores:
    """One group's one-vs-rest results."""

    group: str
    support: int
    precision: float
    recall: float
    accuracy: float
    auc: float


class GroupResults(TypedDict):
    """What :func:`group_scores` returns."""

    accuracy: float
    n: int
    groups: list[GroupScores]
    predicted: torch.Tensor


def group_scores(distances: torch.Tensor, labels: torch.Tensor, names: Sequence[str]) -> GroupResults:
    """Classification results of images with a known group.

    Args:
        distances: (N, G) from :func:`group_distances`.
        labels: (N,) true group index; rows with -1 are ignored.
        names: G group names.

    Returns:
        ``{"accuracy": overall fraction correct, "n": images scored, "groups": [GroupScores...],
        "predicted": (n,) predicted group index of the scored rows}``. Precision is NaN for a
        group never predicted.
    """
    keep = labels >= 0
    dist, true = distances[keep], labels[keep]
    pred = classify(dist)
    per_group: list[GroupScores] = []
    for g, name in enumerate(names):
        pos, hit = true == g, pred == g
        tp = int((pos & hit).sum())
        per_group.append(
            GroupScores(
                group=str(name),
                support=int(pos.sum()),
                precision=tp / int(hit.sum()) if int(hit.sum()) else float("nan"),
                recall=tp / int(pos.sum()) if int(pos.sum()) else float("nan"),
                accuracy=float((pos == hit).double().mean()) if len(true) else float("nan"),
                auc=roc_auc(-dist[:, g].nan_to_num(posinf=1e9), pos),
            )
        )
    return {
        "accuracy": float((pred == true).double().mean()) if len(true) else float("nan"),
        "n": len(true),
        "groups": per_group,
        "predicted": pred,
    }
