"""The trained checkpoint directory: ``model.safetensors``, ``config.json`` and a model card.

Written with :func:`perface.pretrained.save_pretrained`, so it loads with
``PerFace.from_pretrained(out_dir)``; the training details (data hash, split, recipe, accuracies
with 95% CI) are appended to the card.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

from .._io import atomic_write_text
from ..model import PerFace
from ..pretrained import save_pretrained
from ..registry import ModelSpec

__all__ = ["trained_fields", "write_checkpoint", "append_training_card"]


def trained_fields(
    init: ModelSpec,
    name: str,
    template: str,
    trained_on: str,
    scores: Mapping[str, Any],
    license: Optional[str] = None,
    improved: bool = True,
) -> dict[str, Any]:
    """Spec fields of a checkpoint fine-tuned from ``init`` on triplet judgments.

    ``improved=False`` when training did not beat the initialization: the weights are then the
    initialization's, and they are perceptual only if the initialization was. ``license`` defaults to
    the initialization's (the weights derive from it); ``citation`` keeps the initialization's.
    """
    description = (
        f"Perceptual face similarity fine-tuned from {init.name!r} on human triplet judgments "
        "with the PerFace recipe (cosine triplet margin loss)."
        if improved
        else f"The initialization {init.name!r} unchanged: fine-tuning on triplet judgments did not beat it "
        "on validation, so its weights were kept."
    )
    return {
        "name": name,
        "template": template,
        "perceptual": improved or init.perceptual,
        "trained_on": trained_on,
        "description": description,
        "license": license or init.license,
        "scores": dict(scores),
        "citation": init.citation,
    }


def write_checkpoint(out: Path, metric: PerFace, fields: Mapping[str, Any]) -> None:
    """Save ``metric``'s backbone with the spec ``fields`` into ``out`` (atomic writes)."""
    save_pretrained(metric, out, **fields)


def _acc(entry: Mapping[str, Any]) -> str:
    return f"{entry['mean']:.3f} (95% CI {entry['ci_low']:.3f}-{entry['ci_high']:.3f}, n={entry['n']})"


def append_training_card(out: Path, info: dict[str, Any]) -> None:
    """Append how the checkpoint was trained to ``out/README.md``.

    ``info`` keys: ``init``, ``data``, ``data_sha256``, ``split``, ``train_set``, ``counts``,
    ``recipe`` (dict), ``outcome`` (one sentence: did training beat the initialization?),
    ``validation`` (its size and origin), ``signature`` (metric signature of the written
    checkpoint), ``scores`` (label -> ``perface.stats.Estimate.to_dict()``). Written atomically.
    """
    lines = [
        "",
        "## Training (python -m perface.train)",
        "",
        f"**Outcome:** {info['outcome']}.",
        "",
        f"- Metric signature: `{info['signature']}`",
        f"- Initialization: `{info['init']}`",
        f"- Data: `{info['data']}` (answers file sha256 `{info['data_sha256']}`)",
        f"- Split: {info['split']}",
        f"- Training set: {info['train_set']}",
        f"- Validation: {info['validation']}",
        "- Triplets: " + ", ".join(f"{k} {v}" for k, v in info["counts"].items()),
        "",
        "| setting | value |",
        "| --- | --- |",
        *[f"| {k} | {v} |" for k, v in info["recipe"].items()],
        "",
        "### Triplet accuracy",
        "",
        "On unanimous (consistent) triplets: correct iff sim(reference, positive) > sim(reference, negative); "
        "95% CI by bootstrap over triplets.",
        "",
        "| evaluation | accuracy |",
        "| --- | --- |",
        *[f"| {k} | {_acc(v)} |" for k, v in info["scores"].items()],
        "",
    ]
    card = out / "README.md"
    atomic_write_text(card, card.read_text(encoding="utf-8").rstrip("\n") + "\n" + "\n".join(lines))
