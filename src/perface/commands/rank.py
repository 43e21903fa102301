"""``perface rank TARGET POOL_DIR --out DIR``: choose face-swap sources for a target from a pool.

Writes ``ranking.csv`` (rank, file, similarity, face box), ``contact_sheet.png``,
``histogram.png`` and ``failures.csv`` (pool photos without a usable face) into ``--out``.
"""

from __future__ import annotations

import argparse
import sys

from ..registry import DEFAULT_MODEL


def add_embedding_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of how a pool is embedded, shared by ``perface rank`` and ``perface embed-pool``."""
    parser.add_argument("--rebuild", action="store_true", help="re-embed every photo, ignoring the cache")
    parser.add_argument("--batch-size", type=int, default=32, help="faces per forward pass (default 32)")
    parser.add_argument("--device", default="auto",
                        help="where the backbone runs: cpu, cuda, cuda:1, or auto "
                             "(cuda:$LOCAL_RANK if CUDA is available)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers for detection/alignment (default 0)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help="photo of the target face")
    parser.add_argument("pool", help="folder of photos to choose from (searched recursively)")
    parser.add_argument("--out", required=True, help="output folder for the CSV, PNGs and failure report")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--band", nargs=2, type=float, metavar=("LO", "HI"),
                      help="keep faces with LO <= similarity <= HI (most similar first)")
    mode.add_argument("--top", type=int, metavar="K", help="the K most similar faces (default 20)")
    mode.add_argument("--bottom", type=int, metavar="K", help="the K least similar faces")
    parser.add_argument("--limit", type=int, metavar="K",
                        help="with --band: keep only the K most similar faces inside the band")
    parser.add_argument("--exclude-identity", type=float, metavar="THR",
                        help="drop faces more similar than THR as the target's own identity")
    parser.add_argument("--labels", help="CSV with a 'file' column and attribute columns (e.g. gender, age)")
    parser.add_argument("--group", action="append", metavar="G",
                        help="only faces in group G: COLUMN (same value as the target) or COLUMN=VALUE; repeatable")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"checkpoint name or path (default {DEFAULT_MODEL})")
    parser.add_argument("--cache", help="pool cache folder (default: per-user cache, see docs/ranking.md)")
    parser.add_argument("--no-cache", action="store_true", help="embed the pool without reading or writing a cache")
    add_embedding_arguments(parser)
    parser.add_argument("--sheet-max", type=int, default=24, help="faces shown on the contact sheet (default 24)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..errors import PerFaceError
    from ..ranking.rank import rank

    if args.limit is not None and args.band is None:
        print("perface rank: --limit goes with --band (use --top/--bottom otherwise)", file=sys.stderr)
        return 2
    top = args.top if args.top is not None else (args.limit if args.band else None)
    if args.band is None and args.bottom is None and top is None:
        top = 20
    try:
        result = rank(args.target, args.pool, band=tuple(args.band) if args.band else None, top=top,
                      bottom=args.bottom, exclude_identity=args.exclude_identity, labels=args.labels,
                      group=args.group, model=args.model, cache=False if args.no_cache else args.cache,
                      rebuild=args.rebuild, batch_size=args.batch_size, num_workers=args.workers,
                      progress=not args.no_progress, device=args.device)
        paths = result.save(args.out, max_faces=args.sheet_max)
    except (PerFaceError, ValueError, OSError, ImportError) as exc:
        print(f"perface rank: error: {exc}", file=sys.stderr)
        return 1
    pool = result.pool
    print(f"pool {pool.root}: {len(pool)} photos, {len(pool.errors)} without a usable face, "
          f"{pool.embedded} embedded now (rest from cache); model={result.model}")
    print(f"selected {len(result)} ({result.describe_rule()})")
    for row in result.rows()[:10]:
        print(f"{row['rank']:>5}  {row['similarity']:.4f}  {row['file']}")
    if len(result) > 10:
        print(f"  ... {len(result) - 10} more in {paths['csv']}")
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0
