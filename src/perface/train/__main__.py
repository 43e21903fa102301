"""python -m perface.train --data DIR --out DIR: fine-tune a face embedding on triplet judgments.

The default recipe is made for small sets of your own judgments (BatchNorm statistics frozen,
12 epochs, the best kept by validation); --recipe paper is the PerFace paper's setting for
SimCelebA (BatchNorm trained, up to 30 epochs, early stopping). Explicit flags override either.
Several GPUs: torchrun --nproc_per_node=N -m perface.train ... (the batch size is per process).
Exit codes: 0 done, 1 some or all triplets failed (unusable images: the checkpoint is trained on
the rest) or an error stopped training, 2 usage, 130 interrupted (see docs/cli.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any, Optional

from ..commands import add_quiet, device_type, input_failures, make_parser, model_type, run_command
from .config import CHOICES, RECIPES, TrainConfig

PROG = "python -m perface.train"


def _recipe(key: str) -> str:
    return "; ".join(f"{name} recipe: {values[key]}" for name, values in RECIPES.items())


_HELP: dict[str, str] = {
    "data": "SimCelebA-format folder (t####_{a,b,c}.jpg + triplet_answers.csv) or a triplet CSV file "
    "(see docs/training.md)",
    "out": "output folder: the best checkpoint (loads with PerFace.from_pretrained), model card README.md, "
    "last.pt, log.jsonl, summary.json, split.json, training_curve.png",
    "recipe": "default: for small sets of your own judgments; paper: the PerFace paper's SimCelebA setting "
    "(see docs/reproducing.md); sets --bn, --epochs and --patience unless given",
    "answers": "answers CSV of a SimCelebA-format folder (default: DATA/triplet_answers.csv)",
    "images": "triplet CSV only: photos (faces detected and aligned; the default) or crops",
    "crop_template": "triplet CSV of crops: the template they are aligned to (arcface, simceleba, ffhq)",
    "missing_list": "write every missing, empty, unreadable or faceless image to this CSV "
    "(path, problem, triplets); the terminal shows counts and the first few",
    "init": "where training starts: a registry name (arcface-r50-ms1mv3 = the paper's, sface = compact, "
    "Apache-2.0) or a checkpoint folder",
    "name": "name of the trained checkpoint (default: perface-<init>)",
    "license": "license of the trained weights for the model card (default: the initialization's; add the "
    "training data's terms, e.g. CelebA's non-commercial research terms for SimCelebA)",
    "split": "random, unseen ([i]), seen-source ([ii]), seen-target ([iii]) or a split .json file",
    "val_fraction": "random split: fraction of triplets for validation",
    "test_fraction": "random split: fraction of triplets for test",
    "holdout": "grid protocols: fraction of targets and of source groups held out for test",
    "val_holdout": "grid protocols: fraction of targets and of source groups held out for validation",
    "layout": "grid protocols: target-major (id = target x 80 + source group) or source-major",
    "grid": "grid protocols: side of the (target, source group) grid",
    "min_val": "unanimous validation triplets wanted to choose the best epoch; a smaller validation part is "
    "topped up with training triplets (at most 20%% of them)",
    "train_set": "unanimous (D2, the paper's) or all (D1, majority answer)",
    "epochs": "maximum epochs (" + _recipe("epochs") + ")",
    "batch_size": "triplets per optimizer step (per process)",
    "lr": "SGD learning rate",
    "momentum": "SGD momentum",
    "weight_decay": "SGD weight decay",
    "margin": "triplet loss margin: max(0, cos(x, x-) - cos(x, x+) + margin)",
    "lr_schedule": "constant or cosine (annealed over --epochs)",
    "hflip": "probability of mirroring a whole triplet (augmentation)",
    "bn": "train: BatchNorm statistics follow the training batches; frozen: keep the initialization's ("
    + _recipe("bn")
    + ")",
    "align": "none: learn on the crops as they are (the checkpoint keeps the data's template); convert: warp "
    "crops to the initialization's template first",
    "patience": "stop after this many epochs without validation gain, 0 = never (" + _recipe("patience") + ")",
    "seed": "seed of the split, the shuffling and the augmentation",
    "workers": "worker processes decoding the images (and finding their faces); 0 = in this process",
    "amp": "mixed precision on CUDA: auto (bf16 where supported, else fp16), off, bf16, fp16",
    "compile": "torch.compile the network (pays on a GPU for long runs; see benchmarks/gpu_check.py)",
    "device": "where the network runs: auto (cuda:$LOCAL_RANK if CUDA is available, else cpu), cpu, cuda, cuda:1 ...",
    "eval_batch_size": "triplets per evaluation batch",
    "max_steps": "stop after this many optimizer steps (smoke tests, timing); default: no limit",
    "log_every": "write the training loss to log.jsonl every N steps",
}
_TYPES = {"int": int, "float": float, "str": str}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`TrainConfig` knob (``--batch-size`` for ``batch_size`` ...), plus
    ``-q/--quiet`` and ``--json``."""
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "progress":
            continue
        if f.name == "resume":
            parser.add_argument(
                flag,
                action=argparse.BooleanOptionalAction,
                default=True,
                help="continue from OUT/last.pt when it exists (default: yes); --no-resume starts over",
            )
            continue
        if f.name == "compile":
            parser.add_argument(flag, action="store_true", help=_HELP[f.name])
            continue
        required = f.default is dataclasses.MISSING
        kind = _TYPES[str(f.type).replace("Optional[", "").rstrip("]")]
        parser.add_argument(
            flag,
            dest=f.name,
            type={"device": device_type, "init": model_type}.get(f.name, kind),
            required=required,
            choices=CHOICES.get(f.name),
            default=None if required else f.default,
            help=_HELP[f.name],
            metavar=None if f.name in CHOICES else ("N" if kind is int else f.name.upper()),
        )
    add_quiet(parser)
    parser.add_argument("--json", action="store_true", help="print the training summary as JSON instead of text")


