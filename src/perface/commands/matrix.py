"""'perface matrix IMAGES... --out FILE.png': labelled heatmap of pairwise face similarity.

Every cell is the cosine similarity of two faces' embeddings in [-1, 1] (higher = more alike).
The PNG is titled with the model and its kind (perceptual or identity baseline), marks on its
colour bar where the model's reference set puts same-person pairs, and carries the metric
signature under the plot. The terminal shows a legend (lines starting with '#') and, for up to
12 photos, the matrix itself; --csv writes every value with the signature. A photo without a
usable face is a grey 'n/a' row and column. Exit status: 0 every photo scored, 1 some or all
failed (no picture at all when none has a usable face), 2 usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..templates import list_templates

if TYPE_CHECKING:
    import torch
from . import UsageError, add_batch_size, add_device, add_model, add_quiet, add_workers, input_failures

PROG = "perface matrix"
PRINT_UP_TO = 12  # larger matrices only go to the PNG and the CSV
PROGRESS_FROM = 20  # more photos than this show a progress bar (unless -q)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="photos (two or more)")
    parser.add_argument("--out", required=True, metavar="PNG", help="heatmap to write")
    parser.add_argument("--csv", metavar="CSV", help="also write the matrix (and the signature) as CSV")
    add_model(parser)
    parser.add_argument(
        "--aligned",
        choices=list_templates(),
        default=None,
        help="inputs are crops already aligned in this format: no detection",
    )
    add_batch_size(parser, 32)
    add_workers(parser)
    add_device(parser)
    add_quiet(parser)


def similarity_matrix(embeddings: torch.Tensor) -> torch.Tensor:
    """(N, N) cosine similarity of L2-normalized rows; NaN rows give NaN rows/columns."""
    return embeddings @ embeddings.T


def _table(matrix: torch.Tensor, labels: list[str]) -> list[str]:
    """The matrix as aligned text: rows numbered and named, columns numbered."""
    width = max(len(label) for label in labels)
    lines = [" " * (width + 4) + "".join(f"{j + 1:>8}" for j in range(len(labels)))]
    for i, (label, row) in enumerate(zip(labels, matrix.tolist())):
        cells = "".join(f"{'n/a' if v != v else f'{v:.3f}':>8}" for v in row)
        lines.append(f"{i + 1:>2}  {label:<{width}}{cells}")
    return lines


def _write_csv(path: str, images: list[str], matrix: torch.Tensor, signature: str) -> None:
    import csv
    import io

    from .._io import atomic_write_text

    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["file", *images, "signature"])
    for name, row in zip(images, matrix.tolist()):
        writer.writerow([name, *("" if v != v else f"{v:.6f}" for v in row), signature])
    atomic_write_text(path, text.getvalue())


def run(args: argparse.Namespace) -> int:
    from ..embedding import embed
    from ..model import PerFace
    from ..ranking.plots import similarity_heatmap
    from .explain import legend

    images = list(args.images)
    if len(images) < 2:
        raise UsageError(f"give at least two images to compare, got {len(images)}")
    if Path(args.out).suffix.lower() != ".png":
        raise UsageError(f"--out {args.out}: the heatmap is a PNG; name it FILE.png")
    metric = PerFace(args.model)
    batch = embed(
        images,
        metric,
        align=args.aligned or "detect",
        batch_size=args.batch_size,
        num_workers=args.workers,
        device=args.device,
        progress=len(images) > PROGRESS_FROM and not args.quiet,
    )
    for i, reason in sorted(batch.errors.items()):
        print(f"{PROG}: warning: left out {images[i]}: {reason}", file=sys.stderr, flush=True)
    if len(batch.errors) == len(images):
        shown = ", ".join(images[:3]) + (" ..." if len(images) > 3 else "")
        raise ValueError(
            f"none of the {len(images)} images has a usable face ({shown}); nothing to draw. Pass photos "
            "where the whole face is visible and at least ~20 px wide, or --aligned FORMAT for aligned crops"
        )
    matrix = similarity_matrix(batch.embeddings)
    labels = [Path(p).name for p in images]
    if len(set(labels)) < len(labels):  # same names in different folders: show the paths
        labels = images
    explained = legend(metric)
    bands = []
    if explained.reference is not None:
        same, different = explained.reference.values(True), explained.reference.values(False)
        name = explained.reference.name
        bands = [(same[0], same[-1], f"same person ({name})"), (different[0], different[-1], "different people")]
    title = (
        f"Cosine similarity of face embeddings, {len(images)} photos\n"
        f"model {metric.name} ({explained.kind}); higher = more alike"
    )
    similarity_heatmap(matrix, labels, args.out, title=title, footer=[batch.signature], bands=bands)
    if args.csv:
        _write_csv(args.csv, images, matrix, batch.signature)
    for line in [*explained.lines, f"signature: {batch.signature}"]:
        print(f"# {line}")
    if len(images) <= PRINT_UP_TO:
        print("\n".join(_table(matrix, labels)))
    written = args.out + (f", {args.csv}" if args.csv else "")
    print(f"{len(images)} x {len(images)} similarities written to {written}", flush=True)
    return input_failures(PROG, len(batch.errors), len(images), "images", "in the warnings above")
