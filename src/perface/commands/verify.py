"""``perface verify``: re-hash the embedded and cached weights files against their pinned sha256."""

from __future__ import annotations

import argparse
import sys

from ..errors import PerFaceError
from ..hub import verify_source
from ..registry import MODELS, get_spec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", help="registered models to check (default: all)")


def run(args: argparse.Namespace) -> int:
    try:
        specs = [get_spec(n) for n in args.names] if args.names else [MODELS[n] for n in sorted(MODELS)]
    except PerFaceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bad = 0
    for spec in specs:
        assert spec.weights is not None
        checks = verify_source(spec.weights, spec.name)
        if not checks:
            print(f"{spec.name}: not cached (nothing to check)")
        for c in checks:
            if c.ok:
                print(f"{spec.name}: OK        {c.what}: {c.path}")
            elif not c.expected:
                print(f"{spec.name}: UNPINNED  {c.what}: {c.path} sha256 {c.actual} (no pin or record to compare)")
            else:
                bad += 1
                print(f"{spec.name}: MISMATCH  {c.what}: {c.path}\n    sha256 {c.actual}, expected {c.expected}\n"
                      f"    fix: delete that file and run `perface download {spec.name} --force`")
    return 1 if bad else 0
