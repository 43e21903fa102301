"""Run every benchmark and write one JSON file and one markdown table with the machine details.

    python benchmarks/run_all.py [--quick] [--only loss train ...] [--threads N] [--out benchmarks/results]

The convention for ``benchmarks/bench_<name>.py``: define ``run(quick: bool = False) -> dict``
returning ``{"title": str, "rows": [dict, ...], "notes": [str, ...]}`` (rows become a table; any
other dict is shown flattened, ``key.sub: value``). A script without ``run`` is called as
``python bench_<name>.py [--quick] --json OUT`` instead. Each benchmark runs in its own Python
process (fresh allocator and thread pool); one failing does not stop the others, its error is
recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _util import machine_info

_CHILD = (
    "import json, sys; sys.path.insert(0, {here!r}); import {mod} as m; "
    "r = m.run(quick={quick}); open({out!r}, 'w').write(json.dumps(r, default=str))"
)


def discover() -> list[str]:
    """Names of the benchmarks: ``bench_<name>.py`` files beside this script, sorted."""
    return sorted(p.stem[len("bench_") :] for p in HERE.glob("bench_*.py"))


def run_one(name: str, quick: bool, timeout: Optional[float], threads: Optional[int] = None) -> dict[str, object]:
    """Run ``bench_<name>.run(quick)`` in a subprocess; the result dict, or ``{"error": ...}``."""
    script = HERE / f"bench_{name}.py"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        if "\ndef run(" in script.read_text():
            cmd = [sys.executable, "-c", _CHILD.format(here=str(HERE), mod=f"bench_{name}", quick=quick, out=str(out))]
        else:
            cmd = [sys.executable, str(script), *(["--quick"] if quick else []), "--json", str(out)]
        start = time.perf_counter()
        try:
            env = dict(
                os.environ, **({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else {})
            )
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=HERE.parent, env=env)
        except subprocess.TimeoutExpired:
            return {"title": name, "error": f"timed out after {timeout:g} s"}
        seconds = round(time.perf_counter() - start, 1)
        if proc.returncode != 0 or not out.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            return {"title": name, "error": f"exit {proc.returncode}: " + " | ".join(tail), "seconds": seconds}
        result = json.loads(out.read_text())
    if not isinstance(result, dict):
        result = {"title": name, "result": result}
    result.setdefault("title", name)
    result["seconds"] = seconds
    return result


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value).replace("|", "/")


def _flatten(d: dict[str, object], prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def machine_lines(machine: dict[str, object], quick: bool, run_at: str) -> list[str]:
    """The "Mode ... run at" line and the machine table."""
    lines = [f"Mode: {'quick' if quick else 'full'}; run {run_at}.", "", "| machine | |", "|---|---|"]
    return lines + [f"| {k} | {_cell(v)} |" for k, v in machine.items()]


def section_lines(name: str, res: dict[str, object], level: int = 2) -> list[str]:
    """One benchmark's heading, table (rows, or the flattened result) and notes."""
    lines = [f"{'#' * level} {res.get('title', name)} (`bench_{name}.py`, {res.get('seconds', '?')} s)", ""]
    if "error" in res:
        return lines + [f"**failed**: {res['error']}"]
    rows = res.get("rows")
    if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
        cols: list[str] = []
        for r in rows:
            cols += [c for c in r if c not in cols]
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(_cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    else:
        flat = _flatten({k: v for k, v in res.items() if k not in ("title", "seconds", "notes")})
        lines += ["| result | value |", "|---|---|"] + [f"| {k} | {_cell(v)} |" for k, v in flat.items()]
    notes = res.get("notes") or []
    return lines + [""] + [f"- {n}" for n in ([notes] if isinstance(notes, str) else notes)]


def markdown(
    results: dict[str, dict[str, object]], machine: dict[str, object], quick: bool, run_at: Optional[str] = None
) -> str:
    """The benchmark report: machine details, then one table per benchmark."""
    run_at = run_at or time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = ["# perface benchmarks", ""] + machine_lines(machine, quick, run_at)
    for name, res in results.items():
        lines += [""] + section_lines(name, res)
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    names = discover()
    parser = argparse.ArgumentParser(description="Run every perface benchmark.")
    parser.add_argument("--quick", action="store_true", help="small sizes, few iterations (minutes on a CPU)")
    parser.add_argument("--only", nargs="+", choices=names, metavar="NAME", help=f"subset of {names}")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for results.json / results.md")
    parser.add_argument("--timeout", type=float, default=None, help="seconds allowed per benchmark")
    parser.add_argument(
        "--threads",
        type=int,
        help="CPU threads for every benchmark (OMP_NUM_THREADS; default: "
        "torch's choice). On a machine shared with other jobs, 1 avoids spinning thread pools",
    )
    args = parser.parse_args(argv)
    machine = machine_info()
    machine["threads_requested"] = args.threads or "default"
    run_at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results: dict[str, dict[str, object]] = {}
    for name in args.only or names:
        print(f"[run_all] bench_{name} ...", flush=True)
        results[name] = run_one(name, args.quick, args.timeout, args.threads)
        print(
            f"[run_all] bench_{name}: "
            + (
                "failed: " + str(results[name]["error"])
                if "error" in results[name]
                else f"{results[name]['seconds']} s"
            ),
            flush=True,
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(
        json.dumps(
            {"machine": machine, "quick": args.quick, "run_at": run_at, "results": results}, indent=2, default=str
        )
    )
    text = markdown(results, machine, args.quick, run_at)
    (args.out / "results.md").write_text(text)
    print(text)
    print(
        f"[run_all] to put these numbers into docs/benchmarks.md: python tools/render_benchmarks.py "
        f"{args.out / 'results.json'}"
    )
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
