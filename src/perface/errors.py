"""Exceptions raised by perface. Every one names the input or file at fault and the fix."""

from __future__ import annotations

__all__ = [
    "PerFaceError",
    "InputRangeError",
    "ImageReadError",
    "NoFaceError",
    "WeightsUnavailableError",
    "ChecksumMismatchError",
    "UnknownModelError",
    "IncompatibleCheckpointError",
    "WeightsNotCachedError",
    "WeightsNotFoundError",
    "SignatureMismatchError",
]


class PerFaceError(Exception):
    """Base class of every error perface raises on purpose."""


class InputRangeError(PerFaceError, ValueError):
    """Tensor values outside the documented input range (see ``value_range``)."""


class ImageReadError(PerFaceError, ValueError):
    """A file is missing, truncated, empty or not an image."""


class NoFaceError(PerFaceError, ValueError):
    """No face was found in an image."""


class UnknownModelError(PerFaceError, KeyError):
    """A model name that is neither registered, a local path, nor a Hub repo id."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0]) if self.args else ""


class WeightsUnavailableError(PerFaceError, RuntimeError):
    """Weights could not be obtained (offline and not cached, not found, network failure)."""


class ChecksumMismatchError(WeightsUnavailableError):
    """A weights file's sha256 differs from the one pinned in the registry."""


class WeightsNotCachedError(WeightsUnavailableError):
    """Weights are not in the local cache and the Hub cannot be used (offline, unreachable, timeout)."""


class WeightsNotFoundError(WeightsUnavailableError):
    """The Hub answered, but the repo, revision or file does not exist (or is private/gated)."""


class IncompatibleCheckpointError(PerFaceError, ValueError):
    """A checkpoint's config or tensors do not fit its architecture (or this perface version)."""


class SignatureMismatchError(PerFaceError, ValueError):
    """A metric signature (e.g. from a paper) differs from the installed metric's."""
