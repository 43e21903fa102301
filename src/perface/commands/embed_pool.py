"""``perface embed-pool POOL_DIR``: embed a pool of photos into its cache, whole or by shards.

One shard per process or machine (``--shard i/n``, or ``--shard auto`` under ``torchrun``,
which sets RANK and WORLD_SIZE), each writing its own shard file into a shared ``--cache``
folder; afterwards ``--merge`` folds the shards into the cache ``perface rank`` reads.
"""

from __future__ import annotations

import argparse
import sys

from ..registry import DEFAULT_MODEL
from .rank import add_embedding_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pool", help="folder of photos (searched recursively)")
    parser.add_argument("--cache", help="cache folder (default: per-user cache); shared by all shards")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"checkpoint name or path (default {DEFAULT_MODEL})")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--shard", metavar="I/N", help="embed only files[I::N] (0-based) into shard I's file; "
                      "'auto' reads RANK/WORLD_SIZE set by torchrun")
    what.add_argument("--merge", action="store_true", help="fold all shard files into the pool cache")
    parser.add_argument("--keep-shards", action="store_true", help="with --merge: keep the shard files")
    add_embedding_arguments(parser)
    parser.add_argument("--report", help="write the failure report (file, reason) to this CSV")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import csv

    from ..ranking.pool import PhotoEmbedder, merge_shards, parse_shard, update_pool

    try:
        shard = parse_shard(args.shard) if args.shard else None
    except ValueError as exc:
        print(f"perface embed-pool: error: {exc}", file=sys.stderr)
        return 2
    embedder = PhotoEmbedder(args.model, batch_size=args.batch_size, num_workers=args.workers,
                             progress=not args.no_progress, device=args.device)
    if args.merge:
        pool = merge_shards(args.pool, embedder, cache_dir=args.cache, keep_shards=args.keep_shards)
    else:
        pool = update_pool(args.pool, embedder, cache_dir=args.cache, shard=shard, rebuild=args.rebuild)
    part = f" shard {shard[0]}/{shard[1]}" if shard else ""
    print(f"pool {pool.root}{part}: {len(pool)} photos, {pool.embedded} embedded now, "
          f"{len(pool.errors)} without a usable face; model={embedder.metric.name}")
    if args.report:
        with open(args.report, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["file", "reason"])
            writer.writerows(sorted(pool.errors.items()))
    return 0
