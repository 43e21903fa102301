"""``python -m perface.eval attributes``: the PerFace paper's attribute-group classification.

The labels CSV has a ``file`` column (path relative to ``--images``) and one column per attribute
(e.g. ``gender`` with values male/female, ``age`` with young/older); an empty cell leaves the image
out of that attribute. Each attribute is one classification task whose groups are its values;
``--combine gender age`` adds the intersection task ``gender&age`` (groups ``male&young``, ...).
Each image is assigned to the group at the smallest distance (upper bound of the 95% CI of its
distances ``1 - cos`` to the group's other images, see :mod:`perface.eval.groups`). Writes
``report.md``, ``groups.csv``, ``predictions.csv`` and ``summary.json``, each with the metric
signature. A group of fewer than 3 images has no interval for its own members, so they can never
be assigned to it (recall 0 by construction): such groups, and tasks with too few images for
their accuracy interval to mean much, are warned about on the terminal and in the report.
"""

from __future__ import annotations

import argparse
import csv
import errno
import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional, TypedDict

import torch

from ..commands import add_batch_size, add_model, add_quiet, add_workers, input_failures
from ..labels import read_labels
from ..registry import DEFAULT_MODEL
from .groups import MIN_GROUP_SIZE, group_distances, group_scores
from .report import Notes, warnings_markdown, write_outputs

__all__ = ["attribute_tasks", "evaluate", "write_report", "add_arguments", "run"]

Tasks = dict[str, list[Optional[str]]]


class _PredictionFields(TypedDict):
    true: str
    predicted: str
    distances: dict[str, float]  # group -> distance


class Prediction(_PredictionFields, total=False):
    """One classified image: ``index`` (row among the usable faces) until :func:`evaluate`
    replaces it by ``file``."""

    index: int
    file: str


class _TaskFields(TypedDict):
    groups: list[dict[str, Any]]  # asdict(GroupScores)
    accuracy: Optional[dict[str, Any]]  # perface.stats.Estimate.to_dict()
    n: int
    predictions: list[Prediction]
    small_groups: list[str]


class TaskResult(_TaskFields, total=False):
    """One task's results; ``skipped``: why it was not scored."""

    skipped: str


class ModelReport(TypedDict):
    """One model's results in the report."""

    model: str
    perceptual: bool
    signature: str
    n_ok: int
    failures: list[dict[str, str]]  # {"file", "reason"}
    tasks: dict[str, TaskResult]


class _ReportFields(TypedDict):
    images: str
    labels: str
    confidence: float
    files: list[str]
    tasks: list[str]
    models: list[ModelReport]


class AttributesReport(_ReportFields, total=False):
    """What :func:`evaluate` returns (JSON-ready); ``warnings`` is set once every model ran."""

    warnings: list[str]


def attribute_tasks(
    path: Path, attributes: Optional[Sequence[str]] = None, combine: Sequence[Sequence[str]] = ()
) -> tuple[list[str], Tasks]:
    """``(files, tasks)`` from a labels CSV (:func:`perface.labels.read_labels`, a ``file``
    column and one column per attribute): ``tasks[name][i]`` is file i's group or None.

    ``attributes``: the columns to use (default every column but ``file``); ``combine``: lists
    of columns whose values are joined with ``&`` into an intersection task.
    """
    labels = read_labels(path, ("file",), required=[*(attributes or ()), *(c for group in combine for c in group)])
    attributes = list(attributes) if attributes else labels.columns
    rows = labels.rows
    tasks: Tasks = {a: [r[a] or None for r in rows] for a in attributes}
    for group in combine:
        vals = [[r[c] for c in group] for r in rows]
        tasks["&".join(group)] = ["&".join(v) if all(v) else None for v in vals]
    return labels.keys(), tasks


