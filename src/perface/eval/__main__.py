"""``python -m perface.eval SUBCOMMAND ...``: dispatch to ``perface.eval.<subcommand>``."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

# name -> (module, one-line help); modules load only when their subcommand runs
SUBCOMMANDS = {
    "triplets": ("perface.eval.triplets", "triplet accuracy (with 95% CI) of one or more models on judged triplets"),
    "anonymization": ("perface.eval.anonymization", "how much of each original face survives anonymization "
                      "(similarity, verification rate, re-identification)"),
    "attributes": ("perface.eval.attributes", "attribute-group classification by CI-bounded group distances"),
}


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in SUBCOMMANDS:
        parser = argparse.ArgumentParser(prog="python -m perface.eval", description="perface evaluations")
        sub = parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
        for name, (_, help_text) in SUBCOMMANDS.items():
            sub.add_parser(name, help=help_text.replace("%", "%%"))  # argparse %-formats help
        if argv and argv[0] not in ("-h", "--help"):
            parser.error(f"unknown subcommand {argv[0]!r}; choose from {', '.join(SUBCOMMANDS)}")
        parser.print_help()
        return 0 if argv else 2
    module_name, help_text = SUBCOMMANDS[argv[0]]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"python -m perface.eval {argv[0]}", description=help_text)
    module.add_arguments(parser)
    return int(module.run(parser.parse_args(argv[1:])) or 0)


if __name__ == "__main__":
    sys.exit(main())
