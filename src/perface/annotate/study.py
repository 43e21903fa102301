"""An annotation study on disk: the triplets to ask about, the catch trials, and what made them.

A study is a folder::

    study.json      what made the triplets (mode, seed, model and metric signature), the image
                    folders the server may serve from, and the sha256 of the two CSVs
    triplets.csv    the triplets, in the generic triplet CSV format that ``python -m perface.train``
                    and ``python -m perface.eval triplets`` read (its ``answer`` column is empty)
    catch.csv       the catch trials: one candidate is the reference image itself; ``expected``
                    names it (``a`` or ``b``)
    crops/          what annotators see when the study shows face crops (see :mod:`.display`)
    answers.sqlite  the answers, once ``perface annotate serve`` has run (see :mod:`.store`)

Image paths in the CSVs are relative to the study folder (or absolute), as the triplet CSV
format specifies.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Union

from .._io import atomic_dir
from .._version import __version__
from .display import crop_name

__all__ = ["Item", "Study", "write_study", "load_study", "portable_path", "STUDY_FILE", "FORMAT"]

STUDY_FILE = "study.json"
TRIPLETS_FILE = "triplets.csv"
CATCH_FILE = "catch.csv"
CROPS_DIR = "crops"
FORMAT = "perface-annotate-study"
SLOTS = ("reference", "a", "b")

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class Item:
    """One question: which of ``a`` and ``b`` looks more like ``reference``?

    ``kind``: how it was made (``random``, ``uncertain``, ``design``) or ``catch``. ``expected``:
    the right answer of a catch trial (``"a"``/``"b"``), else None. ``extra``: further CSV
    columns (``group``, ``sim_a``, ``sim_b`` ...), kept as text.
    """

    id: str
    reference: Path
    a: Path
    b: Path
    kind: str
    expected: Optional[str] = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def is_catch(self) -> bool:
        return self.kind == "catch"

    def path(self, slot: str) -> Path:
        """The image of ``slot`` (``reference``, ``a`` or ``b``)."""
        if slot not in SLOTS:
            raise KeyError(slot)
        return getattr(self, slot)


@dataclass(frozen=True)
class Study:
    """A study folder read back: its triplets, catch trials and manifest (``study.json``)."""

    root: Path
    triplets: tuple[Item, ...]
    catch: tuple[Item, ...]
    manifest: dict

    @property
    def roots(self) -> list[Path]:
        """The declared image folders (absolute): only images under them are served."""
        return [(self.root / r).resolve() for r in self.manifest["roots"]]

    @property
    def signature(self) -> Optional[str]:
        """The metric signature when a metric chose the triplets (``uncertain`` mode), else None."""
        return self.manifest.get("signature")

    @property
    def display(self) -> str:
        """``"crops"`` (annotators see aligned face crops from ``crops/``) or ``"photos"``."""
        return self.manifest.get("display", "photos")

    def shown(self, item: Item, slot: str) -> Path:
        """The file shown to annotators for ``slot`` of ``item``: its crop, or the photo itself."""
        path = item.path(slot)
        return self.root / CROPS_DIR / crop_name(path) if self.display == "crops" else path

    @property
    def sha256(self) -> str:
        """One hash of the study's questions (both CSVs): answers are tied to it."""
        digests = self.manifest["sha256"]
        return hashlib.sha256(f"{digests['triplets']}|{digests['catch']}".encode()).hexdigest()

    @property
    def items(self) -> dict[str, Item]:
        """Every question by id, triplets and catch trials."""
        return {item.id: item for item in self.triplets + self.catch}