def _task_result(
    emb: torch.Tensor, values: list[Optional[str]], confidence: float, seed: int, notes: Notes, where: str
) -> TaskResult:
    from ..stats import bootstrap_ci

    names = sorted({v for v in values if v is not None})
    if len(names) < 2:
        notes.warn(f"{where}: skipped, it needs at least 2 groups with a usable face, found {names}")
        return {
            "skipped": f"needs at least 2 groups, found {names}",
            "groups": [],
            "accuracy": None,
            "n": 0,
            "predictions": [],
            "small_groups": [],
        }
    labels = torch.tensor([names.index(v) if v is not None else -1 for v in values])
    sizes = {n: int((labels == g).sum()) for g, n in enumerate(names)}
    small = [n for n in names if sizes[n] < MIN_GROUP_SIZE]
    for n in small:
        notes.warn(
            f"{where}: group {n!r} has {sizes[n]} image(s) with a usable face; a group needs at least "
            f"{MIN_GROUP_SIZE} (2 besides the image being classified) for a distance interval, so its own "
            "images can never be assigned to it (recall 0 by construction); add images or merge groups"
        )
    dist = group_distances(emb, labels, len(names), confidence)
    res = group_scores(dist, labels, names)
    pred = res["predicted"]
    keep = labels >= 0
    correct = (pred == labels[keep]).double().numpy()
    notes.small_set(len(correct), f"labelled images in {where}")
    return {
        "small_groups": small,
        "groups": [asdict(g) for g in res["groups"]],
        "accuracy": bootstrap_ci(correct, seed=seed).to_dict() if len(correct) else None,
        "n": res["n"],
        "predictions": [
            {
                "index": int(i),
                "true": names[int(labels[i])],
                "predicted": names[int(p)],
                "distances": {n: float(d) for n, d in zip(names, dist[i])},
            }
            for i, p in zip(torch.nonzero(keep).flatten(), pred)
        ],
    }


def evaluate(
    images: Path,
    labels: Path,
    models: Sequence[str] = (DEFAULT_MODEL,),
    attributes: Optional[Sequence[str]] = None,
    combine: Sequence[Sequence[str]] = (),
    confidence: float = 0.95,
    batch_size: int = 32,
    num_workers: int = 0,
    progress: bool = True,
    seed: int = 0,
) -> AttributesReport:
    """Attribute-group classification of the labelled photos under each model (JSON-ready).

    Warns (``UserWarning``, also listed under ``"warnings"``) about groups of fewer than
    :data:`~perface.eval.groups.MIN_GROUP_SIZE` images and tasks with fewer than
    :data:`~perface.eval.report.MIN_ITEMS` scored images.
    """
    import perface

    from ..signature import signature_of

    files, tasks = attribute_tasks(labels, attributes, combine)
    paths = [Path(images) / f for f in files]
    report: AttributesReport = {
        "images": str(images),
        "labels": str(labels),
        "confidence": confidence,
        "files": files,
        "tasks": list(tasks),
        "models": [],
    }
    notes = Notes()
    for name in models:
        model = perface.PerFace(name)
        res = perface.embed_images(
            [str(p) for p in paths], model=model, batch_size=batch_size, num_workers=num_workers, progress=progress
        )
        ok = res.ok
        failures = [{"file": str(paths[i]), "reason": r} for i, r in sorted(res.errors.items())]
        ok_idx = torch.nonzero(ok).flatten().tolist()
        per_task: dict[str, TaskResult] = {}
        for task, values in tasks.items():
            out = _task_result(
                res.embeddings[ok], [values[i] for i in ok_idx], confidence, seed, notes, f"{model.name}, task {task!r}"
            )
            for p in out["predictions"]:
                p["file"] = files[ok_idx[p.pop("index")]]
            per_task[task] = out
        report["models"].append(
            {
                "model": model.name,
                "perceptual": bool(model.spec.perceptual),
                "signature": str(signature_of(model, "detect")),
                "n_ok": len(ok_idx),
                "failures": failures,
                "tasks": per_task,
            }
        )
    report["warnings"] = notes.items
    return report


def _f(x: Optional[float]) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _markdown(report: AttributesReport) -> str:
    lines = [
        "# Attribute-group classification",
        "",
        f"- images: `{report['images']}`, labels: `{report['labels']}`, {len(report['files'])} labelled files",
        f"- distance to a group: upper bound of the {report['confidence']:.0%} CI of the per-image "
        "distances 1 - cos (query excluded); nearest group wins. AUC: one-vs-rest, score = -distance. "
        f"A group of fewer than {MIN_GROUP_SIZE} images is marked *too small*: its own images can never be "
        "assigned to it.",
        "",
    ]
    lines += warnings_markdown(report.get("warnings") or [])
    for m in report["models"]:
        lines += [
            f"## `{m['model']}` ({'perceptual' if m['perceptual'] else 'identity baseline'})",
            "",
            f"Metric signature: `{m['signature']}`",
            "",
        ]
        lines += ["| task | group | support | precision | recall | accuracy | AUC |", "|---|---|---|---|---|---|---|"]
        for task, t in m["tasks"].items():
            if "skipped" in t:
                lines.append(f"| {task} | skipped: {t['skipped']} | | | | | |")
                continue
            for g in t["groups"]:
                name = f"{g['group']} (*too small*)" if g["group"] in t.get("small_groups", ()) else g["group"]
                lines.append(
                    f"| {task} | {name} | {g['support']} | {_f(g['precision'])} | "
                    f"{_f(g['recall'])} | {_f(g['accuracy'])} | {_f(g['auc'])} |"
                )
            acc = t["accuracy"]
            overall = f"{acc['mean']:.3f} [{acc['ci_low']:.3f}, {acc['ci_high']:.3f}]" if acc else "n/a"
            lines.append(f"| {task} | **all** | {t['n']} | | | {overall} | |")
        lines += (
            ["", f"Failures ({len(m['failures'])}):"]
            + ([f"- `{f['file']}`: {f['reason']}" for f in m["failures"]] or ["- none"])
            + [""]
        )
    return "\n".join(lines)


