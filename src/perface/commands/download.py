"""``perface download NAME``: fetch a checkpoint into the local cache now, for offline use later."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..hub import hub_cache_dir, import_weights, perface_cache_dir, resolve_weights
from ..pretrained import load_pretrained, parse_hub_id
from ..registry import MODELS, get_spec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="registered model name (see 'perface models') or Hub repo id org/repo[@revision]")
    parser.add_argument("--force", action="store_true", help="download again even if cached (after a checksum error)")
    parser.add_argument(
        "--from-file",
        type=Path,
        metavar="PATH",
        help="import a local copy of the model's weights file instead of downloading "
        "(checked against the pinned sha256)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="registered models: seconds to wait for the Hub to answer (default: $HF_HUB_ETAG_TIMEOUT, else 10)",
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.name in MODELS:
        spec = get_spec(args.name)
        assert spec.weights is not None
        if args.from_file is not None:
            path = import_weights(spec.weights, spec.name, args.from_file)
        else:
            path = resolve_weights(spec.weights, spec.name, force=args.force, timeout=args.timeout)
    elif parse_hub_id(args.name) is not None and args.from_file is None and not Path(args.name).exists():
        load_pretrained(args.name, force=args.force)
        path = hub_cache_dir()
    else:
        get_spec(args.name)  # unknown name: raises UnknownModelError with suggestions (exit 2)
        return 2
    print(f"{args.name}: ready at {path}")
    print(f"caches: Hugging Face {hub_cache_dir()}, perface {perface_cache_dir()}")
    return 0
