"""``python -m perface.train --data DIR --out DIR``: fine-tune on triplet judgments (PerFace recipe).

Multi-GPU: ``torchrun --nproc_per_node=N -m perface.train ...`` (batch size is per process).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import List, Optional

from .config import CHOICES, TrainConfig

_HELP = {
    "data": "SimCelebA-format folder (t####_{a,b,c}.jpg + triplet_answers.csv) or a triplet CSV file",
    "out": "output directory: the best checkpoint (loads with PerFace.from_pretrained), last.pt, log.jsonl, plot",
    "answers": "answers CSV of a SimCelebA-format folder (default DATA/triplet_answers.csv)",
    "images": "triplet CSV only: 'photos' (faces detected and aligned; default) or 'crops'",
    "crop_template": "triplet CSV of crops: the template they are aligned to (e.g. arcface, simceleba)",
    "init": "registry name (arcface-r50-ms1mv3 = paper, sface = compact permissive) or checkpoint directory",
    "name": "name of the trained checkpoint (default perface-<init>)",
    "license": "license of the trained weights for the model card (default: the initialization's; add the "
    "training data's terms, e.g. CelebA's non-commercial research terms for SimCelebA)",
    "split": "random | unseen ([i]) | seen-source ([ii]) | seen-target ([iii]) | a split .json file",
    "val_fraction": "random split: validation fraction", "test_fraction": "random split: test fraction",
    "holdout": "protocols: fraction of targets/source groups held out for test",
    "val_holdout": "protocols: fraction held out for validation",
    "layout": "protocols: target-major (id = target*80 + source group) or source-major",
    "grid": "protocols: side of the (target, source group) grid",
    "train_set": "unanimous (D2, paper) or all (D1, majority answer)",
    "epochs": "maximum epochs", "batch_size": "triplets per batch (per process)", "lr": "SGD learning rate",
    "momentum": "SGD momentum", "weight_decay": "SGD weight decay", "margin": "triplet loss margin",
    "lr_schedule": "constant or cosine", "hflip": "probability of mirroring a whole triplet",
    "bn": "train (update BatchNorm statistics) or frozen", "align": "none: learn on the crops as they are "
    "(checkpoint template = data's); convert: warp crops to the init model's template first",
    "patience": "epochs without validation gain before stopping (0 = off)", "seed": "random seed",
    "workers": "DataLoader worker processes", "amp": "mixed precision on CUDA: auto, off, bf16, fp16",
    "device": "auto, cpu, cuda, cuda:1 ...", "eval_batch_size": "triplets per evaluation batch",
    "max_steps": "stop after this many optimizer steps (smoke tests, timing)",
    "log_every": "log the loss every N steps",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m perface.train", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name in ("resume", "progress"):
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default,
                                help="resume from OUT/last.pt if present" if f.name == "resume" else "progress bars")
            continue
        required = f.default is dataclasses.MISSING
        kind = {"int": int, "float": float}.get(str(f.type).replace("Optional[", "").rstrip("]"), str)
        parser.add_argument(flag, dest=f.name, type=kind, required=required, choices=CHOICES.get(f.name),
                            default=None if required else f.default, help=_HELP.get(f.name, ""))
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from .trainer import train

    summary = train(TrainConfig(**vars(args)))
    if summary:
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
