"""Training settings; defaults are the PerFace paper's recipe."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

__all__ = ["TrainConfig", "CHOICES"]

CHOICES = {"train_set": ("unanimous", "all"), "lr_schedule": ("constant", "cosine"), "bn": ("train", "frozen"),
           "align": ("none", "convert"), "amp": ("auto", "off", "bf16", "fp16"),
           "layout": ("target-major", "source-major"), "images": ("photos", "crops")}


@dataclass
class TrainConfig:
    """Every knob of ``python -m perface.train`` (the command-line flags have the same names).

    Paper defaults: ArcFace iresnet50 (MS1MV3) initialization, all layers trained, loss
    ``max(0, cos(x, x-) - cos(x, x+) + 0.1)``, SGD lr 0.01, momentum 0.9, weight decay 5e-4,
    batch 32 triplets, trained on the unanimous triplets (D2) of the training split.
    """

    data: str
    out: str
    answers: Optional[str] = None  # SimCelebA answers file (default DATA/triplet_answers.csv)
    images: Optional[str] = None  # generic CSV: "photos" (default) or "crops"
    crop_template: Optional[str] = None  # generic CSV crops: their template
    init: str = "arcface-r50-ms1mv3"
    name: Optional[str] = None  # default: perface-<init>
    license: Optional[str] = None  # default: the initialization's license
    split: str = "random"  # random | unseen | seen-source | seen-target | FILE.json
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    holdout: float = 0.2
    val_holdout: float = 0.1
    layout: str = "target-major"
    grid: int = 80
    train_set: str = "unanimous"  # unanimous (D2) | all (D1, majority answer)
    epochs: int = 30
    batch_size: int = 32
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    margin: float = 0.1
    lr_schedule: str = "constant"  # constant | cosine
    hflip: float = 0.5  # probability of mirroring a whole triplet
    bn: str = "train"  # train | frozen (keep BatchNorm running statistics)
    align: str = "none"  # none: learn on the crops as they are | convert: warp crops to the init's template
    patience: int = 5  # epochs without validation gain before stopping; 0 = never stop early
    seed: int = 0
    workers: int = 4
    amp: str = "auto"  # auto (bf16/fp16 on CUDA) | off | bf16 | fp16
    device: str = "auto"
    eval_batch_size: int = 64
    max_steps: Optional[int] = None  # stop after this many optimizer steps (smoke tests, timing)
    resume: bool = True
    progress: bool = True
    log_every: int = 10

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def validate(self) -> None:
        for key, allowed in CHOICES.items():
            if getattr(self, key) not in allowed and not (key == "images" and self.images is None):
                raise ValueError(f"{key} must be one of {allowed}, got {getattr(self, key)!r}")
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError("batch_size and epochs must be >= 1")
        if not 0.0 <= self.hflip <= 1.0:
            raise ValueError(f"hflip is a probability in [0, 1], got {self.hflip}")
