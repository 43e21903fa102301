"""``perface verify``: re-hash the embedded and cached weights files against their pinned sha256."""

from __future__ import annotations

import argparse

from ..hub import verify_source
from ..registry import DETECTOR, MODELS, get_spec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", help="registered models to check (default: all, and the face detector)")


def run(args: argparse.Namespace) -> int:
    specs = [get_spec(n) for n in args.names] if args.names else [MODELS[n] for n in sorted(MODELS)]
    sources = [(spec.name, spec.weights) for spec in specs if spec.weights is not None]
    if not args.names:
        sources.append((f"{DETECTOR.name} (face detector)", DETECTOR.weights))
    bad = 0
    for name, source in sources:
        checks = verify_source(source, name)
        if not checks:
            print(f"{name}: not cached (nothing to check)")
        for c in checks:
            if c.ok:
                print(f"{name}: OK        {c.what}: {c.path}")
            elif not c.expected:
                print(f"{name}: UNPINNED  {c.what}: {c.path} sha256 {c.actual} (no pin or record to compare)")
            else:
                bad += 1
                fix = (
                    "reinstall perface (pip install --force-reinstall perface)"
                    if source.kind == "embedded"
                    else f"delete that file and run `perface download {name} --force`"
                )
                print(
                    f"{name}: MISMATCH  {c.what}: {c.path}\n    sha256 {c.actual}, expected {c.expected}\n"
                    f"    fix: {fix}"
                )
    return 1 if bad else 0
