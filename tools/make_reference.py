"""Measure the reference set that ``perface.reference.reading`` uses to explain a similarity.

    python tools/make_reference.py                          # every embedded model, ../shared/data/faces
    python tools/make_reference.py --model sface --faces DIR --out src/perface/data
    python tools/make_reference.py --check                  # exit 1 if a shipped file is stale

Every photo of ``--faces`` is embedded through the photo pipeline (detect, align, embed, as
``perface.similarity`` does) with each model, and the cosine similarity of every pair is written
to ``OUT/reference_<model>.json`` with the photo list (sha256 of each file) and the metric
signature.

Who is in each photo comes from its file name: ``--person NAME=GLOB`` (repeatable); the defaults
fit the shared photos (``obama*``, ``biden*``, ``grace_hopper*``, ``astronaut*``). A file that
matches no pattern stops the tool.

Duplicates: two files that show the same photo (same aspect ratio, and their 64x64 grey
thumbnails differ by at most 3 of 255 levels on average: re-encoding, another format or an opaque
alpha channel leave a photo the same) are measured once; the first in sorted order is kept and
the others are listed under ``excluded``. A photo paired with its own copy measures encoding
noise (cosine 0.9998 for ``obama2.jpg`` / ``obama2_rgba.png``), not how two photos of one person
compare, and a copy would count every pair of that photo twice.

``--check`` recomputes and compares with the files in ``--out`` (largest difference per model,
tolerance ``--tolerance``), writing nothing.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import perface
from perface._io import atomic_write_text
from perface.imageio import IMAGE_SUFFIXES
from perface.reference import ReferenceSet, compute_reference

NAME = "shared-faces-v1"
DEFAULT_FACES = ROOT.parent / "shared" / "data" / "faces"
DEFAULT_OUT = ROOT / "src" / "perface" / "data"
DEFAULT_PEOPLE = ("obama=obama*", "biden=biden*", "grace_hopper=grace_hopper*", "astronaut=astronaut*")
DUPLICATE_LEVELS = 3.0  # mean absolute difference of 64x64 grey thumbnails, in 0..255 levels
THUMB = 64


def person_of(file: str, patterns: Sequence[tuple[str, str]]) -> str:
    """The person whose pattern (first match) the file name matches; ``ValueError`` if none does."""
    for name, glob in patterns:
        if fnmatch.fnmatch(file, glob):
            return name
    raise ValueError(
        f"{file}: matches no --person pattern ({', '.join(g for _, g in patterns)}); "
        "add one, e.g. --person NAME='PREFIX*'"
    )


def _thumbnail(path: Path):
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        size = im.size
        grey = im.convert("RGBA").convert("L").resize((THUMB, THUMB), Image.BILINEAR)
        return size[0] / size[1], np.asarray(grey, dtype=np.float32)


def find_duplicates(files: Sequence[Path]) -> dict[Path, Path]:
    """``{copy: kept file}`` for files showing the same photo as an earlier file (see the module
    docstring for the rule)."""
    thumbs = [_thumbnail(f) for f in files]
    copies: dict[Path, Path] = {}
    for j in range(len(files)):
        for i in range(j):
            if files[i] in copies:
                continue
            (ratio_i, ti), (ratio_j, tj) = thumbs[i], thumbs[j]
            if abs(ratio_i - ratio_j) <= 0.01 * ratio_i and float(abs(ti - tj).mean()) <= DUPLICATE_LEVELS:
                copies[files[j]] = files[i]
                break
    return copies


def build(model: str, faces: Path, patterns: Sequence[tuple[str, str]], progress: bool = True) -> ReferenceSet:
    """The reference set of the photos in ``faces`` under ``model``."""
    files = sorted(p for p in faces.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SystemExit(f"make_reference: no photos in {faces}")
    copies = find_duplicates(files)
    used = [f for f in files if f not in copies]
    people = [person_of(f.name, patterns) for f in used]
    excluded = [
        {"file": c.name, "reason": f"same photo as {k.name} (duplicate, measured once)"} for c, k in copies.items()
    ]
    n_people = len(set(people))
    description = (
        f"{len(used)} photos of {n_people} people from the perface test photos "
        f"(shared/data/faces: {', '.join(f.name for f in files)}); person from the file name "
        f"({', '.join(g for _, g in patterns)}); {len(copies)} duplicate(s) measured once. "
        "Made by tools/make_reference.py."
    )
    metric = perface.PerFace(model)
    return compute_reference(
        used, people, metric, name=NAME, description=description, excluded=excluded, progress=progress
    )


def _embedded_models() -> list[str]:
    from perface.registry import MODELS

    return sorted(n for n, s in MODELS.items() if s.weights is not None and s.weights.kind == "embedded")


def compare(new: ReferenceSet, old: ReferenceSet) -> Optional[float]:
    """Largest difference between matching pairs, or ``None`` if the photo lists differ."""
    key = lambda p: (p.a, p.b)
    a, b = {key(p): p.similarity for p in new.pairs}, {key(p): p.similarity for p in old.pairs}
    if a.keys() != b.keys() or new.photos != old.photos:
        return None
    return max((abs(a[k] - b[k]) for k in a), default=0.0)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--faces", type=Path, default=DEFAULT_FACES, help="folder of photos of known people")
    parser.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="NAME",
        help="checkpoint to measure; repeat for several (default: every embedded model)",
    )
    parser.add_argument(
        "--person",
        action="append",
        dest="people",
        metavar="NAME=GLOB",
        help=f"who is in which files, first match wins (default: {' '.join(DEFAULT_PEOPLE)})",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder of reference_<model>.json")
    parser.add_argument("--check", action="store_true", help="compare with the files in --out, write nothing")
    parser.add_argument("--tolerance", type=float, default=0.005, help="--check: largest difference allowed")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    patterns = [tuple(p.split("=", 1)) for p in (args.people or DEFAULT_PEOPLE)]
    if any(len(p) != 2 for p in patterns):
        parser.error("--person takes NAME=GLOB")
    stale = 0
    for model in args.models or _embedded_models():
        ref = build(model, args.faces, patterns, progress=not args.quiet)
        path = args.out / f"reference_{model}.json"
        same, diff = ref.values(True), ref.values(False)
        print(
            f"{model}: {len(ref.photos)} photos, {ref.people} people; same-person {len(same)} pairs "
            f"{same[0]:.3f}..{same[-1]:.3f}; different-person {len(diff)} pairs {diff[0]:.3f}..{diff[-1]:.3f}"
        )
        if args.check:
            old = ReferenceSet.from_dict(json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else None
            delta = compare(ref, old) if old is not None else None
            ok = delta is not None and delta <= args.tolerance and old.signature == ref.signature
            stale += not ok
            print(
                f"  {path}: "
                + (
                    "missing"
                    if old is None
                    else "other photos"
                    if delta is None
                    else f"largest difference {delta:.2g}, signature "
                    f"{'same' if old.signature == ref.signature else 'differs'}"
                )
                + ("" if ok else " -> STALE: rerun tools/make_reference.py")
            )
            continue
        atomic_write_text(path, json.dumps(ref.to_dict(), indent=1) + "\n")
        print(f"  written {path}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
