"""``perface rank TARGET POOL_DIR --out DIR``: choose face-swap sources for a target from a pool.

Writes ranking.csv (rank, file, similarity, face box, metric signature), contact_sheet.png,
histogram.png, failures.csv (every pool file without an embedding, with the reason) and
summary.json into --out, all at once when complete. The pool is embedded once and cached;
progress is saved as it goes, so an interrupted run resumes where it stopped. Exit status: 0
every pool file was embedded, 1 some were not (the rest is ranked; failures.csv lists them), 2
usage, 130 interrupted (see docs/cli.md).
"""

from __future__ import annotations

import argparse
from typing import Any

from . import UsageError, add_batch_size, add_device, add_model, add_quiet, add_workers, input_failures


def add_cache_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the pool's embeddings are kept and how they are made, shared by ``perface rank``
    and ``perface embed-pool``."""
    add_model(parser)
    parser.add_argument(
        "--cache",
        metavar="DIR",
        help="pool cache folder (default: $PERFACE_CACHE/pools/<pool>-<hash>, where PERFACE_CACHE is "
        "$HF_HOME/perface unless set; see docs/ranking.md)",
    )
    parser.add_argument("--rebuild", action="store_true", help="re-embed every photo, ignoring the cache")
    parser.add_argument(
        "--dtype",
        choices=("float32", "float16"),
        help="stored embedding type of a new cache: float16 halves disk and memory (default: float32)",
    )
    add_batch_size(parser, 32, "faces per forward pass")
    add_device(parser)
    add_workers(parser)
    parser.add_argument(
        "--save-every",
        type=int,
        default=500,
        metavar="N",
        help="save embedding progress every N files at most, and every 30 s",
    )
    add_quiet(parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help="photo of the target face")
    parser.add_argument("pool", help="folder of photos to choose from (searched recursively)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder for the CSVs, PNGs and summary")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--band",
        nargs=2,
        type=float,
        metavar=("LO", "HI"),
        help="keep faces with LO <= similarity <= HI (most similar first)",
    )
    mode.add_argument("--top", type=int, metavar="K", help="the K most similar faces (default: 20)")
    mode.add_argument("--bottom", type=int, metavar="K", help="the K least similar faces")
    parser.add_argument(
        "--limit", type=int, metavar="K", help="with --band: keep only the K most similar faces inside the band"
    )
    parser.add_argument(
        "--exclude-identity",
        type=float,
        metavar="THR",
        help="drop faces more similar than THR as the target's own identity",
    )
    parser.add_argument(
        "--keep-copies",
        action="store_true",
        help="keep byte-identical copies of the target file (and links to it) among the candidates",
    )
    parser.add_argument(
        "--labels", metavar="CSV", help="CSV with a 'file' column and attribute columns (e.g. gender, age)"
    )
    parser.add_argument(
        "--group",
        action="append",
        metavar="G",
        help="only faces in group G: COLUMN (same value as the target) or COLUMN=VALUE; repeatable",
    )
    add_cache_arguments(parser)
    parser.add_argument("--no-cache", action="store_true", help="embed the pool without reading or writing a cache")
    parser.add_argument(
        "--no-update",
        action="store_true",
        help="rank what the cache holds (main cache or shard caches) without scanning the folder",
    )
    parser.add_argument("--sheet-max", type=int, default=24, metavar="N", help="faces shown on the contact sheet")


def cache_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of the pool functions from the options of :func:`add_cache_arguments`."""
    import torch

    if args.save_every < 1 or args.batch_size < 1:
        raise UsageError("--save-every and --batch-size must be at least 1")
    return {
        "rebuild": args.rebuild,
        "dtype": getattr(torch, args.dtype) if args.dtype else None,
        "progress": not args.quiet,
        "save_every": args.save_every,
    }


def pool_line(summary: dict[str, Any]) -> str:
    """The one summary line of a pool: files, faces, failures, embedded now and from the cache."""
    return (
        f"pool {summary['pool']}: {summary['files']} files, {summary['faces']} faces, {summary['failed']} "
        f"without an embedding; {summary['embedded_now']} embedded now, {summary['from_cache']} from the cache"
    )


def run(args: argparse.Namespace) -> int:
    from ..ranking.rank import rank

    if args.limit is not None and args.band is None:
        raise UsageError("--limit goes with --band (use --top/--bottom otherwise)")
    if args.no_cache and (args.cache or args.no_update):
        raise UsageError("--no-cache cannot go with --cache or --no-update")
    if args.no_update and args.rebuild:
        raise UsageError("--no-update ranks the cache as it is; --rebuild re-embeds the pool: choose one")
    top = args.top if args.top is not None else (args.limit if args.band else None)
    if args.band is None and args.bottom is None and top is None:
        top = 20
    result = rank(
        args.target,
        args.pool,
        band=tuple(args.band) if args.band else None,
        top=top,
        bottom=args.bottom,
        exclude_identity=args.exclude_identity,
        keep_copies=args.keep_copies,
        labels=args.labels,
        group=args.group,
        model=args.model,
        cache=False if args.no_cache else args.cache,
        update=not args.no_update,
        batch_size=args.batch_size,
        num_workers=args.workers,
        device=args.device,
        **cache_options(args),
    )
    paths = result.save(args.out, max_faces=args.sheet_max)
    summary = result.summary()
    print(pool_line(summary))
    if result.excluded:
        shown = ", ".join(result.excluded[:5]) + (" ..." if len(result.excluded) > 5 else "")
        print(
            f"left out {len(result.excluded)} file(s) as the target or a copy of it: {shown}"
            + ("" if args.keep_copies else " (--keep-copies keeps copies)")
        )
    print(f"selected {len(result)} ({result.describe_rule()})")
    for row in result.rows()[:10]:
        print(f"{row['rank']:>5}  {row['similarity']:.4f}  {row['file']}")
    if len(result) > 10:
        print(f"  ... {len(result) - 10} more in {paths['csv']}")
    print(f"signature: {result.signature}")
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return input_failures("perface rank", summary["failed"], summary["files"], "pool files", f"in {paths['failures']}")
