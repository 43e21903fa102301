"""Plot plumbing shared by every PNG perface writes: matplotlib on the Agg backend, loaded lazily."""

from __future__ import annotations

from pathlib import Path
from typing import Union


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend; ImportError names the extra."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("plots need matplotlib: pip install 'perface[plot]'") from exc
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Union[str, Path], dpi: Union[float, str] = "figure") -> Path:
    """Lay out ``fig`` and write it to ``path`` (parents created); returns the path."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
