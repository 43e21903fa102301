"""How far annotators agree: chance-corrected (Krippendorff's alpha) and plain.

``answers`` everywhere is ``{annotator: {item: label}}``; an annotator may skip items.

Krippendorff's alpha (Krippendorff, *Content Analysis*, 2004; "Computing Krippendorff's
alpha-reliability", 2011) is ``1 - D_o / D_e``: 1 for perfect agreement, 0 for agreement at
chance level, negative below. It allows any number of annotators per item and missing answers,
which a study where annotators answer different subsets needs (Fleiss' kappa assumes the same
number of answers per item). Computed with the ``krippendorff`` package (part of
``perface[annotate]``), nominal level.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Optional

__all__ = ["krippendorff_alpha", "pairwise_agreement", "majority_agreement", "Answers"]

Answers = Mapping[str, Mapping[str, Hashable]]


def krippendorff_alpha(answers: Answers, items: Optional[Sequence[str]] = None) -> float:
    """Krippendorff's alpha (nominal) of ``answers`` over ``items`` (default: every item
    answered). Items with fewer than two answers carry no information and are ignored.

    Returns NaN when alpha is undefined: fewer than two answers on any item, or a single
    label used throughout (no disagreement is possible to measure). Raises ``ImportError``
    without the ``krippendorff`` package.
    """
    try:
        import krippendorff
    except ImportError as exc:
        raise ImportError(
            'Krippendorff\'s alpha needs the krippendorff package: pip install "perface[annotate]"'
        ) from exc
    import numpy as np

    annotators = sorted(answers)
    if items is None:
        items = sorted({i for given in answers.values() for i in given})
    items = [i for i in items if sum(i in answers[a] for a in annotators) >= 2]
    labels = sorted({answers[a][i] for a in annotators for i in items if i in answers[a]}, key=str)
    if not items or len(labels) < 2:
        return math.nan
    code = {label: k for k, label in enumerate(labels)}
    data = np.full((len(annotators), len(items)), np.nan)
    for r, a in enumerate(annotators):
        for c, i in enumerate(items):
            if i in answers[a]:
                data[r, c] = code[answers[a][i]]
    return float(krippendorff.alpha(reliability_data=data, level_of_measurement="nominal"))


def pairwise_agreement(answers: Answers, items: Optional[Sequence[str]] = None) -> float:
    """The fraction of pairs of answers to the same item that agree (not chance-corrected),
    each item weighted by its number of pairs. NaN when no item has two answers."""
    if items is None:
        items = sorted({i for given in answers.values() for i in given})
    agree = pairs = 0
    for item in items:
        given = [a[item] for a in answers.values() if item in a]
        for x in range(len(given)):
            for y in range(x + 1, len(given)):
                pairs += 1
                agree += given[x] == given[y]
    return agree / pairs if pairs else math.nan


def majority_agreement(answers: Answers, annotator: str, items: Optional[Sequence[str]] = None) -> dict[str, float]:
    """How often ``annotator`` agrees with the majority of the *other* annotators (leave one
    out, so an annotator is not compared with their own vote); items where the others tie or
    gave no answer are not counted. Returns ``{"agreement": fraction or NaN, "n": items compared}``."""
    own = answers[annotator]
    items = [i for i in (items if items is not None else sorted(own)) if i in own]
    agree = n = 0
    for item in items:
        votes: dict[Hashable, int] = {}
        for other, given in answers.items():
            if other != annotator and item in given:
                votes[given[item]] = votes.get(given[item], 0) + 1
        if not votes:
            continue
        ranked = sorted(votes.values(), reverse=True)
        if len(ranked) > 1 and ranked[0] == ranked[1]:
            continue
        majority = max(votes, key=votes.__getitem__)
        n += 1
        agree += own[item] == majority
    return {"agreement": agree / n if n else math.nan, "n": n}
