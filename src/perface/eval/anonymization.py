"""``python -m perface.eval anonymization``: how much an anonymizer leaves of the original face.

For each original/anonymized pair (matched by file name without extension), the similarity under
every model asked for (a perceptual PerFace checkpoint and/or identity baselines), its mean with
a bootstrap 95% CI, the verification rate at given thresholds (pairs a verifier would still link)
and top-1/top-5 re-identification of each anonymized face in a gallery (the originals by
default). Unreadable files and photos without a face are counted and listed, never dropped.
Writes ``report.md``, ``pairs.csv``, ``summary.json`` and ``similarity_hist.png``, each with the
metric signature of every model; sets too small for their intervals to mean much are warned
about, on the terminal and in the report.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, TypedDict

import torch

from .._plotting import pyplot, save_figure
from ..commands import add_batch_size, add_model, add_quiet, add_workers, input_failures
from ..imageio import IMAGE_SUFFIXES
from ..labels import read_labels
from ..registry import DEFAULT_MODEL
from .report import (
    Notes,
    band,
    count_axis,
    headroom,
    reference_reading,
    threshold_lines,
    warnings_markdown,
    write_outputs,
)

if TYPE_CHECKING:
    from ..model import PerFace

__all__ = ["images_by_stem", "match_pairs", "reid_ranks", "evaluate", "write_report", "add_arguments", "run"]

DEFAULT_THRESHOLDS = (0.3, 0.4, 0.5)
TOP_K = (1, 5)


def images_by_stem(folder: Path) -> tuple[dict[str, Path], list[tuple[str, str]]]:
    """Image files under ``folder`` (recursive) keyed by relative path without extension.

    Returns ``(files, skipped)``: ``skipped`` lists ``(path, reason)`` for files whose key is
    taken by another file (``a.jpg`` beside ``a.png``): the first in sorted order is kept.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a directory; pass a folder of face photos")
    files: dict[str, Path] = {}
    skipped: list[tuple[str, str]] = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
        key = path.relative_to(folder).with_suffix("").as_posix()
        if key in files:
            skipped.append((str(path), f"same name as {files[key].name}; rename one of them"))
        else:
            files[key] = path
    return files, skipped


def match_pairs(original: dict[str, Path], anonymized: dict[str, Path]) -> tuple[list[str], list[str], list[str]]:
    """``(matched keys, keys only in original, keys only in anonymized)``, each sorted."""
    return (
        sorted(original.keys() & anonymized.keys()),
        sorted(original.keys() - anonymized.keys()),
        sorted(anonymized.keys() - original.keys()),
    )


def reid_ranks(
    queries: torch.Tensor, query_ids: Sequence[str], gallery: torch.Tensor, gallery_ids: Sequence[str]
) -> list[Optional[int]]:
    """Rank (0 = first) of each query's true identity among the gallery items.

    ``queries`` (Q, D) and ``gallery`` (M, D) are L2-normalized. The rank is the number of
    gallery items of other identities more similar than the best item of the true identity
    (ties favour the true identity); ``None`` where the identity is absent from the gallery.
    """
    sims = queries.double() @ gallery.double().T  # (Q, M)
    gids = list(gallery_ids)
    ranks: list[Optional[int]] = []
    for q, qid in enumerate(query_ids):
        same = torch.tensor([g == qid for g in gids], dtype=torch.bool)
        if not bool(same.any()):
            ranks.append(None)
            continue
        best_true = sims[q][same].max()
        ranks.append(int((sims[q][~same] > best_true).sum()))
    return ranks


class _SummaryFields(TypedDict):
    n_pairs: int


class Summary(_SummaryFields, total=False):
    """One model's numbers (:func:`_summarize`, then ``failed_pairs`` and ``reference_reading``);
    the estimates are ``perface.stats.Estimate.to_dict()``; keys without data are left out."""

    similarity: dict[str, Any]
    median: float
    verification: dict[str, dict[str, Any]]  # threshold -> estimate
    reid_queries: int
    reid_no_true_match: int
    reid_gallery_identities: int
    reid: dict[str, dict[str, Any]]  # "top1", "top5" -> estimate
    reid_chance: dict[str, float]
    failed_pairs: int
    reference_reading: Optional[dict[str, Any]]