def _report(summary: dict[str, Any]) -> str:
    scores = summary["scores"]

    def acc(key: str) -> str:
        e = scores.get(key)
        return "-" if e is None else f"{e['mean']:.3f} [{e['ci_low']:.3f}, {e['ci_high']:.3f}] (n={e['n']})"

    return "\n".join(
        [
            f"{summary['name']} written to {summary['out']}",
            f"  signature:  {summary['signature']}",
            f"  outcome:    {summary['outcome']}",
            "  triplet accuracy on unanimous test triplets, 95% CI:",
            f"    trained:        {acc('triplet_accuracy_test')}",
            f"    initialization: {acc('triplet_accuracy_init_test')}",
            f"  speed: {summary['train_triplets_per_s']} triplets/s in training steps, "
            f"{summary['epoch_triplets_per_s']} with validation; "
            f"{summary['wall_seconds']} s in all on {summary['device']}",
            f"  model card: {summary['out']}/README.md; everything: {summary['out']}/summary.json",
        ]
    )


def run(args: argparse.Namespace) -> int:
    """Train with the parsed flags; prints the summary; returns the exit status."""
    from .trainer import train

    knobs = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in knobs}
    summary = train(TrainConfig(progress=not args.quiet, **values))
    print(json.dumps(summary, indent=2) if args.json else _report(summary))
    counts = summary.get("counts") or {}
    skipped = int(counts.get("skipped_unreadable", 0))
    where = f"in {args.missing_list}" if args.missing_list else "summarized above; --missing-list FILE lists them all"
    return input_failures(PROG, skipped, skipped + int(counts.get("loaded", 0)), "triplets", where)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m perface.train``."""
    parser = make_parser(PROG, __doc__ or "")
    add_arguments(parser)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of ``python -m perface.train``; returns the exit status."""
    return run_command(PROG, build_parser(), run, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
