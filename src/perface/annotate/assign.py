"""Which question an annotator sees next, and how far along they are.

The order is a fixed shuffle per annotator (seeded by the annotator id and a secret kept in the
answers file), so a restarted server or a reloaded page resumes exactly where the annotator
left off. Catch trials are spread evenly between the triplets. With ``answers_per_triplet=K``
an annotator is only given triplets that have fewer than K answers (several annotators share
the work); with 0 everyone answers every triplet. Either way every catch trial goes to every
annotator.

The browser never sees item ids: each question is named by an opaque token (an HMAC of its id),
so an annotator cannot tell a catch trial from a triplet.
"""

from __future__ import annotations

import hashlib
import hmac
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Optional

from .store import AnswerStore
from .study import Item, Study

__all__ = ["Assigner", "Progress"]


@dataclass(frozen=True)
class Progress:
    """``done`` answers given, of ``total`` planned for this annotator (``total`` can shrink
    while others answer shared triplets)."""

    done: int
    total: int

    def to_dict(self) -> dict[str, int]:
        return {"done": self.done, "total": self.total}


class Assigner:
    """Hands out the questions of ``study`` to annotators, reading what was answered from
    ``store``. ``answers_per_triplet``: at most this many annotators per triplet (0: all)."""

    def __init__(self, study: Study, store: AnswerStore, answers_per_triplet: int = 0) -> None:
        if answers_per_triplet < 0:
            raise ValueError(f"answers_per_triplet must be >= 0, got {answers_per_triplet}")
        self.study, self.store, self.answers_per_triplet = study, store, answers_per_triplet
        self._secret = store.secret.encode()
        self._items = study.items
        self._tokens = {self.token(item_id): item_id for item_id in self._items}

    def token(self, item_id: str) -> str:
        """The opaque name of a question in URLs (16 hex digits)."""
        return hmac.new(self._secret, item_id.encode(), hashlib.sha256).hexdigest()[:16]

    def item(self, token: str) -> Optional[Item]:
        """The question named by ``token``, or None."""
        item_id = self._tokens.get(token)
        return None if item_id is None else self._items[item_id]

    def _order(self, annotator: str, items: Iterable[Item]) -> list[str]:
        ids = [item.id for item in items]
        random.Random(f"{self._secret.decode()}|{annotator}").shuffle(ids)
        return ids

    def next(self, annotator: str) -> tuple[Optional[Item], Progress]:
        """The next question for ``annotator`` (None when they are done) and their progress."""
        answered = self.store.answered(annotator)
        counts = self.store.counts() if self.answers_per_triplet else {}
        real = self._order(annotator, self.study.triplets)
        catch = self._order(annotator, self.study.catch)
        real_done = sum(1 for i in real if i in answered)
        catch_done = sum(1 for i in catch if i in answered)
        open_real = [
            i
            for i in real
            if i not in answered and (not self.answers_per_triplet or counts.get(i, 0) < self.answers_per_triplet)
        ]
        open_catch = [i for i in catch if i not in answered]
        progress = Progress(real_done + catch_done, real_done + catch_done + len(open_real) + len(open_catch))
        planned = real_done + len(open_real)
        catch_due = open_catch and (not open_real or real_done >= round((catch_done + 1) * planned / (len(catch) + 1)))
        if catch_due:
            return self._items[open_catch[0]], progress
        if open_real:
            return self._items[open_real[0]], progress
        return None, progress
