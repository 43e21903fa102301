"""``python -m perface.eval triplets``: triplet accuracy of several models, with 95% CIs.

A triplet counts as correct when the model finds the reference more similar to the face people
chose than to the other one: ``sim(ref, pos) > sim(ref, neg)``. By default only unanimous
(consistent) triplets are scored, as in the paper. One table, one row per model (the shape of
the paper's Table 1), as markdown, CSV or JSON, each row with the metric signature of the model
that made it. Fewer than 20 scored triplets get a warning: their CI is only a rough guide.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import torch

from .._io import atomic_write_text
from ..commands import add_batch_size, add_device, add_model, add_quiet, add_workers, input_failures
from ..devices import resolve_device
from ..labels import read_labels
from ..registry import DEFAULT_MODEL
from ..signature import signature_of
from ..stats import bootstrap_ci
from ..templates import list_templates
from ..train.data import TripletSet, load_triplets
from ..train.dataset import TripletImages, align_photos
from ..train.evaluate import triplet_correct, triplet_similarities
from ..train.splits import make_split
from .report import Notes

if TYPE_CHECKING:
    from ..model import PerFace

PROG = "python -m perface.eval triplets"

__all__ = ["evaluate_triplets", "warn_small", "format_table", "add_arguments", "run"]


def _load_model(name: str, data_template: Optional[str], align: str, device: torch.device) -> PerFace:
    """The metric for ``name``; ``align="auto"`` converts crops whose template differs from the model's."""
    from ..model import PerFace

    metric = PerFace(name, check_range=False)
    if align == "auto" and data_template is not None and data_template != metric.template:
        metric = PerFace(name, check_range=False, align=data_template)
    return metric.to(device).eval()


def _groups(spec: Optional[str]) -> Optional[dict[str, str]]:
    """``FILE.csv:COLUMN`` -> {triplet id: group} (the id column is ``tripletId`` or ``id``)."""
    if not spec:
        return None
    path, _, column = spec.rpartition(":")
    labels = read_labels(path, ("tripletId", "id"), required=(column,))
    return {row[labels.key]: row[column] for row in labels.rows}


def evaluate_triplets(
    models: Sequence[str],
    triplets: TripletSet,
    align: str = "auto",
    groups: Optional[dict[str, str]] = None,
    batch_size: int = 64,
    num_workers: int = 0,
    device: torch.device = torch.device("cpu"),
    bootstrap: int = 10000,
    seed: int = 0,
    progress: bool = True,
    missing_list: Optional[Path] = None,
) -> list[dict[str, Any]]:
    """One row per (model, group): accuracy with bootstrap 95% CI over ``triplets``.

    ``triplets`` must all have a majority answer (use ``.unanimous_only()`` for the paper's
    protocol). ``groups``: triplet id -> group name; adds a row per group besides ``"all"``.
    ``num_workers``: processes decoding crops (once per image size). Photos without a usable
    face are summarized in one warning and listed in ``missing_list`` if given.
    """
    rows = []
    banks: dict[int, TripletImages] = {}
    for name in models:
        metric = _load_model(name, triplets.template, align, device)
        data, photos = triplets, None
        if triplets.images == "photos":
            data, photos = align_photos(
                triplets, metric.template, metric.input_size, progress=progress, missing_list=missing_list
            )
            images = TripletImages.from_set(data, metric.input_size, photos)
        else:
            size = 224 if metric.align != "none" else metric.input_size  # converted crops keep their resolution
            if size not in banks:
                banks[size] = TripletImages.from_set(data, size, workers=num_workers, progress=progress)
            images = banks[size]
        pos, neg = triplet_similarities(
            metric.embed, images, batch_size, device, progress=progress, desc=f"{metric.name}"
        )
        correct = triplet_correct(pos, neg)
        labels = {"all": list(range(len(data)))}
        if groups is not None:
            for i, t in enumerate(data.triplets):
                labels.setdefault(groups.get(t.id, "(none)"), []).append(i)
        for group, idx in labels.items():
            if not idx:
                continue
            est = bootstrap_ci(correct[idx], n=bootstrap, seed=seed)
            rows.append(
                {
                    "model": name,
                    "checkpoint": metric.name,
                    "template": metric.template,
                    "align": metric.align,
                    "group": group,
                    "accuracy": est.mean,
                    "ci_low": est.low,
                    "ci_high": est.high,
                    "n": est.n,
                    "failed": len(triplets) - len(data),
                    "signature": str(signature_of(metric, "detect" if photos is not None else None)),
                }
            )
    return rows


def warn_small(rows: list[dict[str, Any]]) -> list[str]:
    """Warn (``UserWarning``) for each row scored on fewer than :data:`~perface.eval.report.MIN_ITEMS`
    triplets; returns the messages."""
    notes = Notes()
    for r in rows:
        notes.small_set(
            int(r["n"]),
            f"triplets scored for {r['model']}" + ("" if r["group"] == "all" else f", group {r['group']!r}"),
        )
    return notes.items


