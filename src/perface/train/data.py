"""Triplet judgment sets: SimCelebA folders and generic CSVs of people's answers.

A triplet is a reference face and two candidates ``a`` and ``b``; each annotator answered which
candidate looks more like the reference. The majority answer is the *positive*, the other the
*negative*. SimCelebA calls the full set D1 and its unanimous triplets D2.

Formats:

- **SimCelebA** (as released): a folder of ``t####_a.jpg``, ``t####_b.jpg``, ``t####_c.jpg``
  (224x224 crops, ``c`` = reference) and ``triplet_answers.csv`` with the header
  ``tripletId,ans1,ans2,ans3`` and answers ``a``/``b`` (CRLF line endings are fine).
- **Generic CSV** (your own judgments): columns ``reference``, ``a``, ``b`` (image paths,
  relative to the CSV's folder or absolute), one or more answer columns whose names start with
  ``ans`` (``answer``, ``ans1``, ``ans2`` ...; values ``a``/``b``, empty = no answer) and an
  optional ``id`` column. The images are photos (faces are detected and aligned) unless they
  are declared crops aligned to a named template.
"""

from __future__ import annotations

import csv
import hashlib
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional, Union

__all__ = [
    "Triplet",
    "TripletSet",
    "load_simceleba",
    "load_triplet_csv",
    "load_triplets",
    "find_unreadable",
    "drop_failed",
    "describe_failures",
    "write_failure_list",
    "SIMCELEBA_TEMPLATE",
]

SIMCELEBA_TEMPLATE = "simceleba"
_ANSWERS = {"a": "a", "b": "b"}
_SIMCELEBA_ID = re.compile(r"^t(\d+)$")

PathLike = Union[str, Path]


@dataclass(frozen=True)
class Triplet:
    """One judged triplet. ``answers``: each annotator's choice, ``"a"`` or ``"b"``."""

    id: str
    reference: Path
    a: Path
    b: Path
    answers: tuple[str, ...]

    @property
    def votes_a(self) -> int:
        return sum(ans == "a" for ans in self.answers)

    @property
    def majority(self) -> Optional[str]:
        """``"a"`` or ``"b"``, or None on a tie (no majority)."""
        votes_a, votes_b = self.votes_a, len(self.answers) - self.votes_a
        return None if votes_a == votes_b else ("a" if votes_a > votes_b else "b")

    @property
    def unanimous(self) -> bool:
        return len(self.answers) > 0 and len(set(self.answers)) == 1

    @property
    def positive(self) -> Path:
        """The candidate most annotators chose (raises on a tie)."""
        if self.majority is None:
            raise ValueError(f"triplet {self.id}: answers {self.answers} have no majority")
        return self.a if self.majority == "a" else self.b

    @property
    def negative(self) -> Path:
        return self.b if self.positive == self.a else self.a

    @property
    def paths(self) -> tuple[Path, Path, Path]:
        return (self.reference, self.a, self.b)


