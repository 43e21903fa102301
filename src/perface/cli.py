"""The ``perface`` command line. Each subcommand lives in ``perface.commands.<name>`` and defines
``add_arguments(parser)`` and ``run(args) -> int``; modules load only when their command runs."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from ._version import __version__

# name -> (module, one-line help)
COMMANDS = {
    "similarity": ("perface.commands.similarity", "similarity of a reference face to one or more others"),
    "rank": ("perface.commands.rank", "choose face-swap sources: rank a pool of photos against a target"),
    "matrix": ("perface.commands.matrix", "heatmap of pairwise face similarity between photos"),
    "embed-pool": ("perface.commands.embed_pool", "embed a pool of photos into its cache (whole, by shard, or merge shards)"),
    "models": ("perface.commands.models", "list the checkpoints: status (embedded/cached/downloadable), size, license"),
    "download": ("perface.commands.download", "fetch a checkpoint into the local cache for offline use"),
    "verify": ("perface.commands.verify", "re-check the sha256 of embedded and cached weights"),
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per command (arguments added lazily)."""
    parser = argparse.ArgumentParser(prog="perface", description="Perceptual face similarity (PerFace).")
    parser.add_argument("--version", action="version", version=f"perface {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``perface`` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    known, _ = parser.parse_known_args(argv[:1] if argv and argv[0] in COMMANDS else argv)
    if known.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[known.command][0])
    sub = argparse.ArgumentParser(prog=f"perface {known.command}", description=COMMANDS[known.command][1])
    module.add_arguments(sub)
    return int(module.run(sub.parse_args(argv[1:])) or 0)


if __name__ == "__main__":
    sys.exit(main())
