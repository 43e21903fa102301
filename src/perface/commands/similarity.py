"""``perface similarity REF OTHER [OTHER ...]``: how alike the face in REF looks to each OTHER.

Photos are detected and aligned to the model's template (``--aligned FORMAT`` for crops that
are already aligned). One line per pair: ``similarity<TAB>REF<TAB>OTHER<TAB>model=NAME<TAB>
signature=SIGNATURE``; a pair that fails prints ``failed`` and the reason instead of a number,
and the rest go on. With ``--json``, one JSON object per line (``similarity`` is null and
``error`` set on failure). Exit status: 0 if at least one pair scored, 1 if every pair failed.
"""

from __future__ import annotations

import argparse
import json

from ..registry import DEFAULT_MODEL
from ..templates import list_templates


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("reference", help="photo (or aligned crop, see --aligned) of the reference face")
    parser.add_argument("others", nargs="+", help="photos to compare with the reference")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"checkpoint name or path (default {DEFAULT_MODEL})")
    parser.add_argument("--json", action="store_true", help="print one JSON object per line")
    parser.add_argument(
        "--reference-face-index",
        type=int,
        default=None,
        metavar="N",
        help="which face of the reference photo (0 = most prominent, the default)",
    )
    parser.add_argument(
        "--face-index",
        type=int,
        default=None,
        metavar="N",
        help="which face of each OTHER photo (0 = most prominent, the default)",
    )
    parser.add_argument(
        "--aligned",
        choices=list_templates(),
        default=None,
        help="inputs are crops already aligned in this format: no detection",
    )
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers for decoding and detection")
    parser.add_argument("--device", default=None, help="torch device, e.g. cuda (default cpu)")


def run(args: argparse.Namespace) -> int:
    from ..embedding import embed
    from ..model import PerFace

    metric = PerFace(args.model)
    options = dict(align=args.aligned or "detect", num_workers=args.workers, device=args.device)
    ref = embed(
        [args.reference],
        metric,
        face_index=args.reference_face_index,
        argument="--reference-face-index",
        progress=False,
        **options,
    )
    others = embed(
        list(args.others),
        metric,
        face_index=args.face_index,
        argument="--face-index",
        progress=len(args.others) > 16,
        **options,
    )
    scored = 0
    for j, other in enumerate(args.others):
        reasons: dict[str, str] = {}
        if 0 in ref.errors:
            reasons["reference"] = ref.errors[0]
        if j in others.errors:
            reasons["other"] = others.errors[j]
        sim = None if reasons else float((ref.embeddings[0] * others.embeddings[j]).sum())
        scored += sim is not None
        error = "; ".join(reasons.values()) or None
        if args.json:
            print(
                json.dumps(
                    {
                        "reference": args.reference,
                        "other": other,
                        "similarity": sim,
                        "model": metric.name,
                        "signature": ref.signature,
                        "error": error,
                    }
                ),
                flush=True,
            )
        elif sim is None:
            print(f"failed\t{args.reference}\t{other}\tmodel={metric.name}\t{error}", flush=True)
        else:
            print(f"{sim:.4f}\t{args.reference}\t{other}\tmodel={metric.name}\tsignature={ref.signature}", flush=True)
    return 0 if scored else 1
