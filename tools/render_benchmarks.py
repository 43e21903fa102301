"""Put measured benchmark numbers into docs/benchmarks.md from run_all's JSON, never by hand.

    python benchmarks/run_all.py                                        # -> benchmarks/results/results.json
    python tools/render_benchmarks.py benchmarks/results/results.json   # keep it, re-render the page
    python tools/render_benchmarks.py --check                           # exit 1 if the page is stale

The JSON a page was rendered from is kept beside it (``docs/benchmarks/results.json``), so the
page can be re-rendered and checked at any time. Markers in the page:

- ``<!-- bench:machine -->`` ... ``<!-- /bench:machine -->``: the run's mode and time, and the
  machine table;
- ``<!-- bench:NAME -->`` ... ``<!-- /bench:NAME -->``: one benchmark's heading, table and notes
  (``bench_NAME.py``);
- ``<!-- value NAME PATH [FORMAT] -->``\\ ``123<!-- /value -->``: one number in the prose. ``PATH``
  is a dotted path into that benchmark's result (list items by index, e.g. ``rows.0.b32_faces_s``),
  or into the machine details with ``NAME`` = ``machine``; ``FORMAT`` a Python format spec such as
  ``.0f`` (default: as in the tables).

Everything outside the markers is prose and stays as written. A marker whose benchmark or path is
missing from the JSON is an error: rerun that benchmark or remove the marker.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from run_all import _cell, machine_lines, section_lines

PAGE = ROOT / "docs" / "benchmarks.md"
DATA = ROOT / "docs" / "benchmarks" / "results.json"

BLOCK = re.compile(r"(<!-- bench:([\w-]+) -->\n)(.*?)(<!-- /bench:\2 -->)", re.S)
VALUE = re.compile(r"(<!-- value ([\w-]+) ([\w.-]+)(?: ([^ ]+))? -->)(.*?)(<!-- /value -->)", re.S)


def lookup(result: Any, path: str) -> Any:
    """The item at a dotted ``path`` (dict keys; list indices as numbers); ``KeyError`` naming the path."""
    item = result
    for part in path.split("."):
        try:
            item = item[int(part)] if isinstance(item, list) else item[part]
        except (KeyError, IndexError, ValueError, TypeError):
            raise KeyError(f"{path}: no {part!r} there") from None
    return item


def _block(name: str, data: dict[str, Any]) -> str:
    if name == "machine":
        lines = machine_lines(data["machine"], bool(data.get("quick")), str(data.get("run_at", "at an unknown time")))
    else:
        if name not in data["results"]:
            raise KeyError(
                f"benchmark {name!r} is not in the results (have: {', '.join(data['results'])}); "
                f"run it, or remove its <!-- bench:{name} --> block"
            )
        lines = section_lines(name, data["results"][name], level=3)
    return "\n".join(lines).rstrip() + "\n"


def _value(name: str, path: str, spec: Optional[str], data: dict[str, Any]) -> str:
    if name == "machine":
        value = lookup(data["machine"], path)
    elif name not in data["results"]:
        raise KeyError(f"value marker {name} {path}: benchmark {name!r} is not in the results")
    else:
        value = lookup(data["results"][name], path)
    return format(value, spec) if spec else _cell(value)


def render(page: str, data: dict[str, Any]) -> str:
    """``page`` with every marker block and inline value regenerated from ``data`` (run_all's JSON)."""
    page = BLOCK.sub(lambda m: m.group(1) + _block(m.group(2), data) + m.group(4), page)
    return VALUE.sub(lambda m: m.group(1) + _value(m.group(2), m.group(3), m.group(4), data) + m.group(6), page)


def markers(page: str) -> list[str]:
    """Names of the marker blocks in ``page``, in order."""
    return [m.group(2) for m in BLOCK.finditer(page)]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "results",
        nargs="?",
        type=Path,
        help=f"run_all.py's results.json to render (default: the kept copy, {DATA.relative_to(ROOT)})",
    )
    parser.add_argument("--page", type=Path, default=PAGE, help="the page with the markers")
    parser.add_argument("--check", action="store_true", help="exit 1 if the page differs from its rendering")
    args = parser.parse_args(argv)
    data_path = args.results or DATA
    data = json.loads(data_path.read_text(encoding="utf-8"))
    page = args.page.read_text(encoding="utf-8")
    new = render(page, data)
    if args.check:
        if new != page:
            print(
                f"{args.page} is stale or was edited inside a marker: run python tools/render_benchmarks.py",
                file=sys.stderr,
            )
            return 1
        print(f"{args.page}: up to date with {data_path}")
        return 0
    sys.path.insert(0, str(ROOT / "src"))
    from perface._io import atomic_write_bytes, atomic_write_text

    if args.results is not None and args.results.resolve() != DATA.resolve():
        atomic_write_bytes(DATA, args.results.read_bytes())
    atomic_write_text(args.page, new)
    print(f"{args.page}: rendered {len(markers(page))} blocks from {data_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
