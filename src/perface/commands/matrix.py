"""``perface matrix IMAGES... --out FILE.png``: labelled heatmap of pairwise face similarity."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..registry import DEFAULT_MODEL


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="photos (two or more)")
    parser.add_argument("--out", required=True, help="output PNG")
    parser.add_argument("--csv", help="also write the matrix as CSV")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"checkpoint name or path (default {DEFAULT_MODEL})")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers for detection/alignment")


def similarity_matrix(embeddings):
    """(N, N) cosine similarity of L2-normalized rows; NaN rows give NaN rows/columns."""
    return embeddings @ embeddings.T


def run(args: argparse.Namespace) -> int:
    import csv

    from ..embedding import embed
    from ..ranking.plots import similarity_heatmap

    if len(args.images) < 2:
        print("perface matrix: give at least two images", file=sys.stderr)
        return 2
    batch = embed(list(args.images), args.model, num_workers=args.workers, progress=len(args.images) > 20)
    for i, reason in sorted(batch.errors.items()):
        print(f"perface matrix: skipped {args.images[i]}: {reason}", file=sys.stderr)
    matrix = similarity_matrix(batch.embeddings)
    labels = [Path(p).name for p in args.images]
    if len(set(labels)) < len(labels):  # same names in different folders: show the paths
        labels = list(args.images)
    try:
        similarity_heatmap(matrix, labels, args.out, title=f"face similarity\n{batch.signature}")
    except ImportError as exc:
        print(f"perface matrix: error: {exc}", file=sys.stderr)
        return 1
    if args.csv:
        with open(args.csv, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["file", *args.images])
            for name, row in zip(args.images, matrix.tolist()):
                writer.writerow([name, *("" if v != v else f"{v:.6f}" for v in row)])
    print(
        f"{args.out}: {len(args.images)} x {len(args.images)} similarities, {len(batch.errors)} image(s) "
        f"without a usable face; model={batch.model}; signature={batch.signature}"
    )
    return 0
