"""``python -m perface.eval anonymization``: how much an anonymizer leaves of the original face.

For each original/anonymized pair (matched by file name without extension), the similarity under
every model asked for (a perceptual PerFace checkpoint and/or identity baselines), its mean with
a bootstrap 95% CI, the verification rate at given thresholds (pairs a verifier would still link)
and top-1/top-5 re-identification of each anonymized face in a gallery (the originals by
default). Unreadable files and photos without a face are counted and listed, never dropped.
Writes ``report.md``, ``pairs.csv``, ``summary.json`` and ``similarity_hist.png``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from .._plotting import pyplot, save_figure
from ..imageio import IMAGE_SUFFIXES
from ..registry import DEFAULT_MODEL

__all__ = ["list_images", "match_pairs", "reid_ranks", "evaluate", "write_report",
           "add_arguments", "run"]

DEFAULT_THRESHOLDS = (0.3, 0.4, 0.5)
TOP_K = (1, 5)


def list_images(folder: Path) -> Tuple[Dict[str, Path], List[Tuple[str, str]]]:
    """Image files under ``folder`` (recursive) keyed by relative path without extension.

    Returns ``(files, skipped)``: ``skipped`` lists ``(path, reason)`` for files whose key is
    taken by another file (``a.jpg`` beside ``a.png``): the first in sorted order is kept.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a directory; pass a folder of face photos")
    files: Dict[str, Path] = {}
    skipped: List[Tuple[str, str]] = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
        key = path.relative_to(folder).with_suffix("").as_posix()
        if key in files:
            skipped.append((str(path), f"same name as {files[key].name}; rename one of them"))
        else:
            files[key] = path
    return files, skipped


def match_pairs(original: Dict[str, Path], anonymized: Dict[str, Path]) -> Tuple[List[str], List[str], List[str]]:
    """``(matched keys, keys only in original, keys only in anonymized)``, each sorted."""
    return (sorted(original.keys() & anonymized.keys()), sorted(original.keys() - anonymized.keys()),
            sorted(anonymized.keys() - original.keys()))


def reid_ranks(queries: torch.Tensor, query_ids: Sequence[str], gallery: torch.Tensor,
               gallery_ids: Sequence[str]) -> List[Optional[int]]:
    """Rank (0 = first) of each query's true identity among the gallery items.

    ``queries`` (Q, D) and ``gallery`` (M, D) are L2-normalized. The rank is the number of
    gallery items of other identities more similar than the best item of the true identity
    (ties favour the true identity); ``None`` where the identity is absent from the gallery.
    """
    sims = queries.double() @ gallery.double().T  # (Q, M)
    gids = list(gallery_ids)
    ranks: List[Optional[int]] = []
    for q, qid in enumerate(query_ids):
        same = torch.tensor([g == qid for g in gids], dtype=torch.bool)
        if not bool(same.any()):
            ranks.append(None)
            continue
        best_true = sims[q][same].max()
        ranks.append(int((sims[q][~same] > best_true).sum()))
    return ranks


@dataclass
class ModelResult:
    """One model's results over the matched pairs."""

    name: str
    perceptual: bool
    similarities: Dict[str, float]  # pair key -> cosine (successful pairs only)
    failures: List[Dict[str, str]]  # {"file", "role", "reason"}
    summary: Dict[str, object] = field(default_factory=dict)


def _identity_map(path: Optional[Path]) -> Dict[str, str]:
    if path is None:
        return {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"file", "identity"} <= set(rows[0]):
        raise ValueError(f"{path}: expected a CSV with columns 'file' and 'identity'")
    return {Path(r["file"]).with_suffix("").as_posix(): r["identity"] for r in rows}


def _embed(paths: List[Path], model, batch_size: int, num_workers: int, progress: bool):
    """Embeddings (N, D), ok mask and {index: reason} for photo files, through the photo pipeline."""
    import perface

    if not paths:
        return torch.empty(0, model.embedding_size), torch.zeros(0, dtype=torch.bool), {}
    res = perface.embed_images([str(p) for p in paths], model=model, batch_size=batch_size,
                               num_workers=num_workers, progress=progress)
    return res.embeddings, res.ok, dict(res.errors)


