"""Shared fixtures: real photos from ../shared/data/faces and the default metric."""

from __future__ import annotations

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
