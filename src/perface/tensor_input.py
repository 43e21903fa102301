"""The tensor input contract: RGB NCHW, [0, 1] floats by default, checked and scaled."""

from __future__ import annotations

import torch

from .errors import InputRangeError

__all__ = ["to_unit_range"]

_TOLERANCE = 1e-3  # resampling overshoot and float error tolerated beyond the range


def to_unit_range(
    x: torch.Tensor, value_range: tuple[float, float] = (0.0, 1.0), check_range: bool = True, name: str = "input"
) -> torch.Tensor:
    """Return ``x`` as a float (N, 3, H, W) tensor in [0, 1].

    ``x``: (N, C, H, W) or (C, H, W) with C = 3 (RGB) or 1 (grayscale, repeated). uint8 tensors
    are read as 0..255 whatever ``value_range`` says. Floats must lie in ``value_range``
    (``(0, 1)`` or ``(-1, 1)``); otherwise :class:`~perface.InputRangeError` names the observed
    min/max and the argument that fixes it (or, for NaN and infinite values, how many there
    are), unless ``check_range`` is False (e.g. for a loss on a generator's unclamped output).
    An empty batch (0, 3, H, W) passes through. Differentiable in ``x``.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{name}: expected a torch.Tensor, got {type(x).__name__}; "
            "for paths, PIL images or numpy arrays use perface.similarity or PerFace(align='detect')"
        )
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(
            f"{name}: expected shape (N, 3, H, W) or (3, H, W) (RGB, channels first), got {tuple(x.shape)}"
        )
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a float or uint8 tensor, got {x.dtype}")
    lo, hi = float(value_range[0]), float(value_range[1])
    if (lo, hi) not in ((0.0, 1.0), (-1.0, 1.0)):
        raise ValueError(f"value_range must be (0, 1) or (-1, 1), got {value_range}")
    if check_range and x.numel():
        with torch.no_grad():
            finite = torch.isfinite(x)
            if not bool(finite.all()):
                nan = int(torch.isnan(x).sum())
                raise InputRangeError(
                    f"{name}: {nan} NaN and {int((~finite).sum()) - nan} infinite value(s) of {x.numel()}; "
                    "find where they come from (a diverging generator, a division by zero) or replace them "
                    "(torch.nan_to_num); clamping does not remove NaN."
                )
            xmin, xmax = float(x.min()), float(x.max())
        if not (xmin >= lo - _TOLERANCE and xmax <= hi + _TOLERANCE):
            if xmin >= -1 - _TOLERANCE and xmax <= 1 + _TOLERANCE and xmin < 0:
                fix = "pass value_range=(-1, 1) for inputs in [-1, 1]"
            elif xmax > 1 + _TOLERANCE and xmin >= 0 and xmax <= 255 + _TOLERANCE:
                fix = "divide by 255 (or pass a uint8 tensor) for 0..255 inputs"
            else:
                fix = "clamp or rescale the input"
            raise InputRangeError(
                f"{name}: values in [{xmin:.4g}, {xmax:.4g}] lie outside value_range=({lo:g}, {hi:g}); "
                f"{fix}, or pass check_range=False to skip this check."
            )
    return x if lo == 0.0 else (x + 1.0) * 0.5
