"""Small statistics helpers for reporting: means with 95% confidence intervals.

Every number perface reports about a set of items (triplet accuracy, mean similarity, ...) comes
with a CI from here, so results are reported the same way everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

import numpy as np

__all__ = ["Estimate", "bootstrap_ci", "mean_ci"]

ArrayLike = Union[Sequence[float], np.ndarray]


@dataclass(frozen=True)
class Estimate:
    """A mean with its confidence interval ``[low, high]`` over ``n`` items."""

    mean: float
    low: float
    high: float
    n: int
    method: str
    level: float = 0.95

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"

    def to_dict(self) -> dict:
        return {
            "mean": self.mean,
            "ci_low": self.low,
            "ci_high": self.high,
            "n": self.n,
            "ci_method": self.method,
            "ci_level": self.level,
        }


def _values(values: ArrayLike) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("cannot estimate a mean from zero values")
    if not np.all(np.isfinite(x)):
        raise ValueError("values contain NaN or inf; drop failed items first and report them separately")
    return x


def bootstrap_ci(values: ArrayLike, n: int = 10000, seed: int = 0, level: float = 0.95) -> Estimate:
    """Mean of ``values`` (1-D, finite) with a percentile-bootstrap CI from ``n`` resamples.

    Deterministic for a given ``seed``. Works for 0/1 correctness (accuracy) and for real values.
    """
    x = _values(values)
    rng = np.random.default_rng(seed)
    means = np.empty(n)
    chunk = max(1, min(n, 2_000_000 // x.size))  # bound memory: chunk x size indices at a time
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        idx = rng.integers(0, x.size, size=(stop - start, x.size))
        means[start:stop] = x[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return Estimate(float(x.mean()), float(low), float(high), int(x.size), f"bootstrap({n})", level)


def mean_ci(values: ArrayLike, level: float = 0.95) -> Estimate:
    """Mean with a normal-approximation CI, ``mean +- z * sd / sqrt(n)`` (fast; for large n)."""
    x = _values(values)
    z = {0.9: 1.6448536, 0.95: 1.959964, 0.99: 2.5758293}.get(round(level, 4))
    if z is None:
        raise ValueError(f"level must be 0.9, 0.95 or 0.99, got {level}")
    half = z * (x.std(ddof=1) / math.sqrt(x.size) if x.size > 1 else 0.0)
    return Estimate(float(x.mean()), float(x.mean() - half), float(x.mean() + half), int(x.size), "normal", level)
