"""Turn a registry :class:`~perface.registry.WeightsSource` into a verified local file.

Knows nothing about layers. Embedded weights come from the installed package; Hub weights are
fetched once with ``huggingface_hub`` into the standard HF cache (``HF_HOME``, ``HF_HUB_OFFLINE``
and ``HF_ENDPOINT`` are honoured) and checked against the pinned sha256.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from .errors import ChecksumMismatchError, WeightsUnavailableError
from .registry import WeightsSource

__all__ = ["EMBEDDED_DIR", "sha256_file", "resolve_weights"]

EMBEDDED_DIR = Path(__file__).resolve().parent / "weights"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(path: Path, source: WeightsSource, what: str) -> Path:
    if source.sha256:
        actual = sha256_file(path)
        if actual != source.sha256:
            raise ChecksumMismatchError(
                f"{what}: sha256 of {path} is {actual}, expected {source.sha256}. The file is corrupt "
                f"or was tampered with; delete it (or reinstall perface) and try again."
            )
    return path


def resolve_weights(source: WeightsSource, name: str) -> Path:
    """Local path of verified weights for the registry entry ``name``."""
    if source.kind == "embedded":
        path = EMBEDDED_DIR / source.filename
        if not path.is_file():
            raise WeightsUnavailableError(
                f"model {name!r}: embedded weights {path} are missing from the installed package; "
                "reinstall perface (pip install --force-reinstall perface)."
            )
        return _verify(path, source, f"model {name!r}")
    raise WeightsUnavailableError(f"model {name!r}: weights source kind {source.kind!r} is not supported")
