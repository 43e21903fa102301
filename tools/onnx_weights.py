"""Shared helpers of the ONNX -> safetensors conversion scripts (development only: needs ``onnx``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from perface.hub import sha256_file


def load_initializers(path: Path) -> dict[str, np.ndarray]:
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