class ModelReport(Summary):
    """One model's entry in the report."""

    model: str
    kind: str  # "perceptual" or "identity baseline"
    signature: str
    failures: list[dict[str, str]]  # {"file", "role", "reason"}
    similarities: dict[str, float]  # pair key -> cosine


class Unmatched(TypedDict):
    original_only: list[str]
    anonymized_only: list[str]
    skipped_same_name: list[dict[str, str]]  # {"file", "reason"}


class AnonymizationReport(TypedDict):
    """What :func:`evaluate` returns (JSON-ready)."""

    original: str
    anonymized: str
    gallery: str
    matched_pairs: int
    thresholds: list[float]
    unmatched: Unmatched
    keys: list[str]
    files: dict[str, list[str]]  # pair key -> [original, anonymized]
    models: list[ModelReport]
    warnings: list[str]


@dataclass
class ModelResult:
    """One model's results over the matched pairs."""

    name: str
    perceptual: bool
    signature: str  # perface.signature.signature_of(metric, "detect")
    similarities: dict[str, float]  # pair key -> cosine (successful pairs only)
    failures: list[dict[str, str]]  # {"file", "role", "reason"}
    summary: Summary = field(default_factory=lambda: Summary(n_pairs=0))


def _identity_map(path: Optional[Path]) -> dict[str, str]:
    """``--identities``: a labels CSV with columns ``file`` and ``identity`` -> {file key: identity}."""
    if path is None:
        return {}
    labels = read_labels(path, ("file",), required=("identity",))
    return {Path(r["file"]).with_suffix("").as_posix(): r["identity"] for r in labels.rows}


def _embed(
    paths: list[Path], model: PerFace, batch_size: int, num_workers: int, progress: bool
) -> tuple[torch.Tensor, torch.Tensor, dict[int, str]]:
    """Embeddings (N, D), ok mask and {index: reason} for photo files, through the photo pipeline."""
    import perface

    if not paths:
        return torch.empty(0, model.embedding_size), torch.zeros(0, dtype=torch.bool), {}
    res = perface.embed_images(
        [str(p) for p in paths], model=model, batch_size=batch_size, num_workers=num_workers, progress=progress
    )
    return res.embeddings, res.ok, dict(res.errors)


def _summarize(
    values: list[float], thresholds: Sequence[float], ranks: list[Optional[int]], n_gallery_ids: int, seed: int
) -> Summary:
    from ..stats import bootstrap_ci

    out: Summary = {"n_pairs": len(values)}
    if values:
        x = torch.tensor(values, dtype=torch.float64)
        out["similarity"] = bootstrap_ci(x.numpy(), seed=seed).to_dict()
        out["median"] = float(x.median())
        out["verification"] = {
            f"{t:g}": bootstrap_ci((x >= t).double().numpy(), seed=seed).to_dict() for t in thresholds
        }
    known = [r for r in ranks if r is not None]
    out["reid_queries"] = len(known)
    out["reid_no_true_match"] = len(ranks) - len(known)
    out["reid_gallery_identities"] = n_gallery_ids
    if known:
        r = torch.tensor(known)
        out["reid"] = {f"top{k}": bootstrap_ci((r < k).double().numpy(), seed=seed).to_dict() for k in TOP_K}
        out["reid_chance"] = {f"top{k}": min(1.0, k / max(1, n_gallery_ids)) for k in TOP_K}
    return out