def _json_safe(obj: object) -> object:
    """NaN (precision of a group never predicted) and inf (distance to a group too small for an
    interval) -> None, so the JSON is standard."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


def _write_groups_csv(report: AttributesReport, path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(
            ["model", "task", "group", "support", "precision", "recall", "accuracy", "auc", "too_small", "signature"]
        )
        for m in report["models"]:
            for task, t in m["tasks"].items():
                for g in t["groups"]:
                    w.writerow(
                        [
                            m["model"],
                            task,
                            g["group"],
                            g["support"],
                            *(f"{g[k]:.6f}" for k in ("precision", "recall", "accuracy", "auc")),
                            int(g["group"] in t.get("small_groups", ())),
                            m["signature"],
                        ]
                    )


def _write_predictions_csv(report: AttributesReport, path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["model", "task", "file", "true", "predicted", "distances", "signature"])
        for m in report["models"]:
            for task, t in m["tasks"].items():
                for p in t["predictions"]:
                    w.writerow(
                        [
                            m["model"],
                            task,
                            p["file"],
                            p["true"],
                            p["predicted"],
                            json.dumps({k: round(v, 6) for k, v in p["distances"].items()}),
                            m["signature"],
                        ]
                    )


def write_report(report: AttributesReport, out: Path) -> dict[str, Path]:
    """Write ``report.md``, ``groups.csv``, ``predictions.csv`` and ``summary.json`` into ``out``
    (built in a temporary folder, moved into place when complete)."""
    return write_outputs(
        Path(out),
        {
            "markdown": ("report.md", lambda p: p.write_text(_markdown(report), encoding="utf-8")),
            "groups": ("groups.csv", lambda p: _write_groups_csv(report, p)),
            "predictions": ("predictions.csv", lambda p: _write_predictions_csv(report, p)),
            "json": (
                "summary.json",
                lambda p: p.write_text(json.dumps(_json_safe(report), indent=2), encoding="utf-8"),
            ),
        },
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--images", required=True, type=Path, metavar="DIR", help="folder the labels' file paths are relative to"
    )
    parser.add_argument(
        "--labels",
        required=True,
        type=Path,
        metavar="CSV",
        help="CSV with a 'file' column and one column per attribute (e.g. gender, age)",
    )
    parser.add_argument(
        "--attribute",
        action="append",
        dest="attributes",
        metavar="COLUMN",
        help="attribute column to evaluate; repeat for several (default: every column but 'file')",
    )
    parser.add_argument(
        "--combine",
        action="append",
        nargs="+",
        default=[],
        metavar="COLUMN",
        help="also evaluate the intersection of these columns, e.g. --combine gender age (repeatable; default: none)",
    )
    add_model(parser, repeat=True, what="model to score")
    parser.add_argument(
        "--confidence",
        type=float,
        default=0.95,
        help="level of the interval whose upper bound is an image's distance to a group",
    )
    parser.add_argument("--out", type=Path, default=Path("attributes_eval"), metavar="DIR", help="output folder")
    add_batch_size(parser, 32)
    add_workers(parser)
    add_quiet(parser)


def run(args: argparse.Namespace) -> int:
    if not args.images.is_dir():
        raise FileNotFoundError(errno.ENOENT, "no such folder", str(args.images))
    report = evaluate(
        args.images,
        args.labels,
        args.models or [DEFAULT_MODEL],
        args.attributes,
        args.combine,
        args.confidence,
        args.batch_size,
        args.workers,
        not args.quiet,
    )
    paths = write_report(report, args.out)
    print(_markdown(report))
    print("written: " + ", ".join(str(p) for p in paths.values()))
    failed = max((len(m["failures"]) for m in report["models"]), default=0)
    return input_failures(
        "python -m perface.eval attributes",
        failed,
        len(report["files"]),
        "images",
        f"under 'Failures' in {paths['markdown']}",
    )
