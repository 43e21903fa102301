"""Shared fixtures: real photos from ../shared/data/faces and the default metric."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FACES = REPO.parent / "shared" / "data" / "faces"
SIMCELEBA_ANSWERS = REPO.parent / "shared" / "data" / "simceleba" / "triplet_answers.csv"
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    if not FACES.is_dir():
        pytest.skip(f"real test photos not found at {FACES}")
    return FACES


@pytest.fixture(scope="session")
def metric():
    import perface

    return perface.PerFace()


def sface_signature(align: str = "detect") -> str:
    """The signature the default ``sface`` metric must carry, built without perface.signature:
    the package version, the first 8 hex digits of the sha256 of the shipped weight files
    (hashed here), the detector only where faces are detected, the arcface template at 112 px."""
    import hashlib

    import perface

    weights = Path(perface.__file__).parent / "weights"

    def short_sha(name: str) -> str:
        return hashlib.sha256((weights / name).read_bytes()).hexdigest()[:8]

    det = f"retinaface-mnet025@{short_sha('retinaface_mnet025.safetensors')}" if align == "detect" else "none"
    return (
        f"perface:{perface.__version__}|model:sface@{short_sha('sface.safetensors')}|det:{det}|"
        f"align:{align}|tpl:arcface|size:112|prec:fp32"
    )


def reference_similarity(a: str, b: str) -> float:
    """sface's similarity of two shared photos as shipped in perface/data/reference_sface.json
    (measured by tools/make_reference.py; tests/test_reference.py keeps it current to 0.005)."""
    import json

    import perface

    data = json.loads((Path(perface.__file__).parent / "data" / "reference_sface.json").read_text())
    for pair in data["pairs"]:
        if {pair["a"], pair["b"]} == {a, b}:
            return pair["similarity"]
    raise KeyError(f"no reference pair {a} / {b}")


def default_sigint() -> None:
    """``preexec_fn`` for a child that must receive Ctrl-C: SIGINT back to its default. A shell's
    background job (CI scripts run with ``&``) inherits SIGINT ignored, and Python then leaves it
    ignored, as it should."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
