"""'perface similarity REF OTHER [OTHER ...]': how alike the face in REF looks to each OTHER.

Photos are detected and aligned to the model's template (--aligned FORMAT for crops that are
already aligned). The output is tab-separated, one line per pair, after a legend of lines that
start with '#' (what the number is, the model's kind, how to read the value):

  SIMILARITY  REF  OTHER  model=NAME  signature=SIGNATURE  reading=PLACE

SIMILARITY is the cosine similarity of the two faces' embeddings in [-1, 1] (higher = more
alike); PLACE is where it falls among the same-person and different-person pairs of the model's
reference set ('-' for a model without one). A pair that fails prints 'failed' and the reason
instead, and the rest go on. 'grep -v "^#"' leaves the pairs alone. With --json: one JSON
object per line and no legend. Exit status: 0 every pair scored, 1 some or all pairs failed,
2 usage, 130 interrupted (see docs/cli.md).
"""

from __future__ import annotations

import argparse
import json

from ..templates import list_templates
from . import add_device, add_model, add_quiet, add_workers, input_failures

PROGRESS_FROM = 16  # more photos than this show a progress bar (unless -q)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("reference", help="photo (or aligned crop, see --aligned) of the reference face")
    parser.add_argument("others", nargs="+", help="photos to compare with the reference")
    add_model(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object per pair (no legend)")
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
    add_workers(parser)
    add_device(parser)
    add_quiet(parser)


def run(args: argparse.Namespace) -> int:
    from ..embedding import embed
    from ..model import PerFace
    from .explain import legend

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
        progress=len(args.others) > PROGRESS_FROM and not args.quiet,
        **options,
    )
    explained = legend(metric)
    if not args.json:
        for line in [*explained.lines, f"signature: {ref.signature}"]:
            print(f"# {line}")
        print("# columns: similarity, reference, other, model, signature, reading (tab-separated)", flush=True)
    failed = 0
    for j, other in enumerate(args.others):
        reasons: dict[str, str] = {}
        if 0 in ref.errors:
            reasons["reference"] = ref.errors[0]
        if j in others.errors:
            reasons["other"] = others.errors[j]
        sim = None if reasons else float((ref.embeddings[0] * others.embeddings[j]).sum())
        failed += sim is None
        reading = explained.reading(sim) if sim is not None else None
        error = "; ".join(reasons.values()) or None
        if args.json:
            record = {
                "reference": args.reference,
                "other": other,
                "similarity": sim,
                "model": metric.name,
                "kind": explained.kind,
                "signature": ref.signature,
                "reading": reading.to_dict() if reading is not None else None,
                "error": error,
            }
            print(json.dumps(record), flush=True)
        elif sim is None:
            print(f"failed\t{args.reference}\t{other}\tmodel={metric.name}\t{error}", flush=True)
        else:
            place = reading.position if reading is not None else "-"
            print(
                f"{sim:.4f}\t{args.reference}\t{other}\tmodel={metric.name}\tsignature={ref.signature}\treading={place}",
                flush=True,
            )
    return input_failures("perface similarity", failed, len(args.others), "pairs")