def _summarize(values: List[float], thresholds: Sequence[float], ranks: List[Optional[int]],
               n_gallery_ids: int, seed: int) -> Dict[str, object]:
    from ..stats import bootstrap_ci

    out: Dict[str, object] = {"n_pairs": len(values)}
    if values:
        x = torch.tensor(values, dtype=torch.float64)
        out["similarity"] = bootstrap_ci(x.numpy(), seed=seed).to_dict()
        out["median"] = float(x.median())
        out["verification"] = {
            f"{t:g}": bootstrap_ci((x >= t).double().numpy(), seed=seed).to_dict() for t in thresholds}
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
) -> Dict[str, object]:
    """Evaluate an anonymizer's output; returns the JSON-ready report (see the module docstring).

    ``identities``: optional CSV ``file,identity`` naming who is in each file (files not listed
    are their own identity), so several photos of one person count as correct re-identifications.
    """
    from ..model import PerFace

    orig_files, skipped_o = list_images(original)
    anon_files, skipped_a = list_images(anonymized)
    keys, only_orig, only_anon = match_pairs(orig_files, anon_files)
    if not keys:
        raise ValueError(f"no file names in common between {original} and {anonymized}; pairs are "
                         "matched by file name without extension (a.jpg <-> a.png)")
    gal_files, skipped_g = (orig_files, []) if gallery is None else list_images(gallery)
    ids = _identity_map(identities)
    ident = lambda key: ids.get(key, key)  # noqa: E731
    gal_keys = sorted(gal_files)

    results: List[ModelResult] = []
    for name in models:
        model = PerFace(name)
        roles: Dict[Path, List[str]] = {}
        for role, paths in (("original", [orig_files[k] for k in keys]), ("anonymized", [anon_files[k] for k in keys]),
                            ("gallery", [gal_files[k] for k in gal_keys])):
            for p in paths:
                roles.setdefault(p, []).append(role)
        unique = list(roles)  # each file embedded once, whatever roles it plays
        emb, ok, errors = _embed(unique, model, batch_size, num_workers, progress)
        row = {p: i for i, p in enumerate(unique)}
        take = lambda paths: torch.tensor([row[p] for p in paths], dtype=torch.long)  # noqa: E731
        o_idx, a_idx, g_idx = (take([orig_files[k] for k in keys]), take([anon_files[k] for k in keys]),
                               take([gal_files[k] for k in gal_keys]))
        o_emb, o_ok, a_emb, a_ok = emb[o_idx], ok[o_idx], emb[a_idx], ok[a_idx]
        g_emb, g_ok = emb[g_idx], ok[g_idx]
        failures = [{"file": str(unique[i]), "role": "/".join(dict.fromkeys(roles[unique[i]])), "reason": r}
                    for i, r in sorted(errors.items())]
        both = o_ok & a_ok
        sims = (o_emb[both].double() * a_emb[both].double()).sum(dim=1)
        similarities = {k: float(s) for k, s in zip([k for k, b in zip(keys, both) if b], sims)}
        g_keep = [k for k, good in zip(gal_keys, g_ok) if good]
        ranks = reid_ranks(a_emb[a_ok], [ident(k) for k, good in zip(keys, a_ok) if good],
                           g_emb[g_ok], [ident(k) for k in g_keep])
        res = ModelResult(model.name, bool(model.spec.perceptual), similarities, failures)
        res.summary = _summarize(list(similarities.values()), thresholds, ranks,
                                 len({ident(k) for k in g_keep}), seed)
        res.summary["failed_pairs"] = len(keys) - int(both.sum())
        results.append(res)

    return {
        "original": str(original), "anonymized": str(anonymized),
        "gallery": str(gallery) if gallery is not None else f"{original} (originals)",
        "matched_pairs": len(keys), "thresholds": list(thresholds),
        "unmatched": {"original_only": [str(orig_files[k]) for k in only_orig],
                      "anonymized_only": [str(anon_files[k]) for k in only_anon],
                      "skipped_same_name": [{"file": f, "reason": r} for f, r in skipped_o + skipped_a + skipped_g]},
        "keys": keys,
        "files": {k: [str(orig_files[k]), str(anon_files[k])] for k in keys},
        "models": [{"model": r.name, "kind": "perceptual" if r.perceptual else "identity baseline",
                    **r.summary, "failures": r.failures, "similarities": r.similarities} for r in results],
    }


def _fmt(est: Optional[dict]) -> str:
    if not est:
        return "n/a"
    return f"{est['mean']:.3f} [{est['ci_low']:.3f}, {est['ci_high']:.3f}]"


