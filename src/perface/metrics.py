"""torchmetrics integration: PerFace similarity accumulated over batches, synced across processes.

Needs the optional extra: ``pip install "perface[metrics]"`` (torchmetrics). ``import perface``
never imports this module.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union, cast

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

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["PerFaceSimilarity"]

Result = Union[torch.Tensor, dict[str, torch.Tensor]]


class PerFaceSimilarity(Metric):
    """Mean PerFace similarity (cosine, in [-1, 1]) of image pairs, over every batch seen.

    ``update(x, y)`` takes two batches (N, 3, H, W) under the :class:`~perface.PerFace` input
    contract (RGB in [0, 1], aligned to the model's template unless the model aligns itself);
    ``compute()`` returns the mean over all pairs of all processes as a scalar tensor in the
    metric's dtype (float32 unless changed with ``set_dtype``), or with ``ci=True`` a dict
    ``{"mean", "low", "high", "count"}`` holding the normal-approximation confidence interval of
    the mean (``perface.stats.mean_ci``; all per-pair values are then kept and gathered across
    processes: memory grows with N). Sums are accumulated in float64.
    ``forward(x, y)`` (calling the metric) returns the same for that batch alone, with gradients
    to ``x`` and ``y``, and adds the batch to the running state, as in torchmetrics' own metrics.

    The distance of the paper is ``1 - similarity``. Higher means more alike
    (``higher_is_better=True``, as for SSIM); an anonymizer wants it low (with torchmetrics'
    ``MetricTracker``, pass ``maximize=False``).

    Report :attr:`signature` beside the number (it names the perface version, the checkpoint and
    its weights hash, detector, alignment, template, input size and precision); ``plot()`` puts
    it in the figure's title. The wrapped :class:`~perface.PerFace` is a frozen submodule: it
    follows ``.to(device)`` and, as with torchmetrics' own LPIPS/FID networks, its weights
    appear in a parent module's ``state_dict``.

    Args:
        model: a :class:`~perface.PerFace` instance, or a name/path for ``PerFace(model)``.
        ci: keep per-pair values and report a confidence interval.
        confidence: level of that interval (0.9, 0.95 or 0.99).
        **kwargs: torchmetrics ``Metric`` options (``sync_on_compute``, ``process_group``, ...).
    """

    is_differentiable = True
    higher_is_better = True
    full_state_update = False
    plot_lower_bound = -1.0
    plot_upper_bound = 1.0

    total: torch.Tensor
    count: torch.Tensor
    values: list[torch.Tensor]

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
        """Name of the checkpoint behind the numbers (the ``model`` field of :attr:`signature`)."""
        return self.perface.name

    @property
    def signature(self) -> str:
        """The metric signature of the numbers this metric computes (see :mod:`perface.signature`),
        e.g. ``perface:0.2.0|model:sface@0f0fbaa2|det:none|align:none|tpl:arcface|size:112|prec:fp32``.
        Report it beside the number."""
        return self.perface.signature

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add the pairs ``(x[i], y[i])``: two (N, 3, H, W) batches (see the class docstring)."""
        sim = self.perface.similarity(x, y).double()
        self.total += sim.sum()
        self.count += sim.numel()
        if self.ci:
            self.values.append(sim.detach())

    def compute(self) -> Result:
        """Mean similarity (scalar tensor), or with ``ci=True`` the dict described above; NaN
        before any update."""
        dtype = self.dtype
        if int(self.count) == 0:
            nan = torch.tensor(float("nan"), dtype=dtype, device=self.total.device)
            return {"mean": nan, "low": nan, "high": nan, "count": self.count} if self.ci else nan
        mean = (self.total / self.count).to(dtype)
        if not self.ci:
            return mean
        from .stats import mean_ci

        est = mean_ci(dim_zero_cat(self.values).double().cpu().numpy(), self.confidence)
        return {
            "mean": mean,
            "low": torch.tensor(est.low, dtype=dtype, device=mean.device),
            "high": torch.tensor(est.high, dtype=dtype, device=mean.device),
            "count": self.count,
        }

    def plot(self, val: Optional[Union[Result, Sequence[Result]]] = None, ax: Optional[Any] = None) -> Any:
        """Plot one result or a sequence of results (one per step), torchmetrics style.

        ``val``: a result of ``compute()``/``forward()`` or a list of them; default ``compute()``.
        ``ax``: a matplotlib ``Axes`` to draw on (default: a new figure). Returns ``(fig, ax)``
        (``fig`` is None when ``ax`` was given). The y axis spans the similarity range [-1, 1];
        with ``ci=True`` the mean and the interval bounds are drawn (not the count); the title
        holds :attr:`signature`. Needs matplotlib (``pip install "perface[plot]"``).
        """
        from ._plotting import pyplot

        pyplot()
        shown: Any = self.compute() if val is None else val
        if isinstance(shown, dict):
            shown = {k: v for k, v in shown.items() if k != "count"}
        elif isinstance(shown, (list, tuple)):
            shown = [{k: v for k, v in x.items() if k != "count"} if isinstance(x, dict) else x for x in shown]
        fig, axes = self._plot(shown, ax)
        ax = cast("Axes", axes)
        title = "\n".join(textwrap.wrap(self.signature.replace("|", " | "), 70))
        if ax.get_legend() is not None:  # torchmetrics puts it above the axes, where the title goes
            ax.legend(loc="best", ncol=3, fontsize=8)
        ax.set_title(f"{type(self).__name__}\n{title}", fontsize=8)
        return fig, ax
