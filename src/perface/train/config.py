"""Training settings: every knob of ``python -m perface.train``, and the two recipes.

``recipe="default"`` is made for a user's own small set of judgments (a few hundred triplets, a
few dozen people); ``recipe="paper"`` is the PerFace paper's setting for SimCelebA. A knob left
at ``None`` takes its recipe's value; one set explicitly wins over the recipe.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any, Optional

__all__ = ["TrainConfig", "CHOICES", "RECIPES"]

CHOICES = {
    "recipe": ("default", "paper"),
    "train_set": ("unanimous", "all"),
    "lr_schedule": ("constant", "cosine"),
    "bn": ("train", "frozen"),
    "align": ("none", "convert"),
    "amp": ("auto", "off", "bf16", "fp16"),
    "layout": ("target-major", "source-major"),
    "images": ("photos", "crops"),
}

# What the recipes set (every other knob is shared). The paper (Kumagai et al., ICIP 2025) states
# the loss, SGD lr 0.01 / momentum 0.9 / weight decay 5e-4, batch 32 and training all layers;
# epochs, early stopping and BatchNorm statistics it leaves open (see docs/reproducing.md).
# "default": BatchNorm keeps the initialization's statistics (batches of a few people would
# otherwise re-centre the features on them), a fixed budget of epochs with the best one chosen
# on validation; measured in docs/training.md ("Measured here").
RECIPES: dict[str, dict[str, Any]] = {
    "default": {"bn": "frozen", "epochs": 12, "patience": 0},
    "paper": {"bn": "train", "epochs": 30, "patience": 5},
}


@dataclass
class TrainConfig:
    """Every knob of ``python -m perface.train`` (the command-line flags have the same names).

    Shared by both recipes: loss ``max(0, cos(x, x-) - cos(x, x+) + margin)`` with margin 0.1,
    SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch 32 triplets, all layers trained, the
    unanimous triplets (D2) of the training split. ``bn``, ``epochs`` and ``patience`` come from
    :data:`RECIPES` when left at ``None``; :meth:`resolved` fills them in.
    """

    data: str
    out: str
    recipe: str = "default"
    answers: Optional[str] = None  # SimCelebA answers file (default DATA/triplet_answers.csv)
    images: Optional[str] = None  # generic CSV: "photos" (default) or "crops"
    crop_template: Optional[str] = None  # generic CSV crops: their template
    missing_list: Optional[str] = None  # write every unusable image (path, problem, triplets) here
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
    min_val: int = 100  # validation triplets wanted; topped up from the training part (at most 20% of it)
    train_set: str = "unanimous"  # unanimous (D2) | all (D1, majority answer)
    epochs: Optional[int] = None  # recipe
    batch_size: int = 32
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    margin: float = 0.1
    lr_schedule: str = "constant"  # constant | cosine
    hflip: float = 0.5  # probability of mirroring a whole triplet
    bn: Optional[str] = None  # recipe: train | frozen (keep BatchNorm running statistics)
    align: str = "none"  # none: learn on the crops as they are | convert: warp crops to the init's template
    patience: Optional[int] = None  # recipe: epochs without validation gain before stopping; 0 = never
    seed: int = 0
    workers: int = 0
    amp: str = "auto"  # auto (bf16/fp16 on CUDA) | off | bf16 | fp16
    compile: bool = False  # torch.compile the network (CUDA)
    device: str = "auto"
    eval_batch_size: int = 64
    max_steps: Optional[int] = None  # stop after this many optimizer steps (smoke tests, timing)
    resume: bool = True
    progress: bool = True
    log_every: int = 10

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def resolved(self) -> TrainConfig:
        """A copy with every knob left at ``None`` set from :data:`RECIPES` [``recipe``]."""
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {tuple(RECIPES)}, got {self.recipe!r}")
        preset = {k: v for k, v in RECIPES[self.recipe].items() if getattr(self, k) is None}
        return dataclasses.replace(self, **preset)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first knob out of its range (call on :meth:`resolved`)."""
        for key, allowed in CHOICES.items():
            if getattr(self, key) not in allowed and not (key == "images" and self.images is None):
                raise ValueError(f"{key} must be one of {allowed}, got {getattr(self, key)!r}")
        if self.batch_size < 1 or (self.epochs or 0) < 1:
            raise ValueError(f"batch size and epochs must be >= 1, got {self.batch_size} and {self.epochs}")
        if not 0.0 <= self.hflip <= 1.0:
            raise ValueError(f"hflip is a probability in [0, 1], got {self.hflip}")
        if self.workers < 0 or self.min_val < 0 or (self.patience or 0) < 0:
            raise ValueError("workers, min_val and patience must be >= 0")
