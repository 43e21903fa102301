"""Readings from data: where a similarity falls among measured same- and different-person pairs.

A cosine similarity of 0.75 means nothing on its own: whether it is high depends on the model.
A *reference set* is a small, named set of real photos of known people. For each shipped model,
``tools/make_reference.py`` embeds them through the photo pipeline (detect, align, embed, as
:func:`perface.similarity` does) and stores the similarity of every pair of photos, with the
photo list and the metric signature, in ``perface/data/reference_<model>.json``.
:func:`reading` then places a value among those pairs; for ``sface``, ``str(reading(0.75))`` is

    0.750: above all 15 different-person pairs (highest 0.259); below 3 of 6 same-person
    pairs (0.653 to 0.922). Reference set 'shared-faces-v1': 21 pairs of 7 photos
    of 4 people, model sface@0f0fbaa2; too few to calibrate a threshold.

The set shipped today is tiny (7 photos, 4 people, 21 pairs): a reading says where a value sits
among those pairs, not how likely two faces are the same person, and every reading says so.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from .registry import DEFAULT_MODEL

if TYPE_CHECKING:
    from .model import PerFace

__all__ = ["ReferencePair", "ReferenceSet", "Reading", "available", "load_reference", "compute_reference", "reading"]

FORMAT = 1
TIE = 5e-4  # values closer than this to the score count as equal (they print the same to 3 decimals)
_MATCH_FIELDS = ("model", "det", "align", "tpl", "size", "prec")  # what moves the numbers (not the version)


@dataclass(frozen=True)
class ReferencePair:
    """One pair of reference photos: file names ``a`` and ``b``, whether they show the same person,
    and their cosine ``similarity`` in [-1, 1]."""

    a: str
    b: str
    same_person: bool
    similarity: float


@dataclass(frozen=True)
class ReferenceSet:
    """Every pair of a reference set's photos under one metric.

    Attributes:
        name: short name of the set, quoted in every reading (e.g. ``shared-faces-v1``).
        description: where the photos come from and how duplicates were treated.
        model: checkpoint name the similarities were computed with.
        signature: the metric signature (:func:`perface.signature.signature_of` with
            ``align="detect"``) that made the numbers.
        photos: ``{"file", "person", "sha256"}`` per photo used.
        excluded: ``{"file", "reason"}`` per photo left out (duplicates, no face found).
        pairs: every pair of used photos.
    """

    name: str
    description: str
    model: str
    signature: str
    photos: tuple[dict[str, str], ...]
    excluded: tuple[dict[str, str], ...]
    pairs: tuple[ReferencePair, ...]

    @property
    def people(self) -> int:
        """Number of distinct people among the photos used."""
        return len({p["person"] for p in self.photos})

    def values(self, same_person: bool) -> list[float]:
        """Similarities of the same-person (``True``) or different-person (``False``) pairs, sorted."""
        return sorted(p.similarity for p in self.pairs if p.same_person == same_person)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written by ``tools/make_reference.py`` (read back with :meth:`from_dict`)."""
        return {
            "format": FORMAT,
            "name": self.name,
            "description": self.description,
            "model": self.model,
            "signature": self.signature,
            "photos": list(self.photos),
            "excluded": list(self.excluded),
            "pairs": [{**asdict(p), "similarity": round(p.similarity, 6)} for p in self.pairs],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReferenceSet:
        """Read the JSON form; raises ``ValueError`` for another format version or missing fields."""
        if data.get("format") != FORMAT:
            raise ValueError(f"reference set format {data.get('format')!r}; this perface reads format {FORMAT}")
        try:
            pairs = tuple(
                ReferencePair(p["a"], p["b"], bool(p["same_person"]), float(p["similarity"])) for p in data["pairs"]
            )
            return cls(
                data["name"],
                data["description"],
                data["model"],
                data["signature"],
                tuple(data["photos"]),
                tuple(data.get("excluded", ())),
                pairs,
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"reference set: missing or malformed field {exc}") from exc


@dataclass(frozen=True)
class Reading:
    """Where ``score`` falls among a reference set's pairs; ``str()`` gives the sentence.

    ``same_below`` / ``same_tied`` / ``same_above``: same-person pairs with a similarity below,
    equal to (within 0.0005) and above ``score``; likewise ``different_*``. The ranges are the
    lowest and highest similarity of each kind (``None`` for a kind without pairs).
    """

    score: float
    reference: str
    signature: str
    photos: int
    people: int
    same_below: int
    same_tied: int
    same_above: int
    same_range: Optional[tuple[float, float]]
    different_below: int
    different_tied: int
    different_above: int
    different_range: Optional[tuple[float, float]]

    @property
    def pairs(self) -> int:
        """Number of pairs in the reference set."""
        return (
            self.same_below
            + self.same_tied
            + self.same_above
            + self.different_below
            + self.different_tied
            + self.different_above
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, with the sentence under ``"text"``."""
        return {**asdict(self), "text": str(self)}

    @property
    def position(self) -> str:
        """The score's place among the pairs, without the score and the reference set's name, e.g.
        "above all 15 different-person pairs (highest 0.259); below 3 of 6 same-person pairs
        (0.653 to 0.922)"."""
        parts = [
            _place(
                self.different_below,
                self.different_tied,
                self.different_above,
                self.different_range,
                "different-person",
                low_first=True,
            ),
            _place(self.same_below, self.same_tied, self.same_above, self.same_range, "same-person", low_first=False),
        ]
        return "; ".join(parts)

    def __str__(self) -> str:
        model = self.signature.split("|")[1].partition(":")[2] if "|" in self.signature else self.signature
        return (
            f"{self.score:.3f}: {self.position}. Reference set '{self.reference}': {self.pairs} pairs of "
            f"{self.photos} photos of {self.people} people, model {model}; too few to calibrate a threshold."
        )


def _place(below: int, tied: int, above: int, span: Optional[tuple[float, float]], kind: str, low_first: bool) -> str:
    """One clause: the score's place among ``below + tied + above`` pairs of one kind."""
    n = below + tied + above
    if n == 0:
        return f"no {kind} pairs to compare with"
    lo, hi = span if span is not None else (float("nan"), float("nan"))
    if below == n:
        return f"above all {n} {kind} pairs (highest {hi:.3f})"
    if above == n:
        return f"below all {n} {kind} pairs (lowest {lo:.3f})"
    tie = f" and equal to {tied}" if tied else ""
    rng = f"{lo:.3f} to {hi:.3f}" if n > 1 else f"{lo:.3f}"
    if low_first:  # different-person pairs: how many the score is above
        return f"above {below}{tie} of {n} {kind} pairs ({rng})"
    return f"below {above}{tie} of {n} {kind} pairs ({rng})"  # same-person pairs: how many are above it


def _data_file(model: str) -> str:
    return f"reference_{model}.json"


def available() -> list[str]:
    """Model names with a reference set shipped in the package."""
    folder = resources.files("perface") / "data"
    if not folder.is_dir():
        return []
    return sorted(
        p.name[len("reference_") : -len(".json")]
        for p in folder.iterdir()
        if p.name.startswith("reference_") and p.name.endswith(".json")
    )


def load_reference(model: Union[str, PerFace] = DEFAULT_MODEL, path: Union[str, Path, None] = None) -> ReferenceSet:
    """The reference set shipped for ``model`` (a checkpoint name or a :class:`~perface.PerFace`),
    or the one in the JSON file ``path``.

    Raises ``ValueError`` when no set ships for ``model``, naming the models that have one and
    how to make one for your own checkpoint.
    """
    if path is not None:
        return ReferenceSet.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
    name = model if isinstance(model, str) else model.name
    resource = resources.files("perface") / "data" / _data_file(name)
    if not resource.is_file():
        have = ", ".join(available()) or "none"
        raise ValueError(
            f"no reference set ships for model {name!r} (reference sets ship for: {have}); "
            "make one from photos of known people with perface.reference.compute_reference "
            "(tools/make_reference.py in the source tree) and pass it as reference="
        )
    return ReferenceSet.from_dict(json.loads(resource.read_text(encoding="utf-8")))


def _check_applies(ref: ReferenceSet, model: Union[str, PerFace]) -> None:
    """Warn when ``ref`` was made with other weights, detector, alignment or precision than ``model``."""
    from .signature import Signature, signature_of

    if isinstance(model, str):
        from .registry import MODELS

        spec = MODELS.get(model)
        if spec is None or spec.weights is None:
            return  # a path or Hub id: only a metric object can be compared
        want = Signature.parse(ref.signature)
        have_model = f"{model}@{spec.weights.sha256[: len(want.model.partition('@')[2])]}"
        diffs = [("model", want.model, have_model)] if want.model != have_model else []
    else:
        diffs = [
            d
            for d in Signature.parse(ref.signature).differences(signature_of(model, "detect"))
            if d[0] in _MATCH_FIELDS
        ]
    if diffs:
        listed = "; ".join(f"{k}: reference {a!r}, metric {b!r}" for k, a, b in diffs)
        warnings.warn(
            f"reference set '{ref.name}' was measured with another metric ({listed}); the reading "
            "may not apply. Regenerate it with tools/make_reference.py",
            stacklevel=3,
        )


def reading(
    score: float, model: Union[str, PerFace] = DEFAULT_MODEL, reference: Union[ReferenceSet, str, Path, None] = None
) -> Reading:
    """Place a similarity ``score`` (a cosine in [-1, 1] from ``model``) among the pairs of a
    reference set.

    Args:
        score: a similarity made by ``model`` on photos (``perface.similarity``, ``perface
            similarity``), i.e. with ``align="detect"``.
        model: the checkpoint name or :class:`~perface.PerFace` that made ``score``; selects the
            shipped reference set, and is checked against the set's signature (a different
            weights hash, detector, alignment or precision warns: the reading may not apply).
        reference: a :class:`ReferenceSet` or the path of its JSON instead of the shipped one.

    Returns:
        A :class:`Reading`; ``str()`` of it is a sentence such as "0.300: above all 15
        different-person pairs (highest 0.263); below all 6 same-person pairs (lowest 0.655).
        Reference set 'shared-faces-v1': 21 pairs of 7 photos of 4 people, model
        sface@0f0fbaa2; too few to calibrate a threshold."

    Raises:
        ValueError: no reference set ships for ``model`` (and none was given), or ``score`` is
            not a finite number.
    """
    import math

    if not isinstance(score, (int, float)) or not math.isfinite(score):
        raise ValueError(f"reading: score must be a finite similarity in [-1, 1], got {score!r}")
    ref = reference if isinstance(reference, ReferenceSet) else load_reference(model, reference)
    _check_applies(ref, model)
    counts: dict[bool, tuple[int, int, int, Optional[tuple[float, float]]]] = {}
    for same in (True, False):
        vals = ref.values(same)
        below = sum(v < score - TIE for v in vals)
        above = sum(v > score + TIE for v in vals)
        counts[same] = (below, len(vals) - below - above, above, (vals[0], vals[-1]) if vals else None)
    return Reading(float(score), ref.name, ref.signature, len(ref.photos), ref.people, *counts[True], *counts[False])


def compute_reference(
    files: Sequence[Union[str, Path]],
    people: Sequence[str],
    metric: PerFace,
    *,
    name: str,
    description: str,
    excluded: Sequence[dict[str, str]] = (),
    batch_size: int = 8,
    progress: bool = False,
) -> ReferenceSet:
    """Embed ``files`` with ``metric`` through the photo pipeline and measure every pair.

    Args:
        files: photo paths (one face each; the most prominent face is used).
        people: who is in each file (same length as ``files``); equal names make same-person pairs.
        metric: the metric to measure.
        name: the set's short name, quoted in every reading.
        description: where the photos come from; how duplicates were treated.
        excluded: ``{"file", "reason"}`` for photos the caller left out (kept in the record).
        batch_size: images per embedding batch.
        progress: show a progress bar.

    Photos without a usable face are left out and listed in ``excluded`` with the reason. Pairs
    are ordered as the files are.
    """
    import hashlib

    import torch

    from .photos import embed_images
    from .signature import signature_of

    if len(files) != len(people):
        raise ValueError(f"compute_reference: {len(files)} files but {len(people)} people")
    res = embed_images([str(f) for f in files], model=metric, batch_size=batch_size, progress=progress)
    kept = [i for i in range(len(files)) if bool(res.ok[i])]
    skipped = [
        {"file": Path(files[i]).name, "reason": res.errors.get(i, "no embedding")}
        for i in range(len(files))
        if i not in kept
    ]
    emb = res.embeddings[kept].double()
    sims = emb @ emb.T
    photos = tuple(
        {
            "file": Path(files[i]).name,
            "person": people[i],
            "sha256": hashlib.sha256(Path(files[i]).read_bytes()).hexdigest(),
        }
        for i in kept
    )
    pairs = tuple(
        ReferencePair(
            photos[i]["file"],
            photos[j]["file"],
            photos[i]["person"] == photos[j]["person"],
            float(torch.clamp(sims[i, j], -1.0, 1.0)),
        )
        for i, j in combinations(range(len(kept)), 2)
    )
    return ReferenceSet(
        name,
        description,
        metric.name,
        str(signature_of(metric, "detect")),
        photos,
        tuple(excluded) + tuple(skipped),
        pairs,
    )