def format_table(rows: list[dict[str, Any]], fmt: str = "markdown") -> str:
    """``rows`` of :func:`evaluate_triplets` as ``markdown`` (one row per model, then each model's
    metric signature), ``csv`` or ``json`` (every field, ``signature`` included)."""
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["model"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue()
    if fmt != "markdown":
        raise ValueError(f"format must be markdown, csv or json, got {fmt!r}")
    groups = list(dict.fromkeys(r["group"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    cell = {(r["model"], r["group"]): r for r in rows}
    head = (
        ["model", "template", "align"]
        + [f"accuracy ({g})" if len(groups) > 1 else "triplet accuracy [95% CI]" for g in groups]
        + ["n"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in models:
        first = cell[(m, groups[0])]
        vals = [
            f"{c['accuracy']:.3f} [{c['ci_low']:.3f}, {c['ci_high']:.3f}]" if (c := cell.get((m, g))) else "-"
            for g in groups
        ]
        lines.append("| " + " | ".join([m, first["template"], first["align"], *vals, str(first["n"])]) + " |")
    lines += ["", "Metric signatures:", ""] + [f"- {m}: `{cell[(m, groups[0])]['signature']}`" for m in models]
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="SimCelebA-format folder or a triplet CSV (see docs/training.md)")
    parser.add_argument(
        "--answers", metavar="CSV", help="answers CSV of a SimCelebA-format folder (default: DATA/triplet_answers.csv)"
    )
    parser.add_argument("--images", choices=("photos", "crops"), help="triplet CSV: photos (default) or aligned crops")
    parser.add_argument(
        "--crop-template", choices=list_templates(), help="triplet CSV of crops: the template they are aligned to"
    )
    add_model(parser, repeat=True, what="model to score")
    parser.add_argument(
        "--split",
        help="score one part of a split: random, unseen, seen-source, seen-target or "
        "a split .json (same options as training)",
    )
    parser.add_argument("--part", default="test", choices=("train", "val", "test"), help="part of --split to score")
    parser.add_argument(
        "--seed", type=int, default=0, metavar="N", help="split seed (as in training) and bootstrap seed"
    )
    parser.add_argument("--val-fraction", type=float, default=0.1, help="random split: validation fraction")
    parser.add_argument("--test-fraction", type=float, default=0.1, help="random split: test fraction")
    parser.add_argument(
        "--layout", default="target-major", choices=("target-major", "source-major"), help="grid protocols: id layout"
    )
    parser.add_argument("--holdout", type=float, default=0.2, help="grid protocols: test holdout fraction")
    parser.add_argument("--val-holdout", type=float, default=0.1, help="grid protocols: validation holdout")
    parser.add_argument(
        "--set",
        default="unanimous",
        choices=("unanimous", "all"),
        help="unanimous (consistent) triplets only, as in the paper, or all with a majority",
    )
    parser.add_argument(
        "--align",
        default="auto",
        choices=("auto", "none"),
        help="auto: warp crops to each model's template when they differ; none: only resize",
    )
    parser.add_argument(
        "--group-by",
        metavar="FILE.csv:COLUMN",
        help="also report accuracy per group of this column (e.g. meta.csv:kind; default: none)",
    )
    parser.add_argument("--bootstrap", type=int, default=10000, metavar="N", help="bootstrap resamples for the 95%% CI")
    parser.add_argument(
        "--missing-list",
        metavar="FILE",
        help="write every missing, empty, unreadable or faceless "
        "image to this CSV (path, problem, triplets); the terminal shows counts and the first few",
    )
    add_batch_size(parser, 64, "triplets per forward pass")
    add_workers(parser)
    add_device(parser)
    parser.add_argument("--format", default="markdown", choices=("markdown", "csv", "json"), help="stdout format")
    parser.add_argument(
        "--output",
        action="append",
        default=[],
        metavar="FILE",
        help="also write the table to FILE (.md, .csv or .json by its suffix; repeatable; default: none)",
    )
    add_quiet(parser)


def run(args: argparse.Namespace) -> int:
    loaded = load_triplets(args.data, args.answers, args.images, args.crop_template, missing_list=args.missing_list)
    triplets = loaded.majority_only()
    if args.split:
        split = make_split(
            triplets.ids,
            args.split,
            seed=args.seed,
            val=args.val_fraction,
            test=args.test_fraction,
            holdout=args.holdout,
            val_holdout=args.val_holdout,
            layout=args.layout,
        )
        triplets = triplets.subset(getattr(split, args.part))
    if args.set == "unanimous":
        triplets = triplets.unanimous_only()
    if len(triplets) == 0:
        raise ValueError(
            f"no triplets to score in {args.data} (set {args.set!r}, split {args.split!r}); "
            "check --set, --split and --part, or add judged triplets"
        )
    suffixes = {".md": "markdown", ".csv": "csv", ".json": "json"}
    for out in args.output:  # before the slow part
        if Path(out).suffix.lower() not in suffixes:
            raise ValueError(f"--output {out}: use a .md, .csv or .json file name")
    rows = evaluate_triplets(
        args.models or [DEFAULT_MODEL],
        triplets,
        args.align,
        _groups(args.group_by),
        args.batch_size,
        args.workers,
        resolve_device(args.device),
        args.bootstrap,
        args.seed,
        not args.quiet,
        args.missing_list,
    )
    warn_small(rows)
    print(format_table(rows, args.format), end="")
    for out in args.output:
        atomic_write_text(out, format_table(rows, suffixes[Path(out).suffix.lower()]))
    failed = len(loaded.skipped) + max((int(r["failed"]) for r in rows), default=0)
    where = f"in {args.missing_list}" if args.missing_list else "summarized above; --missing-list FILE lists them all"
    return input_failures(PROG, failed, len(loaded) + len(loaded.skipped), "triplets", where)