@dataclass(frozen=True)
class TripletSet:
    """Triplets plus what is needed to read their images.

    ``images``: ``"crops"`` (already aligned to ``template``, only resized) or ``"photos"``
    (detected and aligned on load). ``sha256``: hash of the answers file, for model cards.
    ``skipped``: ids of triplets left out because an image was unusable; ``unreadable``: those
    images as ``(path, problem)``, e.g. ``"missing"``, ``"empty"``, ``"not an image"``, ``"no face"``.
    """

    triplets: tuple[Triplet, ...]
    images: str
    template: Optional[str]
    source: str
    sha256: str
    skipped: tuple[str, ...] = field(default=())
    unreadable: tuple[tuple[Path, str], ...] = field(default=())

    def __len__(self) -> int:
        return len(self.triplets)

    @property
    def ids(self) -> list[str]:
        return [t.id for t in self.triplets]

    def subset(self, ids: Iterable[str]) -> TripletSet:
        """The triplets whose id is in ``ids``, in this set's order."""
        keep = set(ids)
        return replace(self, triplets=tuple(t for t in self.triplets if t.id in keep))

    def majority_only(self) -> TripletSet:
        """D1: every triplet with a majority answer (ties dropped)."""
        return replace(self, triplets=tuple(t for t in self.triplets if t.majority is not None))

    def unanimous_only(self) -> TripletSet:
        """D2: the triplets every annotator answered alike (the paper's consistent triplets)."""
        return replace(self, triplets=tuple(t for t in self.triplets if t.unanimous))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _answer(value: str, where: str) -> Optional[str]:
    value = value.strip().lower()
    if value == "":
        return None
    if value not in _ANSWERS:
        raise ValueError(f"{where}: answer {value!r} is not 'a' or 'b'")
    return _ANSWERS[value]


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    if not path.is_file():
        raise FileNotFoundError(f"answers file {path} not found")
    with open(path, newline="", encoding="utf-8-sig") as fh:  # newline="" handles CRLF
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        rows = [row for row in reader if any((v or "").strip() for v in row.values())]
    return header, rows


def find_unreadable(paths: Iterable[Path]) -> list[tuple[Path, str]]:
    """``(path, problem)`` for each path that is ``"missing"``, ``"empty"`` (0 bytes) or ``"not an
    image"`` (PIL cannot identify it; only the header is read)."""
    from PIL import Image, UnidentifiedImageError

    bad = []
    for path in paths:
        try:
            if path.stat().st_size == 0:
                bad.append((path, "empty"))
                continue
            with Image.open(path):
                pass  # opening parses the header: enough to know it is an image
        except FileNotFoundError:
            bad.append((path, "missing"))
        except (OSError, UnidentifiedImageError):
            bad.append((path, "not an image"))
    return bad


def _fix_hint(triplets: TripletSet, failed: Sequence[tuple[Path, str]], n_images: int) -> str:
    """What to do about the ``failed`` images of ``triplets``."""
    missing = sum(why == "missing" for _, why in failed)
    if triplets.template == SIMCELEBA_TEMPLATE and triplets.images == "crops" and triplets.triplets:
        folder = triplets.triplets[0].reference.parent
        if missing * 2 >= n_images:
            return (
                f"SimCelebA's images are distributed separately from its answers file: put the "
                f"t####_{{a,b,c}}.jpg crops into {folder} (see docs/reproducing.md)"
            )
        return (
            "copy or extract the listed files again (the public SimCelebA archive's empty t4963_c.jpg "
            "is expected and costs one triplet)"
        )
    if missing:
        return (
            f"image paths in {triplets.source} are relative to its folder ({Path(triplets.source).parent}) "
            "unless absolute: check them"
        )
    return "replace the listed files with readable images"


def describe_failures(
    source: str,
    failed: Sequence[tuple[Path, str]],
    n_images: int,
    skipped: Sequence[str],
    n_triplets: int,
    fix: str,
    missing_list: Optional[PathLike] = None,
    shown: int = 3,
) -> str:
    """One line about images that could not be used: counts by problem, the first ``shown``
    names, the triplets skipped, ``fix``, and where the full list is (``missing_list``)."""
    from collections import Counter

    base = Path(source).parent
    counts = Counter(why for _, why in failed)
    kinds = ", ".join(f"{n:,} {why}" for why, n in counts.most_common())

    def name(path: Path) -> str:
        try:
            return str(path.relative_to(base))
        except ValueError:
            return str(path)

    first = ", ".join(f"{name(p)} ({why})" for p, why in failed[:shown])
    more = f" and {len(failed) - shown:,} more" if len(failed) > shown else ""
    listed = (
        f"Full list in {missing_list}"
        if missing_list is not None
        else "Write the full list with --missing-list FILE (or read the set's .unreadable)"
    )
    return (
        f"{source}: {len(failed):,} of {n_images:,} images unusable ({kinds}): {first}{more}; "
        f"{len(skipped):,} of {n_triplets:,} triplets skipped. Fix: {fix}. {listed}."
    )


