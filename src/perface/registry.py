"""The registry of named checkpoints: what each is, where its weights live, how it was made.

This module knows nothing about layers or downloads: an entry is data. ``perface.hub`` turns
an entry's :class:`WeightsSource` into a local file; ``perface.archs`` builds the network.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Optional

from .errors import UnknownModelError

__all__ = [
    "WeightsSource",
    "ModelSpec",
    "DetectorSpec",
    "MODELS",
    "DEFAULT_MODEL",
    "DETECTOR",
    "get_spec",
    "list_models",
    "register",
]


@dataclass(frozen=True)
class WeightsSource:
    """Where a checkpoint's weights live.

    ``embedded``: a file shipped in ``perface/weights/``; ``hub``: ``filename`` in the Hugging
    Face Hub repo ``repo_id`` at the pinned ``revision``. ``format`` is ``"safetensors"`` or
    ``"pth"`` (a legacy pickle, loaded with ``weights_only=True`` and converted once to
    safetensors in the cache). ``sha256`` pins the file's bytes; an empty ``sha256`` means
    "not pinned": the first download is trusted and its hash recorded (trust on first use).
    ``provenance`` says where the pinned revision and hash were confirmed.
    """

    kind: str  # "embedded" | "hub"
    filename: str
    sha256: str
    size: int
    repo_id: Optional[str] = None
    revision: Optional[str] = None
    format: str = "safetensors"
    provenance: str = ""


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build, feed and describe one checkpoint.

    Inputs are RGB in [0, 1]; the network sees ``(x - input_mean) / input_std``, resized to
    ``input_size`` and aligned to the named landmark ``template``.

    ``cpu_chunk``: a speed knob, not part of the numbers. A frozen network on the CPU embeds at
    most this many faces per forward pass (``PerFace.embed``, the photo pipeline) and training
    on the CPU with frozen BatchNorm takes micro-batches; ``None``: whole batches. Results and
    gradients are the same either way (up to float32 rounding).
    """

    name: str
    arch: str
    embedding_size: int
    template: str
    input_mean: float
    input_std: float
    license: str
    trained_on: str
    description: str
    input_size: int = 112
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    perceptual: bool = False
    weights: Optional[WeightsSource] = None
    scores: dict[str, Any] = field(default_factory=dict)
    citation: str = ""
    cpu_chunk: Optional[int] = None

    @property
    def kind(self) -> str:
        """``"perceptual"`` (fine-tuned on human judgments of likeness) or ``"identity baseline"``
        (a face-recognition embedding: same person or not)."""
        return "perceptual" if self.perceptual else "identity baseline"

    @property
    def measures(self) -> str:
        """What this checkpoint's similarity means: human-perceived likeness or identity."""
        if self.perceptual:
            return "perceptual similarity (fine-tuned on human judgments)"
        return "identity similarity (face recognition, not perceptual)"

    def to_config(self) -> dict[str, Any]:
        """JSON-ready config (``config.json`` of a saved checkpoint), without the weights location."""
        out = asdict(self)
        out.pop("weights")
        return out

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ModelSpec:
        """Inverse of :meth:`to_config`; unknown keys are an error (incompatible config)."""
        known = {f.name for f in fields(cls)} - {"weights"}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"config has unknown keys {unknown}; written by a newer perface? known: {sorted(known)}")
        try:
            return cls(**config)
        except TypeError as exc:  # a required key is missing
            raise ValueError(f"incompatible config: {exc}") from None


@dataclass(frozen=True)
class DetectorSpec:
    """The face detector perface uses for photos: facexlib's RetinaFace ``arch`` with pinned weights."""

    name: str
    arch: str
    weights: WeightsSource
    license: str
    description: str


_SFACE_CITATION = (
    "Zhong, Y., Deng, W., Hu, J., Zhao, D., Li, X., Wen, D. SFace: Sigmoid-Constrained Hypersphere "
    "Loss for Robust Face Recognition. IEEE TIP 30, 2021."
)
_ARCFACE_CITATION = (
    "Deng, J., Guo, J., Xue, N., Zafeiriou, S. ArcFace: Additive Angular Margin Loss for Deep Face "
    "Recognition. CVPR 2019."
)

