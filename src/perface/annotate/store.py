"""The answers of a study, durable the moment they are given: one SQLite file.

Each answer is one row ``(annotator, item, answer, ms, at)``, unique per (annotator, item). It
is committed before the server replies, in SQLite's write-ahead-log mode with
``synchronous=FULL``: the log is fsync'ed at every commit, so an answer the annotator saw
accepted survives a crash, a ``kill -9`` or a power cut, and a half-written answer is never
seen (SQLite's commits are atomic). Giving the same answer twice (a page retrying after a lost
connection) is recorded once; a *different* second answer for the same item is refused
(:class:`AnswerConflict`), so no answer is ever duplicated or silently replaced.

Nothing about the annotator is stored but the id they typed: no address, no browser string.
``ms`` is the time from the images being shown to the answer, ``at`` the UTC time of the answer.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Union

from ..errors import PerFaceError

__all__ = ["AnswerStore", "Answer", "AnswerConflict", "check_annotator", "ANNOTATOR_PATTERN", "STORE_FILE"]

STORE_FILE = "answers.sqlite"
ANNOTATOR_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}"
_ANNOTATOR = re.compile(ANNOTATOR_PATTERN)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS answers (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    annotator TEXT NOT NULL,
    item TEXT NOT NULL,
    answer TEXT NOT NULL CHECK (answer IN ('a', 'b')),
    ms INTEGER CHECK (ms IS NULL OR ms >= 0),
    at TEXT NOT NULL,
    UNIQUE (annotator, item)
);
"""


class AnswerConflict(PerFaceError, ValueError):
    """A second, different answer for an item the annotator already answered."""


@dataclass(frozen=True)
class Answer:
    """One stored answer. ``seq``: order of arrival (1, 2, ...)."""

    seq: int
    annotator: str
    item: str
    answer: str
    ms: Optional[int]
    at: str


def check_annotator(annotator: object) -> str:
    """``annotator`` if it is a valid id: 1-32 letters, digits, ``_`` or ``-``, starting with a
    letter or digit (a pseudonym such as ``rater07``; no names or e-mail addresses). Raises
    ``ValueError`` otherwise."""
    if not isinstance(annotator, str) or not _ANNOTATOR.fullmatch(annotator):
        raise ValueError(
            f"annotator id {annotator!r} is not valid: use 1-32 letters, digits, '_' or '-' "
            "(a pseudonym such as rater07, not a name or e-mail address)"
        )
    return annotator


class AnswerStore:
    """The answers file of a study (``STUDY/answers.sqlite``), created on first use.

    ``study``: the study's sha256; a store made for other questions is refused with
    ``ValueError``. Safe to share between threads of one process (one connection under a lock);
    the annotation server holds a lock file so that one process writes at a time.
    """

    def __init__(self, path: Union[str, Path], study: str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            with self._transaction():
                self._db.execute("INSERT OR IGNORE INTO meta VALUES ('study', ?)", (study,))
                self._db.execute("INSERT OR IGNORE INTO meta VALUES ('secret', ?)", (secrets.token_hex(16),))
            stored = self._meta("study")
        except BaseException:
            self._db.close()
            raise
        if stored != study:
            self._db.close()
            raise ValueError(
                f"{self.path} holds answers to other questions (study sha256 {stored[:12]}, "
                f"this study {study[:12]}); keep each study's answers in its own folder"
            )

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _meta(self, key: str) -> str:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0]

    @property
    def secret(self) -> str:
        """A random value made with the store (for the server's opaque item tokens)."""
        with self._lock:
            return self._meta("secret")

    def record(self, annotator: str, item: str, answer: str, ms: Optional[int] = None) -> bool:
        """Store an answer durably. Returns True when stored now, False when the same answer was
        already stored (a retry). Raises :class:`AnswerConflict` when a different answer is
        stored, ``ValueError`` for an invalid annotator id or answer."""
        check_annotator(annotator)
        if answer not in ("a", "b"):
            raise ValueError(f"answer {answer!r} is not 'a' or 'b'")
        at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        with self._lock, self._transaction():
            cur = self._db.execute(
                "INSERT INTO answers (annotator, item, answer, ms, at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (annotator, item) DO NOTHING",
                (annotator, item, answer, ms, at),
            )
            if cur.rowcount == 1:
                return True
            stored = self._db.execute(
                "SELECT answer FROM answers WHERE annotator = ? AND item = ?", (annotator, item)
            ).fetchone()[0]
        if stored != answer:
            raise AnswerConflict(
                f"annotator {annotator} already answered {stored!r} for this item; an answer cannot be changed"
            )
        return False

    def answered(self, annotator: str) -> dict[str, str]:
        """``{item: answer}`` of one annotator."""
        with self._lock:
            rows = self._db.execute("SELECT item, answer FROM answers WHERE annotator = ?", (annotator,)).fetchall()
        return dict(rows)

    def counts(self) -> dict[str, int]:
        """``{item: number of answers}`` over all annotators."""
        with self._lock:
            return dict(self._db.execute("SELECT item, COUNT(*) FROM answers GROUP BY item").fetchall())

    def answers(self) -> list[Answer]:
        """Every answer, in order of arrival."""
        with self._lock:
            rows = self._db.execute("SELECT seq, annotator, item, answer, ms, at FROM answers ORDER BY seq").fetchall()
        return [Answer(*row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> AnswerStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
