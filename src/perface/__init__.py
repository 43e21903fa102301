"""perface: how similar two faces look to people (PerFace, Kumagai et al., ICIP 2025).

``import perface`` is cheap: it loads no weights and opens no network connection.
"""

from ._version import __version__
from .errors import (
    ChecksumMismatchError,
    ImageReadError,
    InputRangeError,
    NoFaceError,
    PerFaceError,
    UnknownModelError,
    WeightsUnavailableError,
)
from .model import PerFace
from .registry import list_models

__all__ = [
    "__version__",
    "PerFace",
    "list_models",
    "PerFaceError",
    "InputRangeError",
    "ImageReadError",
    "NoFaceError",
    "UnknownModelError",
    "WeightsUnavailableError",
    "ChecksumMismatchError",
]