def write_failure_list(path: PathLike, failed: Sequence[tuple[Path, str]], triplets: Sequence[Triplet]) -> Path:
    """CSV ``path,problem,triplets`` (one row per unusable image; triplet ids space-separated)."""
    import io

    from .._io import atomic_write_text

    users: dict[Path, list[str]] = {}
    for t in triplets:
        for p in set(t.paths):
            users.setdefault(p, []).append(t.id)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "problem", "triplets"])
    writer.writerows([str(p), why, " ".join(users.get(p, []))] for p, why in failed)
    return atomic_write_text(path, buf.getvalue())


def drop_failed(
    triplets: TripletSet,
    failed: Sequence[tuple[Path, str]],
    fix: Optional[str] = None,
    missing_list: Optional[PathLike] = None,
    n_images: Optional[int] = None,
) -> TripletSet:
    """``triplets`` without those using a ``failed`` image; ``failed`` is added to ``.unreadable``.

    All failures so far are written to ``missing_list`` (if given). Some triplets left: one
    summary warning (:func:`describe_failures`). None left: :class:`~perface.ImageReadError`
    with the same summary.
    """
    from ..errors import ImageReadError

    if not failed:
        return triplets
    bad = {p for p, _ in failed}
    every = triplets.unreadable + tuple(failed)
    if missing_list is not None:
        write_failure_list(missing_list, every, triplets.triplets)
    skipped = tuple(t.id for t in triplets.triplets if bad.intersection(t.paths))
    kept = tuple(t for t in triplets.triplets if not bad.intersection(t.paths))
    images = n_images if n_images is not None else len({p for t in triplets.triplets for p in t.paths})
    message = describe_failures(
        triplets.source,
        failed,
        images,
        skipped,
        len(triplets),
        fix or _fix_hint(triplets, failed, images),
        missing_list,
    )
    if not kept:
        raise ImageReadError(message)
    warnings.warn(message, stacklevel=3)
    return replace(triplets, triplets=kept, skipped=triplets.skipped + skipped, unreadable=every)


def _checked(triplets: TripletSet, check_images: bool, missing_list: Optional[PathLike]) -> TripletSet:
    if not check_images:
        return triplets
    return drop_failed(
        triplets, find_unreadable(sorted({p for t in triplets.triplets for p in t.paths})), missing_list=missing_list
    )


def load_simceleba(
    root: PathLike,
    answers: Optional[PathLike] = None,
    check_images: bool = True,
    missing_list: Optional[PathLike] = None,
) -> TripletSet:
    """SimCelebA (or a set in its format) from folder ``root``.

    ``answers`` defaults to ``root/triplet_answers.csv``. Triplets whose images are missing, empty
    or unreadable are skipped with one summary warning (counts, the first few files, the fix);
    ``missing_list``: also write every such image to this CSV (``path,problem,triplets``).
    Raises :class:`~perface.ImageReadError` when no triplet has all three images (e.g. the
    answers file without the images, which SimCelebA distributes separately).
    ``check_images=False`` skips the check, e.g. to inspect the answers without the images.
    """
    root = Path(root)
    answers_path = Path(answers) if answers is not None else root / "triplet_answers.csv"
    header, rows = _read_rows(answers_path)
    if "tripletId" not in header:
        raise ValueError(f"{answers_path}: expected a 'tripletId' column (SimCelebA format), got {header}")
    answer_cols = [h for h in header if h.lower().startswith("ans")]
    if not answer_cols:
        raise ValueError(f"{answers_path}: no answer columns (ans1, ans2, ...) in header {header}")
    triplets = []
    for line, row in enumerate(rows, start=2):
        tid = row["tripletId"].strip()
        if not _SIMCELEBA_ID.match(tid):
            raise ValueError(f"{answers_path}, line {line}: triplet id {tid!r} is not of the form t0123")
        where = f"{answers_path}, line {line}"
        votes = tuple(a for a in (_answer(row[c] or "", where) for c in answer_cols) if a is not None)
        triplets.append(Triplet(tid, root / f"{tid}_c.jpg", root / f"{tid}_a.jpg", root / f"{tid}_b.jpg", votes))
    found = TripletSet(tuple(triplets), "crops", SIMCELEBA_TEMPLATE, str(answers_path), _sha256(answers_path))
    return _checked(found, check_images, missing_list)


