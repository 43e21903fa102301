"""``perface similarity REF OTHER [OTHER ...]``: how alike the face in REF looks to each OTHER.

Photos are detected and aligned to the model's template (``--aligned FORMAT`` for crops that
are already aligned). One line per pair: ``similarity<TAB>REF<TAB>OTHER<TAB>model=NAME``; a pair
that fails prints ``failed`` and the reason instead of a number, and the rest go on. With
``--json``, one JSON object per line (``similarity`` is null and ``error`` set on failure).
Exit status: 0 if at least one pair scored, 1 if every pair failed.
"""

from __future__ import annotations

import argparse
import json
from typing import Dict, List

import torch

from ..registry import DEFAULT_MODEL
from ..templates import list_templates


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("reference", help="photo (or aligned crop, see --aligned) of the reference face")
    parser.add_argument("others", nargs="+", help="photos to compare with the reference")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"checkpoint name or path (default {DEFAULT_MODEL})")
    parser.add_argument("--json", action="store_true", help="print one JSON object per line")
    parser.add_argument("--face-index", type=int, default=None,
                        help="which face in photos with several (0 = most prominent, the default)")
    parser.add_argument("--aligned", choices=list_templates(), default=None,
                        help="inputs are crops already aligned in this format: no detection")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers for decoding and detection")
    parser.add_argument("--device", default=None, help="torch device, e.g. cuda (default cpu)")


def _aligned_embeddings(metric, paths: List[str]):
    """Embeddings of pre-aligned crops (NaN rows + reasons for unreadable ones)."""
    from ..errors import PerFaceError
    from ..imageio import load_image

    rows, errors = [], {}
    with torch.no_grad():
        for i, path in enumerate(paths):
            try:
                rows.append(metric.embed(load_image(path).to(next(metric.parameters()).device))[0].cpu())
            except (PerFaceError, ValueError, OSError) as exc:
                errors[i] = f"{type(exc).__name__}: {exc}"
                rows.append(torch.full((metric.embedding_size,), float("nan")))
    return torch.stack(rows), errors


def run(args: argparse.Namespace) -> int:
    from ..model import PerFace
    from ..photos import embed_images

    metric = PerFace(args.model, align=args.aligned or "none")
    if args.device:
        metric.to(args.device)
    paths = [args.reference] + list(args.others)
    if args.aligned:
        emb, errors = _aligned_embeddings(metric, paths)
    else:
        result = embed_images(paths, metric, num_workers=args.workers, progress=len(paths) > 16,
                              face_index=args.face_index, device=args.device)
        emb, errors = result.embeddings, result.errors
    scored = 0
    for j, other in enumerate(args.others, start=1):
        reasons: Dict[str, str] = {}
        if 0 in errors:
            reasons["reference"] = errors[0]
        if j in errors:
            reasons["other"] = errors[j]
        sim = None if reasons else float((emb[0] * emb[j]).sum())
        scored += sim is not None
        error = "; ".join(reasons.values()) or None
        if args.json:
            print(json.dumps({"reference": args.reference, "other": other, "similarity": sim,
                              "model": metric.name, "error": error}), flush=True)
        elif sim is None:
            print(f"failed\t{args.reference}\t{other}\tmodel={metric.name}\t{error}", flush=True)
        else:
            print(f"{sim:.4f}\t{args.reference}\t{other}\tmodel={metric.name}", flush=True)
    return 0 if scored else 1
