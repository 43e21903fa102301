"""What every ``python -m perface.eval`` report shares.

- :class:`Notes`: warnings that are both printed (one plain line each, through ``warnings``) and
  kept in the report, so a small or lopsided set is flagged where the numbers are read.
- :data:`MIN_ITEMS`: below this many items a bootstrap 95% CI is only a rough guide.
- :func:`write_outputs`: the report folder written completely, then moved into place
  (:func:`perface._io.atomic_dir`): an interrupted run leaves no half-written report.
- Plot helpers: integer ticks on count axes, threshold lines and bands labelled with their values
  (the metric signature goes under each plot through ``save_figure(..., footer=...)``).
- :func:`reference_reading`: where a similarity falls in the model's shipped reference set.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from ..model import PerFace

from .._plotting import count_axis

__all__ = [
    "MIN_ITEMS",
    "Notes",
    "warnings_markdown",
    "write_outputs",
    "count_axis",
    "threshold_lines",
    "headroom",
    "band",
    "reference_reading",
]

MIN_ITEMS = 20  # a percentile-bootstrap interval from fewer items is too narrow to trust


class Notes:
    """Warnings of one evaluation: each is issued once with ``warnings.warn`` and kept in order."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def warn(self, message: str) -> None:
        if message not in self.items:
            self.items.append(message)
            warnings.warn(message, UserWarning, stacklevel=3)

    def small_set(self, n: int, what: str, minimum: int = MIN_ITEMS) -> None:
        """Warn when ``n`` items (e.g. "matched pairs") are too few for their 95% CI to mean much."""
        if n < minimum:
            self.warn(
                f"only {n} {what}: 95% confidence intervals from fewer than {minimum} are rough "
                "(the bootstrap interval comes out too narrow); add data before drawing conclusions"
            )


def warnings_markdown(items: Sequence[str]) -> list[str]:
    """A "Warnings" section of a markdown report (no lines when there are none)."""
    return ["## Warnings", ""] + [f"- {m}" for m in items] + [""] if items else []


def write_outputs(out: Path, writers: dict[str, tuple[str, Callable[[Path], object]]]) -> dict[str, Path]:
    """Write a report folder: ``writers[key] = (file name, write(path))``; returns ``{key: final path}``.

    Files are written into a temporary sibling folder and moved into ``out`` only when all are
    done; files of other names already in ``out`` are kept.
    """
    from .._io import atomic_dir

    out = Path(out)
    with atomic_dir(out) as tmp:
        for name, write in writers.values():
            write(tmp / name)
    return {key: out / name for key, (name, _) in writers.items()}


def threshold_lines(ax: Axes, values: Sequence[float], name: str, color: str = "0.3") -> None:
    """Vertical lines at ``values``, each labelled with its value just above the plot frame (where
    no bar or legend can hide it); the legend entry lists the values too."""
    listed = ", ".join(f"{t:g}" for t in values)
    for i, t in enumerate(values):
        ax.axvline(t, color=color, linestyle=":", linewidth=1.2, label=f"{name}: {listed}" if i == 0 else None)
        ax.annotate(
            f"{t:g}",
            xy=(t, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(0, 2),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=7,
            color=color,
        )


def headroom(ax: Axes, factor: float = 1.5) -> None:
    """Raise the top of the y axis so that an upper legend does not cover the bars."""
    low, high = ax.get_ylim()
    ax.set_ylim(low, low + (high - low) * factor)


def band(ax: Axes, low: float, high: float, label: str, color: str = "tab:green") -> None:
    """A shaded x-range labelled in the legend with its values."""
    ax.axvspan(low, high, color=color, alpha=0.12, label=f"{label}: {low:.3f} to {high:.3f}")


def reference_reading(score: Optional[float], metric: PerFace) -> Optional[dict[str, Any]]:
    """Where ``score`` falls in the shipped reference set of ``metric`` (``None`` without one)."""
    from ..reference import available, reading

    if score is None or metric.name not in available():
        return None
    return reading(score, metric).to_dict()
