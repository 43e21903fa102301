"""``perface similarity REF OTHER [OTHER ...]``: similarity of a reference face to others."""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from PIL import Image

from ..model import PerFace
from ..registry import DEFAULT_MODEL


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("reference", help="face crop aligned to the model's template")
    parser.add_argument("others", nargs="+", help="face crops to compare with the reference")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"checkpoint name or path (default {DEFAULT_MODEL})")
    parser.add_argument("--json", action="store_true", help="print one JSON object per line")


def _load(path: str) -> torch.Tensor:
    with Image.open(path) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)


def run(args: argparse.Namespace) -> int:
    metric = PerFace(args.model)
    ref = _load(args.reference)
    with torch.no_grad():
        for other in args.others:
            sim = float(metric.similarity(ref, _load(other)))
            if args.json:
                print(json.dumps({"reference": args.reference, "other": other, "similarity": sim, "model": metric.name}))
            else:
                print(f"{sim:.4f}\t{args.reference}\t{other}\tmodel={metric.name}")
    return 0
