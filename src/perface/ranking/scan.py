"""Which files of a pool folder are embedded, and why each other file is not.

Every file below the pool folder is accounted for: image files go to the embedder; every other
file is *skipped* with a reason (not an image file, a HEIC photo while its reader pillow-heif is
missing, a broken link, a pipe). Hidden files and folders (names starting with ``.``) are not
part of a pool; links to folders are followed once each.
"""

from __future__ import annotations

import importlib.util
import os
import stat
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Optional, Union

from ..imageio import IMAGE_SUFFIXES

__all__ = ["HEIF_SUFFIXES", "walk_pool", "classify", "scan_pool"]

HEIF_SUFFIXES = frozenset({".heic", ".heif", ".hif"})  # iPhone photos; read through pillow-heif

PathLike = Union[str, os.PathLike]


def walk_pool(root: Path, exclude: Sequence[Path]) -> list[tuple[str, Optional[str]]]:
    """(relative name, problem) of every non-hidden entry below ``root``, sorted; the problem
    is None for a regular file (or a link to one). Links to folders are followed once."""
    if not root.is_dir():
        raise NotADirectoryError(f"pool folder {root} does not exist or is not a folder; pass a folder of photos")
    excluded = {os.path.realpath(p) for p in exclude}
    seen = set()
    found: list[tuple[str, Optional[str]]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen or real in excluded:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel_dir = PurePosixPath(Path(dirpath).relative_to(root).as_posix())
        for name in filenames:
            if name.startswith("."):
                continue
            try:
                mode = os.stat(os.path.join(dirpath, name)).st_mode
                problem = None if stat.S_ISREG(mode) else "not a regular file (a device, pipe or socket)"
            except FileNotFoundError:
                problem = "broken symbolic link: its target does not exist"
            except OSError as exc:
                problem = f"cannot be read ({exc.strerror})"
            found.append(((rel_dir / name).as_posix(), problem))
    return sorted(found)


def _heif_reader_installed() -> bool:
    return importlib.util.find_spec("pillow_heif") is not None


def _skip_reason(name: str) -> Optional[str]:
    """Why ``name`` is not handed to the embedder, or None when it is an image file."""
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in HEIF_SUFFIXES and not _heif_reader_installed():
        return "HEIC/HEIF photo: reading it needs the optional package pillow-heif (pip install pillow-heif)"
    if suffix not in IMAGE_SUFFIXES and suffix not in HEIF_SUFFIXES:
        known = ", ".join(sorted(IMAGE_SUFFIXES | HEIF_SUFFIXES))
        return f"not an image file ({suffix or 'no extension'}); pool photos must be one of {known}"
    return None


def classify(entries: Sequence[tuple[str, Optional[str]]]) -> tuple[list[str], dict[str, str]]:
    names, skipped = [], {}
    for name, problem in entries:
        reason = problem or _skip_reason(name)
        if reason is None:
            names.append(name)
        else:
            skipped[name] = reason
    return names, skipped


def scan_pool(root: PathLike, *, exclude: Sequence[PathLike] = ()) -> tuple[list[str], dict[str, str]]:
    """Every file under ``root`` (recursive), sorted relative POSIX paths, split into image
    files to embed and skipped files -> reason (not an image file, HEIC without pillow-heif,
    broken link). Hidden files and folders (names starting with ``.``) and the ``exclude``
    folders (e.g. a cache folder inside the pool) are left out.

    Raises ``NotADirectoryError`` naming the path when ``root`` is not a folder.
    """
    return classify(walk_pool(Path(root), [Path(p) for p in exclude]))
