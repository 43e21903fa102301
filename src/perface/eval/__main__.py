"""``python -m perface.eval SUBCOMMAND ...``: dispatch to ``perface.eval.<subcommand>``."""

from __future__ import annotations

import sys
from typing import Optional

from ..commands import dispatch

# name -> (module, one-line help); modules load only when their subcommand runs
SUBCOMMANDS = {
    "triplets": ("perface.eval.triplets", "triplet accuracy (with 95% CI) of one or more models on judged triplets"),
    "anonymization": (
        "perface.eval.anonymization",
        "how much of each original face survives anonymization (similarity, verification rate, re-identification)",
    ),
    "attributes": ("perface.eval.attributes", "attribute-group classification by CI-bounded group distances"),
}


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of ``python -m perface.eval``; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    return dispatch("python -m perface.eval", "perface evaluations", SUBCOMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
