"""What a printed similarity means: the legend lines and data readings of ``perface similarity``
and ``perface matrix``.

The legend says what the number is (a cosine in [-1, 1], higher = more alike), the model's kind
(from its registry entry or saved config: ``perceptual`` or ``identity baseline``) and how to read
it: the value's place among the same-person and different-person pairs of the reference set
shipped for the model (:mod:`perface.reference`), or, for a model without one, that there is none
and how to make one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from ..model import PerFace
    from ..reference import Reading, ReferenceSet

__all__ = ["Legend", "legend"]

WHAT = "cosine similarity of the two faces' embeddings, from -1 to 1; higher = more alike"


class Legend:
    """The explanation of one metric's numbers: :attr:`lines` (plain text, one fact each) and
    :meth:`reading` for a value."""

    def __init__(self, metric: PerFace, reference: Optional[ReferenceSet], no_reference: str) -> None:
        self.metric = metric
        self.reference = reference
        self.no_reference = no_reference

    @property
    def kind(self) -> str:
        """``"perceptual"`` or ``"identity baseline"`` (the checkpoint's own record)."""
        return self.metric.spec.kind

    def model_line(self) -> str:
        spec = self.metric.spec
        text = f"model {spec.name} ({spec.kind}): measures {spec.measures}"
        if not spec.perceptual:
            text += (
                "; it tells the same person from different people, not how alike two faces look "
                "(a PerFace checkpoint trained on human judgments with python -m perface.train does)"
            )
        return text

    def reading_line(self) -> str:
        ref = self.reference
        if ref is None:
            return f"reading: none; {self.no_reference}"
        same, different = ref.values(True), ref.values(False)
        return (
            f"reading: the value's place among the pairs of reference set '{ref.name}' ({len(ref.photos)} photos "
            f"of {ref.people} people; {len(same)} same-person pairs {same[0]:.3f} to {same[-1]:.3f}, "
            f"{len(different)} different-person pairs {different[0]:.3f} to {different[-1]:.3f}); "
            "too few to calibrate a threshold"
        )

    @property
    def lines(self) -> list[str]:
        return [f"similarity: {WHAT}", self.model_line(), self.reading_line()]

    def reading(self, value: float) -> Optional[Reading]:
        """Where ``value`` falls in the reference set (``None`` without one)."""
        from ..reference import reading

        if self.reference is None:
            return None
        return reading(value, self.metric, reference=self.reference)


def legend(metric: PerFace) -> Legend:
    """The :class:`Legend` of ``metric``'s similarities on photos."""
    from ..reference import available, load_reference

    if metric.name in available():
        return Legend(metric, load_reference(metric), "")
    return Legend(
        metric,
        None,
        f"no reference set ships for model {metric.name} (sets ship for: {', '.join(available()) or 'none'}); "
        "make one from photos of known people with perface.reference.compute_reference (see docs/cli.md)",
    )
