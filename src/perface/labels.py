"""Labels CSVs: one row per item, a key column naming it, one column per label.

Every table of labels perface reads goes through :func:`read_labels`: attributes of pool photos
(``perface rank --labels``), attributes of evaluation images (``python -m perface.eval
attributes``), identities of original photos (``--identities``) and groups of triplets
(``--group-by FILE.csv:COLUMN``). The file is UTF-8 (a byte-order mark is allowed, as Excel
writes it), with a header row; names and values are stripped of surrounding spaces.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

__all__ = ["Labels", "read_labels"]


@dataclass(frozen=True)
class Labels:
    """A labels CSV as read: ``key`` names the column that identifies each row, ``columns`` the
    other columns in file order, ``rows`` one ``{column: value}`` per row with a non-empty key
    (empty cells are ``""``), in file order."""

    path: Path
    key: str
    columns: list[str]
    rows: list[dict[str, str]]

    def keys(self) -> list[str]:
        """The key of every row, in file order."""
        return [row[self.key] for row in self.rows]


def read_labels(
    path: Union[str, os.PathLike],
    key: Sequence[str] = ("file",),
    *,
    required: Sequence[str] = (),
    first_column_is_key: bool = False,
) -> Labels:
    """Read the labels CSV ``path``.

    ``key``: the accepted names of the key column, the first one present wins (e.g.
    ``("tripletId", "id")``); with ``first_column_is_key`` a file without any of them uses its
    first column. ``required``: columns that must be present. Raises ``FileNotFoundError`` for a
    missing file and ``ValueError`` naming the file, the missing column and the columns it has
    for an empty file or a missing key or required column.
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as fh:  # newline="": CRLF and quoted newlines
        reader = csv.DictReader(fh)
        header = [(name or "").strip() for name in (reader.fieldnames or [])]
        if not header:
            raise ValueError(f"labels file {path} is empty; it needs a header row like '{key[0]},gender,age'")
        reader.fieldnames = header
        raw = list(reader)
    found = next((k for k in key if k in header), header[0] if first_column_is_key else None)
    if found is None:
        raise ValueError(
            f"labels file {path} has no column {' or '.join(map(repr, key))}; its columns are {header}. "
            f"Fix: name the column that identifies each row {key[0]!r}"
        )
    missing = [c for c in required if c not in header]
    if missing:
        raise ValueError(f"labels file {path} has no column {', '.join(map(repr, missing))}; its columns are {header}")
    rows = []
    for row in raw:
        clean = {k: (v or "").strip() for k, v in row.items() if k is not None}
        if clean.get(found):
            rows.append(clean)
    return Labels(path, found, [c for c in header if c != found], rows)