def portable_path(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` when they share a folder below the filesystem's root (so a
    study moved together with its images still finds them), else absolute; POSIX slashes."""
    try:
        if Path(os.path.commonpath([path, root])) != Path(path.anchor):
            return Path(os.path.relpath(path, root)).as_posix()
    except ValueError:  # other drive on Windows
        pass
    return path.as_posix()


def _abs(base: Path, path: str) -> Path:
    """A CSV path (relative to the study folder, or absolute) as a normalized absolute path."""
    return Path(os.path.normpath(base / path))


def _csv_text(header: Sequence[str], rows: Sequence[dict[str, str]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(header), lineterminator="\n", extrasaction="raise")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _triplet_rows(items: Sequence[Item], root: Path) -> tuple[list[str], list[dict[str, str]]]:
    extra_cols: list[str] = []
    for item in items:
        extra_cols += [k for k in item.extra if k not in extra_cols]
    header = ["id", "reference", "a", "b", "answer", "kind"] + extra_cols
    rows = [
        {
            "id": t.id,
            "reference": portable_path(t.reference, root),
            "a": portable_path(t.a, root),
            "b": portable_path(t.b, root),
            "answer": "",
            "kind": t.kind,
            **{k: t.extra.get(k, "") for k in extra_cols},
        }
        for t in items
    ]
    return header, rows


def write_study(
    out: PathLike,
    triplets: Sequence[Item],
    catch: Sequence[Item],
    roots: Sequence[PathLike],
    mode: str,
    seed: int,
    model: Optional[str] = None,
    signature: Optional[str] = None,
    crops: Optional[dict[Path, bytes]] = None,
) -> Path:
    """Write a study folder ``out`` (created; built aside and moved into place when complete).

    ``crops``: PNG bytes of the face crop to show for each image (:func:`.display.face_crops`);
    None to show the photos themselves.

    Raises ``FileExistsError`` when ``out`` already holds a study: its answers belong to its
    triplets, so a new set of triplets goes into a new folder.
    """
    out = Path(out)
    if (out / STUDY_FILE).exists() or (out / "answers.sqlite").exists():
        raise FileExistsError(
            f"{out} already holds an annotation study (its answers belong to its triplets); choose a new --out folder"
        )
    root = out.resolve()
    header, rows = _triplet_rows(triplets, root)
    triplets_text = _csv_text(header, rows)
    catch_text = _csv_text(
        ["id", "reference", "a", "b", "expected"],
        [
            {
                "id": c.id,
                "reference": portable_path(c.reference, root),
                "a": portable_path(c.a, root),
                "b": portable_path(c.b, root),
                "expected": c.expected or "",
            }
            for c in catch
        ],
    )
    manifest = {
        "format": FORMAT,
        "version": 1,
        "perface": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "mode": mode,
        "seed": seed,
        "model": model,
        "signature": signature,
        "n_triplets": len(triplets),
        "n_catch": len(catch),
        "display": "crops" if crops is not None else "photos",
        "roots": sorted(
            {portable_path(Path(r).resolve(), root) for r in roots} | ({CROPS_DIR} if crops is not None else set())
        ),
        "triplets": TRIPLETS_FILE,
        "catch": CATCH_FILE,
        "sha256": {
            "triplets": hashlib.sha256(triplets_text.encode()).hexdigest(),
            "catch": hashlib.sha256(catch_text.encode()).hexdigest(),
        },
    }
    with atomic_dir(out) as tmp:
        (tmp / TRIPLETS_FILE).write_text(triplets_text, encoding="utf-8", newline="")
        (tmp / CATCH_FILE).write_text(catch_text, encoding="utf-8", newline="")
        for path, png in (crops or {}).items():
            (tmp / CROPS_DIR).mkdir(exist_ok=True)
            (tmp / CROPS_DIR / crop_name(path)).write_bytes(png)
        (tmp / STUDY_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return out


def _read_csv(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"{path}: missing column(s) {', '.join(missing)}; it was not written by 'perface annotate make'"
            )
        return list(reader)


def load_study(folder: PathLike) -> Study:
    """Read a study folder written by :func:`write_study` (``perface annotate make``).

    Raises ``FileNotFoundError`` when ``folder/study.json`` is missing and ``ValueError`` when a
    file is malformed or a CSV was edited after the study was made (its sha256 differs).
    """
    root = Path(folder)
    manifest_path = root / STUDY_FILE
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"{manifest_path} not found: {root} is not an annotation study; "
            "make one with 'perface annotate make FACES --out STUDY'"
        )
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{manifest_path}: not a perface annotation study (format {manifest.get('format')!r})")
    for key in ("triplets", "catch"):
        digest = hashlib.sha256((root / manifest[key]).read_bytes()).hexdigest()
        if digest != manifest["sha256"][key]:
            raise ValueError(
                f"{root / manifest[key]} was changed after the study was made (sha256 differs); "
                "answers belong to the questions they were given for: restore it or make a new study"
            )
    base = root.resolve()

    def slots(row: dict[str, str]) -> tuple[Path, Path, Path]:  # the SLOTS' paths, in order
        reference, a, b = (_abs(base, row[s]) for s in SLOTS)
        return reference, a, b

    triplets = []
    for row in _read_csv(root / manifest["triplets"], ("id", "reference", "a", "b", "kind")):
        extra = {k: v for k, v in row.items() if k not in ("id", "reference", "a", "b", "answer", "kind")}
        triplets.append(Item(row["id"], *slots(row), row["kind"], extra=extra))
    catch = [
        Item(row["id"], *slots(row), "catch", expected=row["expected"])
        for row in _read_csv(root / manifest["catch"], ("id", "reference", "a", "b", "expected"))
    ]
    ids = [i.id for i in triplets + catch]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{root}: question ids are not unique")
    return Study(base, tuple(triplets), tuple(catch), manifest)