MODELS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` to the registry (by ``spec.name``) and return it."""
    MODELS[spec.name] = spec
    return spec


register(
    ModelSpec(
        name="sface",
        arch="sface",
        embedding_size=128,
        template="arcface",
        input_mean=0.5,
        input_std=128.0 / 255.0,
        license="Apache-2.0",
        trained_on="CASIA-WebFace (face identification); OpenCV model zoo face_recognition_sface_2021dec",
        description=(
            "Identity baseline: SFace face-recognition embedding (MobileFaceNet-style, 128-d), not yet "
            "fine-tuned on perceptual judgments. Compact and permissively licensed."
        ),
        weights=WeightsSource(
            kind="embedded",
            filename="sface.safetensors",
            sha256="0f0fbaa20621cac2fb7d712a11539cb36d300d7e362cb282da56da4ea04fc3f4",
            size=38686744,
            provenance="converted by tools/convert_sface.py; see perface/weights/PROVENANCE.json",
        ),
        scores={"lfw_accuracy": 0.994, "lfw_accuracy_source": "OpenCV model zoo (int8bq model card)"},
        citation=_SFACE_CITATION,
        # this memory-bound network runs about twice as fast on the CPU in chunks of 8 faces, whose
        # activations (up to 26 MB) stay in glibc's heap (see perface._malloc) and closer to cache
        cpu_chunk=8,
    )
)

register(
    ModelSpec(
        name="arcface-r50-ms1mv3",
        arch="iresnet50",
        embedding_size=512,
        template="arcface",
        input_mean=0.5,
        input_std=0.5,
        license="insightface: non-commercial research use only",
        trained_on="MS1MV3 (face identification), insightface arcface_torch",
        description=(
            "The PerFace paper's initialization: insightface ArcFace iresnet50 trained on MS1MV3 "
            "(512-d). An identity model: triplet accuracy 0.701 on SimCelebA per the paper."
        ),
        weights=WeightsSource(
            kind="hub",
            repo_id="camenduru/show",
            filename="models/arcface/ms1mv3_arcface_r50_fp16.pth",
            revision="d95d9e7901b981d744390e052e05432499d3106c",
            sha256="ef005ba502a2d0f40e7b94245054d3a23e375776f7035080fcbce45ae49cfb01",
            size=174680546,
            format="pth",
            provenance=(
                "revision: a public camenduru/show commit whose models/arcface/ folder (added in 3bbb319, "
                "2023-06-13) is listed on the Hub; sha256: the Git LFS oid (size 174680546) of the same "
                "insightface file in the Hub mirrors lithiumice/ArcFace_PyTorch and torphix/face. The r50 "
                "blob page at this exact commit was not seen directly: a different file fails the check."
            ),
        ),
        scores={"simceleba_triplet_accuracy": 0.701, "source": "PerFace paper, Table 1"},
        citation=_ARCFACE_CITATION,
    )
)

DEFAULT_MODEL = "sface"

DETECTOR = DetectorSpec(
    name="retinaface-mnet025",
    arch="mobile0.25",
    weights=WeightsSource(
        kind="embedded",
        filename="retinaface_mnet025.safetensors",
        sha256="6797d194d9a89abfc594092a25da8aaa74c4210a304979c069a70de41f7490d8",
        size=1760232,
        provenance="converted by tools/convert_retinaface.py; see perface/weights/PROVENANCE.json",
    ),
    license="MIT",
    description="RetinaFace with a mobilenet0.25 backbone (facexlib's architecture): boxes, 5 landmarks, scores",
)


def list_models() -> list[str]:
    """Names of every registered checkpoint."""
    return sorted(MODELS)


def get_spec(name: str) -> ModelSpec:
    """The registry entry ``name``; raises :class:`UnknownModelError` suggesting close names."""
    try:
        return MODELS[name]
    except KeyError:
        close = difflib.get_close_matches(name, MODELS, n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}.{hint} Registered models: {', '.join(list_models())}. "
            "A local directory/file or a Hugging Face repo id ('org/repo[@revision]') works too."
        ) from None