def load_triplet_csv(
    path: PathLike,
    images: str = "photos",
    template: Optional[str] = None,
    check_images: bool = True,
    missing_list: Optional[PathLike] = None,
) -> TripletSet:
    """A generic triplet CSV (see the module docstring).

    ``images="photos"``: faces are detected and aligned when loaded. ``images="crops"``: the files
    are face crops aligned to ``template`` (e.g. ``"arcface"``, ``"simceleba"``), only resized.
    Unusable images: as in :func:`load_simceleba`.
    """
    path = Path(path)
    if images not in ("photos", "crops"):
        raise ValueError(f"images must be 'photos' or 'crops', got {images!r}")
    if images == "crops" and not template:
        raise ValueError("images='crops' needs the template the crops are aligned to (e.g. 'arcface')")
    header, rows = _read_rows(path)
    missing = [c for c in ("reference", "a", "b") if c not in header]
    answer_cols = [h for h in header if h.lower().startswith("ans")]
    if missing or not answer_cols:
        raise ValueError(
            f"{path}: a triplet CSV needs columns reference, a, b and at least one answer "
            f"column (answer, ans1, ...); missing {missing or 'answer columns'} in header {header}"
        )
    base = path.parent
    triplets = []
    for line, row in enumerate(rows, start=2):
        where = f"{path}, line {line}"
        tid = (row.get("id") or "").strip() or f"row{line}"
        votes = tuple(a for a in (_answer(row[c] or "", where) for c in answer_cols) if a is not None)
        ref, a, b = (base / row[c].strip() for c in ("reference", "a", "b"))
        triplets.append(Triplet(tid, ref, a, b, votes))
    if len({t.id for t in triplets}) != len(triplets):
        raise ValueError(f"{path}: the 'id' column has duplicates; ids must be unique")
    found = TripletSet(tuple(triplets), images, template if images == "crops" else None, str(path), _sha256(path))
    return _checked(found, check_images, missing_list)


def load_triplets(
    data: PathLike,
    answers: Optional[PathLike] = None,
    images: Optional[str] = None,
    template: Optional[str] = None,
    check_images: bool = True,
    missing_list: Optional[PathLike] = None,
) -> TripletSet:
    """A folder in SimCelebA format, or a generic triplet CSV file (chosen by what ``data`` is)."""
    data = Path(data)
    if data.is_dir():
        if images not in (None, "crops") or template not in (None, SIMCELEBA_TEMPLATE):
            raise ValueError(
                f"{data} is a SimCelebA-format folder: its images are crops aligned to the "
                f"{SIMCELEBA_TEMPLATE!r} template; --images/--template do not apply"
            )
        return load_simceleba(data, answers, check_images=check_images, missing_list=missing_list)
    if data.suffix.lower() == ".csv":
        return load_triplet_csv(
            data, images or "photos", template, check_images=check_images, missing_list=missing_list
        )
    raise FileNotFoundError(f"--data {data}: expected a SimCelebA-format folder or a triplet .csv file")


def grid_ids(ids: Sequence[str]) -> list[int]:
    """The integers of SimCelebA-style ids ``t0123`` (for the grid protocols)."""
    out = []
    for tid in ids:
        match = _SIMCELEBA_ID.match(tid)
        if not match:
            raise ValueError(f"triplet id {tid!r} is not of the form t0123; the grid protocols need SimCelebA ids")
        out.append(int(match.group(1)))
    return out
