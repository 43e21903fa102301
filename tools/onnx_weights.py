"""Shared helpers of the ONNX -> safetensors conversion scripts (development only: needs ``onnx``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Dict

import numpy as np


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_initializers(path: Path) -> Dict[str, np.ndarray]:
    """All initializers of an ONNX graph as numpy arrays, by name."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def write_provenance(out: Path, record: dict) -> None:
    """Merge ``record`` into ``PROVENANCE.json`` beside ``out``, keyed by the file name."""
    prov_path = out.parent / "PROVENANCE.json"
    provenance = json.loads(prov_path.read_text()) if prov_path.exists() else {}
    record = dict(record, sha256=sha256_file(out), bytes=out.stat().st_size)
    provenance[out.name] = record
    prov_path.write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")
