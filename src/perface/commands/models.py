"""``perface models``: every registered checkpoint with its status, size, license and meaning."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..hub import weights_status
from ..registry import DEFAULT_MODEL, MODELS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object per checkpoint")


def _size(nbytes: int) -> str:
    return f"{nbytes / 1e6:.1f} MB" if nbytes else "?"


def run(args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = []  # one JSON object per checkpoint
    for name in sorted(MODELS):
        spec = MODELS[name]
        src = spec.weights
        assert src is not None
        rows.append(
            {
                "name": name,
                "default": name == DEFAULT_MODEL,
                "status": weights_status(src),
                "size": src.size,
                "license": spec.license,
                "kind": spec.kind,
                "measures": spec.measures,
                "arch": spec.arch,
                "embedding_size": spec.embedding_size,
                "trained_on": spec.trained_on,
                "sha256": src.sha256,
                "source": src.filename if src.kind == "embedded" else f"{src.repo_id}/{src.filename}@{src.revision}",
            }
        )
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    for row in rows:
        flag = " (default)" if row["default"] else ""
        print(f"{row['name']}{flag}: {row['status']}, {_size(row['size'])}, {row['arch']} {row['embedding_size']}-d")
        print(f"    kind:     {row['kind']}: {row['measures']}")
        print(f"    license:  {row['license']}")
        print(f"    trained:  {row['trained_on']}")
        print(f"    weights:  {row['source']}")
    return 0
