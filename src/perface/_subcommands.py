"""Lazy subcommand dispatch shared by ``perface`` and ``python -m perface.eval``.

A table maps a subcommand name to ``(module, one-line help)``; the module defines
``add_arguments(parser)`` and ``run(args) -> int`` and is imported only when its subcommand runs.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Dict, List, Optional, Tuple

Table = Dict[str, Tuple[str, str]]


def dispatch(prog: str, description: str, table: Table, argv: List[str], version: Optional[str] = None) -> int:
    """Run the subcommand named by ``argv[0]`` with the rest of ``argv``; returns the exit status."""
    if not argv or argv[0] not in table:
        parser = argparse.ArgumentParser(prog=prog, description=description)
        if version:
            parser.add_argument("--version", action="version", version=version)
        sub = parser.add_subparsers(dest="command", metavar="COMMAND")
        for name, (_, help_text) in table.items():
            sub.add_parser(name, help=help_text.replace("%", "%%"))  # argparse %-formats help
        args = parser.parse_args(argv)  # exits on -h/--version/unknown commands
        if args.command is None:
            parser.print_help()
            return 2
    module_name, help_text = table[argv[0]]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"{prog} {argv[0]}", description=help_text)
    module.add_arguments(parser)
    return int(module.run(parser.parse_args(argv[1:])) or 0)
