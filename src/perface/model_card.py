"""The model card (``README.md``) of a saved checkpoint: Hub metadata plus what a user must know.

The YAML front matter is what the Hugging Face Hub indexes (license, library, tags); the body
says what the similarity measures, what the network was trained on, its scores, the metric
signature to report beside them (:mod:`perface.signature`), its license, how to load it and
what to cite.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ._version import __version__
from .registry import ModelSpec

__all__ = ["PERFACE_CITATION", "hub_license", "render_model_card"]

PERFACE_CITATION = (
    "Kumagai, Wöhler, Ikehata, Aizawa. PerFace: Metric Learning in Perceptual Facial Similarity "
    "for Enhanced Face Anonymization. IEEE ICIP 2025. arXiv:2509.20281."
)

# Hub license identifiers for the license strings used in the registry.
_HUB_LICENSES = {"apache-2.0": "apache-2.0", "mit": "mit", "bsd-3-clause": "bsd-3-clause", "cc-by-4.0": "cc-by-4.0"}


def hub_license(license_text: str) -> dict[str, str]:
    """Hub front-matter fields for a free-text license: a known id, or ``other`` with a name."""
    key = license_text.strip().lower()
    if key in _HUB_LICENSES:
        return {"license": _HUB_LICENSES[key]}
    slug = re.sub(r"[^a-z0-9]+", "-", key).strip("-") or "unknown"
    return {"license": "other", "license_name": slug}


def _scores_table(scores: dict[str, Any]) -> list[str]:
    if not scores:
        return ["No scores recorded yet."]
    rows = ["| metric | value |", "|---|---|"]
    rows += [f"| {k} | {v} |" for k, v in scores.items()]
    return rows


def _signature_section(spec: ModelSpec, sha256: str) -> list[str]:
    from .signature import checkpoint_signature

    aligned = checkpoint_signature(spec, sha256, "none")
    photos = checkpoint_signature(spec, sha256, "detect")
    return [
        "## Metric signature",
        "",
        "Report the signature beside every number made with this checkpoint, so that readers can tell "
        "whether two numbers come from the same metric (`metric.signature` prints it; "
        "`perface signature --check 'SIGNATURE'` compares it with an installed perface):",
        "",
        f'- aligned {spec.input_size}x{spec.input_size} crops (`PerFace(...)(x, y)`, `align="none"`):',
        "",
        f"  `{aligned}`",
        "",
        '- photos (face detection and alignment: `perface.similarity`, the `perface` commands, `align="detect"`):',
        "",
        f"  `{photos}`",
    ]


def render_model_card(spec: ModelSpec, *, sha256: str = "", size: int = 0, repo_id: str = "") -> str:
    """Markdown model card with Hub YAML front matter for the checkpoint described by ``spec``.

    ``sha256``/``size`` describe ``model.safetensors``; with ``sha256`` the card carries the
    checkpoint's metric signatures (aligned crops and photos) for papers to copy. ``repo_id``
    (if published) goes into the usage snippet instead of a local path.
    """
    from huggingface_hub import ModelCardData

    tags = ["face-similarity", "perceptual-metric", "face-recognition", "pytorch", "safetensors", spec.arch]
    license_fields = hub_license(spec.license)
    meta = ModelCardData(
        library_name="perface",
        pipeline_tag="image-feature-extraction",
        tags=tags,
        model_name=spec.name,
        license=license_fields["license"],
        license_name=license_fields.get("license_name"),
    )
    load_from = repo_id or "path/to/this/directory"
    lines = [
        "---",
        meta.to_yaml(),
        "---",
        "",
        f"# {spec.name}",
        "",
        spec.description,
        "",
        f"**What it measures:** {spec.measures}. `PerFace` returns the distance `1 - cos` between "
        f"L2-normalized {spec.embedding_size}-d embeddings (0 = identical, 2 = opposite).",
        "",
        "## Usage",
        "",
        "```python",
        "import perface",
        "",
        f'metric = perface.PerFace.from_pretrained("{load_from}")',
        "d = metric(x, y)  # x, y: RGB (N, 3, H, W) in [0, 1], faces aligned to the template below",
        "```",
        "",
        "## Details",
        "",
        f"- Architecture: `{spec.arch}` {json.dumps(spec.arch_kwargs) if spec.arch_kwargs else ''}".rstrip(),
        f"- Input: {spec.input_size}x{spec.input_size} RGB face crop aligned to the `{spec.template}` "
        f"5-point template; the network sees `(x - {spec.input_mean:g}) / {spec.input_std:.6g}` with x in [0, 1]",
        f"- Embedding size: {spec.embedding_size}",
        f"- Training data: {spec.trained_on}",
        f"- Perceptual (fine-tuned on human similarity judgments): {'yes' if spec.perceptual else 'no'}",
    ]
    if sha256:
        lines.append(f"- `model.safetensors`: {size:,} bytes, sha256 `{sha256}`")
    lines += [f"- Written by perface {__version__}", "", "## Scores", "", *_scores_table(spec.scores)]
    if sha256:
        lines += ["", *_signature_section(spec, sha256)]
    lines += [
        "",
        "## License",
        "",
        f"{spec.license}. Check it before any use; it binds the weights, not the perface code (Apache-2.0).",
        "",
        "## Citation",
        "",
        f"- {PERFACE_CITATION}",
    ]
    if spec.citation:
        lines.append(f"- {spec.citation}")
    return "\n".join(lines) + "\n"
