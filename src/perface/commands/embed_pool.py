"""``perface embed-pool POOL_DIR``: embed a pool of photos into its cache, whole or by shards.

One shard per process or machine (--shard i/n, or --shard auto under torchrun, which sets RANK
and WORLD_SIZE), each writing its own shard file into a shared --cache folder; afterwards
--merge folds the shards into the cache 'perface rank' reads (or rank the shards as they are
with 'perface rank --no-update'). Progress is saved as it goes: an interrupted run resumes.
Exit status: 0 every file was embedded, 1 some were not (--report FILE lists them), 2 usage,
130 interrupted (see docs/cli.md).
"""

from __future__ import annotations

import argparse

from . import UsageError, input_failures
from .rank import add_cache_arguments, cache_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pool", help="folder of photos (searched recursively)")
    what = parser.add_mutually_exclusive_group()
    what.add_argument(
        "--shard",
        metavar="I/N",
        help="embed only files[I::N] (0-based) into shard I's file; 'auto' reads RANK/WORLD_SIZE set by torchrun",
    )
    what.add_argument("--merge", action="store_true", help="fold all shard files into the pool cache")
    parser.add_argument("--keep-shards", action="store_true", help="with --merge: keep the shard files")
    add_cache_arguments(parser)
    parser.add_argument(
        "--report",
        metavar="CSV",
        help="write the failure report (file, reason) of every file without an embedding here",
    )


def run(args: argparse.Namespace) -> int:
    from ..ranking.pool import PhotoEmbedder, merge_shards, parse_shard, update_pool
    from ..ranking.rank import write_failures
    from .rank import pool_line

    try:
        shard = parse_shard(args.shard) if args.shard else None
    except ValueError as exc:
        raise UsageError(f"--shard {args.shard}: {exc}") from None
    options = cache_options(args)
    embedder = PhotoEmbedder(
        args.model, batch_size=args.batch_size, num_workers=args.workers, progress=False, device=args.device
    )
    if args.merge:
        pool = merge_shards(args.pool, embedder, cache_dir=args.cache, keep_shards=args.keep_shards, **options)
    else:
        pool = update_pool(args.pool, embedder, cache_dir=args.cache, shard=shard, **options)
    failures = pool.failures
    part = f" (shard {shard[0]}/{shard[1]})" if shard else ""
    print(
        pool_line(
            {
                "pool": f"{pool.root}{part}",
                "files": len(pool) + len(pool.skipped),
                "faces": len(pool) - len(pool.errors),
                "failed": len(failures),
                "embedded_now": pool.embedded,
                "from_cache": len(pool) - pool.embedded,
            }
        )
    )
    print(f"signature: {pool.model.get('signature', '')}")
    if args.report:
        write_failures(args.report, failures)
        print(f"failures: {args.report}")
    where = f"in {args.report}" if args.report else "listed by --report FILE"
    return input_failures("perface embed-pool", len(failures), len(pool) + len(pool.skipped), "pool files", where)
