"""perface: how similar two faces look to people (PerFace, Kumagai et al., ICIP 2025).

``import perface`` is cheap: it loads no weights and opens no network connection.
"""

from ._version import __version__
from .alignment import align_faces
from .detection import Face, detect_faces
from .errors import (
    ChecksumMismatchError,
    ImageReadError,
    IncompatibleCheckpointError,
    InputRangeError,
    NoFaceError,
    PerFaceError,
    SignatureMismatchError,
    UnknownModelError,
    WeightsNotCachedError,
    WeightsNotFoundError,
    WeightsUnavailableError,
)
from .imageio import load_image, load_images
from .model import PerFace
from .photos import EmbedResult, SimilarityResult, embed_images, similarity
from .ranking.rank import RankResult, rank
from .registry import list_models
from .signature import Signature, check_signature

__all__ = [
    "__version__",
    "PerFace",
    "Signature",
    "check_signature",
    "list_models",
    "load_image",
    "load_images",
    "detect_faces",
    "Face",
    "align_faces",
    "similarity",
    "embed_images",
    "EmbedResult",
    "SimilarityResult",
    "rank",
    "RankResult",
    "PerFaceError",
    "InputRangeError",
    "ImageReadError",
    "NoFaceError",
    "UnknownModelError",
    "WeightsUnavailableError",
    "ChecksumMismatchError",
    "WeightsNotCachedError",
    "WeightsNotFoundError",
    "IncompatibleCheckpointError",
    "SignatureMismatchError",
]