def _markdown(report: Dict[str, object]) -> str:
    models = report["models"]
    lines = [
        "# Anonymization evaluation", "",
        f"- original: `{report['original']}`", f"- anonymized: `{report['anonymized']}`",
        f"- gallery: `{report['gallery']}`", f"- matched pairs: {report['matched_pairs']}", "",
        "Similarity is the cosine of the model's embeddings (1 = the same face); lower means the "
        "anonymized face looks less like the original. Means and rates with bootstrap 95% CI. "
        "Verification at t: share of pairs with similarity >= t (a verifier would link them). "
        "Re-identification: share of anonymized faces whose true identity ranks in the top k of "
        "the gallery (lower is more anonymous).", "",
    ]
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
            lines.append(f"\n`{m['model']}`: re-identification over {m['reid_queries']} anonymized faces "
                         f"against {m['reid_gallery_identities']} gallery identities (chance: {chance}); "
                         f"{m['reid_no_true_match']} without their identity in the gallery.")
    un = report["unmatched"]
    problems = [f"- original without anonymized counterpart: `{f}`" for f in un["original_only"]]
    problems += [f"- anonymized without original: `{f}`" for f in un["anonymized_only"]]
    problems += [f"- skipped `{s['file']}`: {s['reason']}" for s in un["skipped_same_name"]]
    for m in models:
        problems += [f"- `{m['model']}`: {f['role']} `{f['file']}`: {f['reason']}" for f in m["failures"]]
    lines += ["", "## Unmatched files and failures", ""] + (problems or ["None."])
    lines += ["", "Histogram: `similarity_hist.png`; per-pair values: `pairs.csv`; everything: `summary.json`.", ""]
    return "\n".join(lines)


def _histogram(report: Dict[str, object], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for m in report["models"]:
        values = list(m["similarities"].values())
        if values:
            ax.hist(values, bins=40, range=(-1, 1), alpha=0.5,
                    label=f"{m['model']} ({m['kind']})")
    for i, t in enumerate(report["thresholds"]):
        ax.axvline(t, color="grey", linestyle=":", linewidth=1, label="verification thresholds" if i == 0 else None)
    ax.set_xlabel("similarity of anonymized to original (cosine)")
    ax.set_ylabel("pairs")
    ax.set_title(f"{report['matched_pairs']} pairs")
    ax.legend(fontsize=8)
    try:
        save_figure(fig, path, dpi=120)
    finally:
        plt.close(fig)


def write_report(report: Dict[str, object], out: Path, plot: bool = True) -> Dict[str, Path]:
    """Write ``report.md``, ``pairs.csv``, ``summary.json`` (and the histogram) into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "report.md", "csv": out / "pairs.csv", "json": out / "summary.json"}
    paths["markdown"].write_text(_markdown(report), encoding="utf-8")
    paths["json"].write_text(json.dumps(report, indent=2), encoding="utf-8")
    with open(paths["csv"], "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["name", "original", "anonymized"] + [f"similarity_{m['model']}" for m in report["models"]])
        for key in report["keys"]:
            sims = [m["similarities"].get(key, math.nan) for m in report["models"]]
            w.writerow([key, *report["files"][key]] + ["" if math.isnan(s) else f"{s:.6f}" for s in sims])
    if plot:
        paths["histogram"] = out / "similarity_hist.png"
        _histogram(report, paths["histogram"])
    return paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--original", required=True, type=Path, help="folder of original photos")
    parser.add_argument("--anonymized", required=True, type=Path,
                        help="folder of anonymized photos, same file names (any extension)")
    parser.add_argument("--gallery", type=Path, help="re-identification gallery folder (default: the originals)")
    parser.add_argument("--model", action="append", dest="models", metavar="NAME",
                        help=f"checkpoint name or path; repeat for several (default {DEFAULT_MODEL})")
    parser.add_argument("--thresholds", type=float, nargs="+", default=list(DEFAULT_THRESHOLDS),
                        help="similarity thresholds for the verification rate (default %(default)s)")
    parser.add_argument("--identities", type=Path,
                        help="CSV file,identity: who is in each original/gallery file (default: one identity per file)")
    parser.add_argument("--out", type=Path, default=Path("anonymization_eval"), help="output folder")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers for photo loading")
    parser.add_argument("--no-plot", action="store_true", help="skip the histogram PNG")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    report = evaluate(args.original, args.anonymized, args.gallery, args.models or [DEFAULT_MODEL],
                      args.thresholds, args.identities, args.batch_size, args.workers, not args.quiet)
    paths = write_report(report, args.out, plot=not args.no_plot)
    print(_markdown(report))
    print("written: " + ", ".join(str(p) for p in paths.values()))
    return 0