def evaluate(
    original: Path,
    anonymized: Path,
    gallery: Optional[Path] = None,
    models: Sequence[str] = (DEFAULT_MODEL,),
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    identities: Optional[Path] = None,
    batch_size: int = 32,
    num_workers: int = 0,
    progress: bool = True,
    seed: int = 0,
) -> AnonymizationReport:
    """Evaluate an anonymizer's output; returns the JSON-ready report (see the module docstring).

    ``identities``: optional CSV ``file,identity`` naming who is in each file (files not listed
    are their own identity), so several photos of one person count as correct re-identifications.
    Warns (``UserWarning``, also listed under ``"warnings"``) when fewer than
    :data:`~perface.eval.report.MIN_ITEMS` pairs are scored or when the gallery has too few
    identities for a re-identification rate to mean anything.
    """
    from ..model import PerFace
    from ..signature import signature_of

    orig_files, skipped_o = images_by_stem(original)
    anon_files, skipped_a = images_by_stem(anonymized)
    keys, only_orig, only_anon = match_pairs(orig_files, anon_files)
    if not keys:
        raise ValueError(
            f"no file names in common between {original} and {anonymized}; pairs are "
            "matched by file name without extension (a.jpg <-> a.png)"
        )
    gal_files, skipped_g = (orig_files, []) if gallery is None else images_by_stem(gallery)
    ids = _identity_map(identities)

    def ident(key: str) -> str:  # files not in --identities are their own identity
        return ids.get(key, key)

    gal_keys = sorted(gal_files)
    notes = Notes()

    results: list[ModelResult] = []
    for name in models:
        model = PerFace(name)
        roles: dict[Path, list[str]] = {}
        for role, paths in (
            ("original", [orig_files[k] for k in keys]),
            ("anonymized", [anon_files[k] for k in keys]),
            ("gallery", [gal_files[k] for k in gal_keys]),
        ):
            for p in paths:
                roles.setdefault(p, []).append(role)
        unique = list(roles)  # each file embedded once, whatever roles it plays
        emb, ok, errors = _embed(unique, model, batch_size, num_workers, progress)
        row = {p: i for i, p in enumerate(unique)}
        take = lambda paths: torch.tensor([row[p] for p in paths], dtype=torch.long)  # noqa: B023 (used at once)
        o_idx, a_idx, g_idx = (
            take([orig_files[k] for k in keys]),
            take([anon_files[k] for k in keys]),
            take([gal_files[k] for k in gal_keys]),
        )
        o_emb, o_ok, a_emb, a_ok = emb[o_idx], ok[o_idx], emb[a_idx], ok[a_idx]
        g_emb, g_ok = emb[g_idx], ok[g_idx]
        failures = [
            {"file": str(unique[i]), "role": "/".join(dict.fromkeys(roles[unique[i]])), "reason": r}
            for i, r in sorted(errors.items())
        ]
        both = o_ok & a_ok
        sims = (o_emb[both].double() * a_emb[both].double()).sum(dim=1)
        similarities = {k: float(s) for k, s in zip([k for k, b in zip(keys, both) if b], sims)}
        g_keep = [k for k, good in zip(gal_keys, g_ok) if good]
        ranks = reid_ranks(
            a_emb[a_ok], [ident(k) for k, good in zip(keys, a_ok) if good], g_emb[g_ok], [ident(k) for k in g_keep]
        )
        res = ModelResult(
            model.name, bool(model.spec.perceptual), str(signature_of(model, "detect")), similarities, failures
        )
        n_ids = len({ident(k) for k in g_keep})
        res.summary = _summarize(list(similarities.values()), thresholds, ranks, n_ids, seed)
        res.summary["failed_pairs"] = len(keys) - int(both.sum())
        mean = res.summary.get("similarity", {}).get("mean") if similarities else None
        res.summary["reference_reading"] = reference_reading(mean, model)
        notes.small_set(len(similarities), f"pairs scored by {model.name}")
        if n_ids < 2:
            notes.warn(
                f"{model.name}: the gallery has {n_ids} identit{'y' if n_ids == 1 else 'ies'} with a usable "
                "face; re-identification needs at least 2 to mean anything (pass --gallery with more "
                "people, or --identities)"
            )
        elif n_ids <= max(TOP_K):
            notes.warn(
                f"{model.name}: the gallery has only {n_ids} identities, so top-{max(TOP_K)} "
                "re-identification is 1.0 by construction; compare top-1 with its chance level "
                f"{1 / n_ids:.3f}"
            )
        results.append(res)

    return {
        "original": str(original),
        "anonymized": str(anonymized),
        "gallery": str(gallery) if gallery is not None else f"{original} (originals)",
        "matched_pairs": len(keys),
        "thresholds": list(thresholds),
        "unmatched": {
            "original_only": [str(orig_files[k]) for k in only_orig],
            "anonymized_only": [str(anon_files[k]) for k in only_anon],
            "skipped_same_name": [{"file": f, "reason": r} for f, r in skipped_o + skipped_a + skipped_g],
        },
        "keys": keys,
        "files": {k: [str(orig_files[k]), str(anon_files[k])] for k in keys},
        "models": [
            {
                "model": r.name,
                "kind": "perceptual" if r.perceptual else "identity baseline",
                "signature": r.signature,
                **r.summary,
                "failures": r.failures,
                "similarities": r.similarities,
            }
            for r in results
        ],
        "warnings": notes.items,
    }


