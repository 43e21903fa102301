"""The ``perface`` command line. Each subcommand lives in ``perface.commands.<name>`` and defines
``add_arguments(parser)`` and ``run(args) -> int``; modules load only when their command runs."""

from __future__ import annotations

import sys
from typing import Optional

from ._version import __version__
from .commands import dispatch

# name -> (module, one-line help)
COMMANDS = {
    "similarity": ("perface.commands.similarity", "similarity of a reference face to one or more others"),
    "rank": ("perface.commands.rank", "choose face-swap sources: rank a pool of photos against a target"),
    "matrix": ("perface.commands.matrix", "heatmap of pairwise face similarity between photos"),
    "embed-pool": (
        "perface.commands.embed_pool",
        "embed a pool of photos into its cache (whole, by shard, or merge shards)",
    ),
    "models": ("perface.commands.models", "list the checkpoints: status (embedded/cached/downloadable), size, license"),
    "download": ("perface.commands.download", "fetch a checkpoint into the local cache for offline use"),
    "verify": ("perface.commands.verify", "re-check the sha256 of embedded and cached weights"),
    "annotate": ("perface.commands.annotate", "collect people's triplet judgments in a browser: make, serve, export"),
    "signature": ("perface.commands.signature", "print the metric signature to report with numbers, or --check one"),
}


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of the ``perface`` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    return dispatch("perface", "Perceptual face similarity (PerFace).", COMMANDS, argv, f"perface {__version__}")


if __name__ == "__main__":
    sys.exit(main())
