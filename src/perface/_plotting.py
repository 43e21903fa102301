"""Plot plumbing shared by every PNG perface writes: matplotlib on the Agg backend, loaded lazily."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    from matplotlib.axis import Axis
    from matplotlib.figure import Figure


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend; ImportError names the extra."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("plots need matplotlib: pip install 'perface[plot]'") from exc
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(
    fig: Figure, path: Union[str, Path], dpi: Union[float, str] = "figure", footer: Sequence[str] = ()
) -> Path:
    """Lay out ``fig`` and write it to ``path`` atomically (parents created); returns the path.

    ``footer``: lines in small monospace type under the plot (e.g. the metric signature, so that a
    copied figure still says which metric made it); space is reserved for them.
    """
    lines = [line for line in footer if line]
    if lines:
        height = fig.get_figheight()
        reserve = min(0.4, (0.06 + 0.12 * len(lines)) / height)  # inches -> figure fraction
        fig.tight_layout(rect=(0, reserve, 1, 1))
        fig.text(0.01, 0.01, "\n".join(lines), fontsize=6, color="0.35", ha="left", va="bottom", family="monospace")
    else:
        fig.tight_layout()
    from ._io import atomic_write

    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format=fmt))


def count_axis(axis: Axis) -> None:
    """Whole numbers only on a count axis (``ax.yaxis`` / ``ax.xaxis``): no 0.25 faces."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))