def _fmt(est: Optional[dict]) -> str:
    if not est:
        return "n/a"
    return f"{est['mean']:.3f} [{est['ci_low']:.3f}, {est['ci_high']:.3f}]"


def _markdown(report: AnonymizationReport) -> str:
    models = report["models"]
    lines = [
        "# Anonymization evaluation",
        "",
        f"- original: `{report['original']}`",
        f"- anonymized: `{report['anonymized']}`",
        f"- gallery: `{report['gallery']}`",
        f"- matched pairs: {report['matched_pairs']}",
        "",
        "Similarity is the cosine of the model's embeddings (1 = the same face); lower means the "
        "anonymized face looks less like the original. Means and rates with bootstrap 95% CI. "
        "Verification at t: share of pairs with similarity >= t (a verifier would link them). "
        "Re-identification: share of anonymized faces whose true identity ranks in the top k of "
        "the gallery (lower is more anonymous).",
        "",
        "Metric signatures (cite them with the numbers):",
        "",
    ]
    lines += [f"- `{m['model']}`: `{m['signature']}`" for m in models] + [""]
    lines += warnings_markdown(report.get("warnings") or [])
    head = ["model", "kind", "pairs", "failed pairs", "mean similarity"]
    head += [f"verified @{t:g}" for t in report["thresholds"]] + [f"re-id top-{k}" for k in TOP_K]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in models:
        row = [f"`{m['model']}`", m["kind"], str(m["n_pairs"]), str(m["failed_pairs"]), _fmt(m.get("similarity"))]
        row += [_fmt(m.get("verification", {}).get(f"{t:g}")) for t in report["thresholds"]]
        row += [_fmt(m.get("reid", {}).get(f"top{k}")) for k in TOP_K]
        lines.append("| " + " | ".join(row) + " |")
    for m in models:
        if "reid_chance" in m:
            chance = ", ".join(f"top-{k} {m['reid_chance'][f'top{k}']:.3f}" for k in TOP_K)
            lines.append(
                f"\n`{m['model']}`: re-identification over {m['reid_queries']} anonymized faces "
                f"against {m['reid_gallery_identities']} gallery identities (chance: {chance}); "
                f"{m['reid_no_true_match']} without their identity in the gallery."
            )
        reading = m.get("reference_reading")
        if reading:
            lines.append(f"\n`{m['model']}`: mean similarity {reading['text']}")
    un = report["unmatched"]
    problems = [f"- original without anonymized counterpart: `{f}`" for f in un["original_only"]]
    problems += [f"- anonymized without original: `{f}`" for f in un["anonymized_only"]]
    problems += [f"- skipped `{s['file']}`: {s['reason']}" for s in un["skipped_same_name"]]
    for m in models:
        problems += [f"- `{m['model']}`: {f['role']} `{f['file']}`: {f['reason']}" for f in m["failures"]]
    lines += ["", "## Unmatched files and failures", ""] + (problems or ["None."])
    lines += ["", "Histogram: `similarity_hist.png`; per-pair values: `pairs.csv`; everything: `summary.json`.", ""]
    return "\n".join(lines)


