"""torchmetrics integration: PerFace similarity accumulated over batches, synced across processes.

Needs the optional extra: ``pip install "perface[metrics]"`` (torchmetrics). ``import perface``
never imports this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Union

import torch

try:
    from torchmetrics import Metric
    from torchmetrics.utilities import dim_zero_cat
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        "perface.metrics needs torchmetrics, an optional extra: pip install 'perface[metrics]' "
        "(or pip install torchmetrics)"
    ) from exc

from .model import PerFace
from .registry import DEFAULT_MODEL

__all__ = ["PerFaceSimilarity"]


class PerFaceSimilarity(Metric):
    """Mean PerFace similarity (cosine, in [-1, 1]) of image pairs, over every batch seen.

    ``update(x, y)`` takes two batches (N, 3, H, W) under the :class:`~perface.PerFace` input
    contract (RGB in [0, 1], aligned to the model's template unless the model aligns itself);
    ``compute()`` returns the mean over all pairs of all processes as a scalar tensor, or with
    ``ci=True`` a dict ``{"mean", "low", "high", "count"}`` holding the normal-approximation
    confidence interval of the mean (``perface.stats.mean_ci``; all per-pair values are then kept
    and gathered across processes: memory grows with N).
    The distance of the paper is ``1 - similarity``. The wrapped :class:`~perface.PerFace` is a
    frozen submodule: it follows ``.to(device)`` and, as with torchmetrics' own LPIPS/FID
    networks, its weights appear in a parent module's ``state_dict``.

    Args:
        model: a :class:`~perface.PerFace` instance, or a name/path for ``PerFace(model)``.
        ci: keep per-pair values and report a confidence interval.
        confidence: level of that interval (0.9, 0.95 or 0.99).
        **kwargs: torchmetrics ``Metric`` options (``sync_on_compute``, ``process_group``, ...).
    """

    is_differentiable = False
    higher_is_better = None  # anonymization wants low similarity, reconstruction wants high
    full_state_update = False

    def __init__(
        self,
        model: Union[str, Path, PerFace] = DEFAULT_MODEL,
        *,
        ci: bool = False,
        confidence: float = 0.95,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.perface = model if isinstance(model, PerFace) else PerFace(model)
        self.ci = ci
        self.confidence = confidence
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        if ci:
            self.add_state("values", default=[], dist_reduce_fx="cat")

    @property
    def model_name(self) -> str:
        """Name of the checkpoint behind the numbers (report it with results)."""
        return self.perface.name

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add the pairs ``(x[i], y[i])``: two (N, 3, H, W) batches (see the class docstring)."""
        with torch.no_grad():
            sim = self.perface.similarity(x, y).double()
        self.total += sim.sum()
        self.count += sim.numel()
        if self.ci:
            self.values.append(sim)

    def compute(self) -> Union[torch.Tensor, Dict[str, torch.Tensor]]:
        """Mean similarity (scalar tensor), or with ``ci=True`` the dict described above."""
        if int(self.count) == 0:
            nan = torch.tensor(float("nan"), dtype=torch.float64)
            return {"mean": nan, "low": nan, "high": nan, "count": self.count} if self.ci else nan
        mean = self.total / self.count
        if not self.ci:
            return mean
        from .stats import mean_ci

        est = mean_ci(dim_zero_cat(self.values).cpu().numpy(), self.confidence)
        return {"mean": mean, "low": torch.tensor(est.low, dtype=torch.float64),
                "high": torch.tensor(est.high, dtype=torch.float64), "count": self.count}
