"""From collected answers to a training set: the triplet CSV plus a quality report.

:func:`export` writes the answered triplets in the generic triplet CSV format that
``python -m perface.train`` and ``python -m perface.eval triplets`` read (one answer column per
annotator, ``ans_<id>``, or per slot, ``ans1``, ``ans2`` ...), and reports per annotator the
catch-trial accuracy and the agreement with the majority of the others, the size of the
majority set (D1) and of the unanimous set (D2: every answer alike, at least two answers), and
Krippendorff's alpha. Annotators below a catch-trial accuracy threshold (or named) are left out
of the CSV and of D1, D2 and alpha.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Union

from .._io import atomic_write_text
from .agreement import krippendorff_alpha, majority_agreement, pairwise_agreement
from .store import STORE_FILE, AnswerStore
from .study import SLOTS, Study, load_study, portable_path

__all__ = ["export", "write_report", "ExportReport", "AnnotatorQuality"]

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class AnnotatorQuality:
    """One annotator's numbers. ``catch_accuracy``/``majority_agreement`` are None when not
    measurable (no catch trial answered; no triplet shared with a majority of others)."""

    annotator: str
    answers: int
    catch_answered: int
    catch_correct: int
    catch_accuracy: Optional[float]
    majority_agreement: Optional[float]
    majority_compared: int
    median_ms: Optional[float]
    excluded: bool = False
    reason: str = ""


@dataclass
class ExportReport:
    """What :func:`export` wrote and the quality of the answers (see the module docstring).

    ``d1``: triplets with a majority answer; ``d2``: unanimous triplets with at least two
    answers; ``alpha``/``alpha_all``: Krippendorff's alpha over the kept / all annotators
    (NaN when undefined); ``signature``: the metric that chose the triplets, if one did.
    """

    study: str
    output: str
    columns: str
    triplets: int
    exported: int
    answers: int
    d1: int
    d2: int
    alpha: float
    alpha_all: float
    pairwise_agreement: float
    min_catch_accuracy: Optional[float]
    signature: Optional[str]
    annotators: list[AnnotatorQuality] = field(default_factory=list)

    @property
    def kept(self) -> list[str]:
        return [a.annotator for a in self.annotators if not a.excluded]

    def to_dict(self) -> dict:
        data = asdict(self)
        for key in ("alpha", "alpha_all", "pairwise_agreement"):
            data[key] = None if math.isnan(data[key]) else data[key]
        return data

    def to_markdown(self) -> str:
        def num(x: Optional[float]) -> str:
            return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"

        lines = [f"# Annotation export: {self.study}", ""]
        if self.signature:
            lines += [f"Triplets chosen by the metric `{self.signature}`.", ""]
        lines += [
            f"- Output: `{self.output}` ({self.exported} of {self.triplets} triplets answered, "
            f"{self.answers} answers from {len(self.kept)} annotator(s); columns per {self.columns})",
            f"- D1 (majority answer): {self.d1} triplets; D2 (unanimous, at least two answers): {self.d2} triplets",
            f"- Krippendorff's alpha (nominal): {num(self.alpha)} kept annotators, {num(self.alpha_all)} all; "
            f"pairwise agreement {num(self.pairwise_agreement)}",
        ]
        if self.min_catch_accuracy is not None:
            lines.append(f"- Annotators with catch-trial accuracy below {self.min_catch_accuracy:.2f} are excluded")
        lines += [
            "",
            "| annotator | answers | catch trials correct | catch accuracy | agreement with majority "
            "(items) | median time (s) | kept |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for a in self.annotators:
            ms = "n/a" if a.median_ms is None else f"{a.median_ms / 1000:.1f}"
            kept = "yes" if not a.excluded else f"no ({a.reason})"
            lines.append(
                f"| {a.annotator} | {a.answers} | {a.catch_correct}/{a.catch_answered} | "
                f"{num(a.catch_accuracy)} | {num(a.majority_agreement)} ({a.majority_compared}) | {ms} | {kept} |"
            )
        return "\n".join(lines) + "\n"


def _quality(study: Study, given: dict[str, dict[str, str]], times: dict[str, list[int]]) -> list[AnnotatorQuality]:
    real = [t.id for t in study.triplets]
    catch = {c.id: c.expected for c in study.catch}
    real_answers = {a: {i: v for i, v in items.items() if i not in catch} for a, items in given.items()}
    rows = []
    for annotator in sorted(given):
        caught = [given[annotator][c] == expected for c, expected in catch.items() if c in given[annotator]]
        maj = majority_agreement(real_answers, annotator, real)
        rows.append(
            AnnotatorQuality(
                annotator=annotator,
                answers=len(real_answers[annotator]),
                catch_answered=len(caught),
                catch_correct=sum(caught),
                catch_accuracy=sum(caught) / len(caught) if caught else None,
                majority_agreement=None if math.isnan(maj["agreement"]) else maj["agreement"],
                majority_compared=int(maj["n"]),
                median_ms=float(statistics.median(times[annotator])) if times.get(annotator) else None,
            )
        )
    return rows


def _csv(header: Sequence[str], rows: Sequence[dict[str, str]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(header), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def export(
    study_dir: PathLike,
    out: PathLike,
    min_catch_accuracy: Optional[float] = None,
    exclude: Sequence[str] = (),
    columns: str = "annotator",
) -> ExportReport:
    """Write the answered triplets of the study in ``study_dir`` to the triplet CSV ``out``.

    ``min_catch_accuracy``: leave out annotators whose catch-trial accuracy is below it (0-1;
    annotators who answered no catch trial are kept, with a warning). ``exclude``: annotator ids
    to leave out. ``columns``: ``"annotator"`` (a column ``ans_<id>`` per annotator) or
    ``"slot"`` (``ans1``, ``ans2`` ... in order of arrival, as in SimCelebA). Triplets without
    any kept answer are not written. Image paths are written relative to ``out``'s folder.

    Returns the :class:`ExportReport`. Raises ``FileNotFoundError`` when the study has no
    answers yet and ``ValueError`` for bad arguments or an unknown id in ``exclude``.
    """
    if columns not in ("annotator", "slot"):
        raise ValueError(f"columns must be 'annotator' or 'slot', got {columns!r}")
    if min_catch_accuracy is not None and not 0.0 <= min_catch_accuracy <= 1.0:
        raise ValueError(f"--min-catch-accuracy must be between 0 and 1, got {min_catch_accuracy}")
    study = load_study(study_dir)
    store_path = study.root / STORE_FILE
    if not store_path.is_file():
        raise FileNotFoundError(f"{store_path}: no answers yet; collect some with 'perface annotate serve {study_dir}'")
    with AnswerStore(store_path, study.sha256) as store:
        answers = store.answers()
    given: dict[str, dict[str, str]] = {}
    times: dict[str, list[int]] = {}
    for ans in answers:
        given.setdefault(ans.annotator, {})[ans.item] = ans.answer
        if ans.ms is not None:
            times.setdefault(ans.annotator, []).append(ans.ms)
    unknown = sorted(set(exclude) - set(given))
    if unknown:
        raise ValueError(
            f"--exclude: no answers from annotator(s) {', '.join(unknown)}; known: {', '.join(sorted(given))}"
        )

    quality = _quality(study, given, times)
    for q in quality:
        if q.annotator in exclude:
            q.excluded, q.reason = True, "excluded by name"
        elif min_catch_accuracy is not None and q.catch_accuracy is None:
            warnings.warn(
                f"annotator {q.annotator} answered no catch trial: kept, but their attention is unmeasured",
                stacklevel=2,
            )
        elif min_catch_accuracy is not None and q.catch_accuracy is not None and q.catch_accuracy < min_catch_accuracy:
            q.excluded, q.reason = True, f"catch accuracy {q.catch_accuracy:.2f} < {min_catch_accuracy:.2f}"
    kept = [q.annotator for q in quality if not q.excluded]
    real = [t.id for t in study.triplets]
    real_given = {a: {i: given[a][i] for i in real if i in given[a]} for a in given}
    kept_given = {a: real_given[a] for a in kept}

    out = Path(out)
    base = out.resolve().parent
    extra = [k for k in (study.triplets[0].extra if study.triplets else {})]
    order: dict[str, list[str]] = {ans.item: [] for ans in answers}
    for ans in answers:  # arrival order, for slot columns
        if ans.annotator in kept_given:
            order[ans.item].append(ans.answer)
    width = max((len(v) for v in order.values()), default=0)
    answer_cols = [f"ans_{a}" for a in kept] if columns == "annotator" else [f"ans{k + 1}" for k in range(width)]
    rows, d1, d2 = [], 0, 0
    for t in study.triplets:
        votes = [kept_given[a][t.id] for a in kept if t.id in kept_given[a]]
        if not votes:
            continue
        if votes.count("a") != votes.count("b"):
            d1 += 1
        if len(votes) >= 2 and len(set(votes)) == 1:
            d2 += 1
        row = {"id": t.id, **{s: portable_path(t.path(s), base) for s in SLOTS}}
        if columns == "annotator":
            row.update({f"ans_{a}": kept_given[a].get(t.id, "") for a in kept})
        else:
            row.update({f"ans{k + 1}": v for k, v in enumerate(order.get(t.id, []))})
        row.update({"kind": t.kind, **t.extra})
        rows.append(row)
    atomic_write_text(out, _csv(["id", *SLOTS, *answer_cols, "kind", *extra], rows))
    return ExportReport(
        study=str(study.root),
        output=str(out),
        columns=columns,
        triplets=len(study.triplets),
        exported=len(rows),
        answers=sum(len(v) for v in kept_given.values()),
        d1=d1,
        d2=d2,
        alpha=krippendorff_alpha(kept_given, real),
        alpha_all=krippendorff_alpha(real_given, real),
        pairwise_agreement=pairwise_agreement(kept_given, real),
        min_catch_accuracy=min_catch_accuracy,
        signature=study.signature,
        annotators=quality,
    )


def write_report(report: ExportReport, paths: Sequence[PathLike]) -> None:
    """Write ``report`` to each path: ``.json`` as JSON, anything else as markdown."""
    for path in paths:
        text = (
            json.dumps(report.to_dict(), indent=2) + "\n"
            if str(path).lower().endswith(".json")
            else report.to_markdown()
        )
        atomic_write_text(path, text)