def _histogram(report: AnonymizationReport, path: Path) -> None:
    """Per-model histograms of the pair similarities, the verification thresholds labelled with
    their values, and (for a model with a shipped reference set) the band its same-person pairs span."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 4.4))
    for m in report["models"]:
        values = list(m["similarities"].values())
        if values:
            ax.hist(values, bins=40, range=(-1, 1), alpha=0.5, label=f"{m['model']} ({m['kind']}), {len(values)} pairs")
        ref = m.get("reference_reading")
        if ref and ref.get("same_range"):
            lo, hi = ref["same_range"]
            band(ax, lo, hi, f"{m['model']}: same-person pairs of reference set '{ref['reference']}'")
    threshold_lines(ax, report["thresholds"], "verification thresholds t (pairs >= t count as linked)")
    count_axis(ax.yaxis)
    headroom(ax)
    ax.set_xlim(-1, 1)
    ax.set_xlabel("cosine similarity of each anonymized face to its original (1 = same face)")
    ax.set_ylabel("pairs")
    models = ", ".join(f"{m['model']} ({m['kind']})" for m in report["models"])
    anonymized, original = Path(str(report["anonymized"])).name, Path(str(report["original"])).name
    ax.set_title(
        f"Anonymized vs original: {report['matched_pairs']} matched pairs, model {models}\n"
        f"anonymized {anonymized}/ vs original {original}/",
        fontsize=9,
        pad=12,
    )
    ax.legend(fontsize=7, loc="upper left")
    try:
        save_figure(fig, path, dpi=120, footer=[m["signature"] for m in report["models"]])
    finally:
        plt.close(fig)


def _write_pairs_csv(report: AnonymizationReport, path: Path) -> None:
    """One row per matched pair: each model's similarity and the signature of the metric that made it."""
    models = report["models"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(
            ["name", "original", "anonymized"]
            + [f"similarity_{m['model']}" for m in models]
            + [f"signature_{m['model']}" for m in models]
        )
        for key in report["keys"]:
            sims = [m["similarities"].get(key, math.nan) for m in models]
            w.writerow(
                [key, *report["files"][key]]
                + ["" if math.isnan(s) else f"{s:.6f}" for s in sims]
                + [m["signature"] for m in models]
            )


def write_report(report: AnonymizationReport, out: Path, plot: bool = True) -> dict[str, Path]:
    """Write ``report.md``, ``pairs.csv``, ``summary.json`` (and the histogram) into ``out``.

    The files are written to a temporary folder and moved into ``out`` when all are complete.
    """
    writers = {
        "markdown": ("report.md", lambda p: p.write_text(_markdown(report), encoding="utf-8")),
        "csv": ("pairs.csv", lambda p: _write_pairs_csv(report, p)),
        "json": ("summary.json", lambda p: p.write_text(json.dumps(report, indent=2), encoding="utf-8")),
    }
    if plot:
        writers["histogram"] = ("similarity_hist.png", lambda p: _histogram(report, p))
    return write_outputs(Path(out), writers)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--original", required=True, type=Path, metavar="DIR", help="folder of original photos")
    parser.add_argument(
        "--anonymized",
        required=True,
        type=Path,
        metavar="DIR",
        help="folder of anonymized photos, same file names (any extension)",
    )
    parser.add_argument(
        "--gallery", type=Path, metavar="DIR", help="re-identification gallery folder (default: the originals)"
    )
    add_model(parser, repeat=True, what="model to score")
    parser.add_argument(
        "--thresholds",
        type=float,
        nargs="+",
        default=list(DEFAULT_THRESHOLDS),
        metavar="T",
        help="similarity thresholds for the verification rate",
    )
    parser.add_argument(
        "--identities",
        type=Path,
        metavar="CSV",
        help="CSV file,identity: who is in each original/gallery file (default: one identity per file)",
    )
    parser.add_argument("--out", type=Path, default=Path("anonymization_eval"), metavar="DIR", help="output folder")
    add_batch_size(parser, 32)
    add_workers(parser)
    parser.add_argument("--no-plot", action="store_true", help="skip the histogram PNG")
    add_quiet(parser)


def run(args: argparse.Namespace) -> int:
    report = evaluate(
        args.original,
        args.anonymized,
        args.gallery,
        args.models or [DEFAULT_MODEL],
        args.thresholds,
        args.identities,
        args.batch_size,
        args.workers,
        not args.quiet,
    )
    paths = write_report(report, args.out, plot=not args.no_plot)
    print(_markdown(report))
    print("written: " + ", ".join(str(p) for p in paths.values()))
    gaps = report["unmatched"]
    unmatched = len(gaps["original_only"]) + len(gaps["anonymized_only"]) + len(gaps["skipped_same_name"])
    failed = unmatched + max((len(m["failures"]) for m in report["models"]), default=0)
    return input_failures(
        "python -m perface.eval anonymization",
        failed,
        None,
        "input file(s)",
        f"under 'Unmatched files and failures' in {paths['markdown']}",
    )
