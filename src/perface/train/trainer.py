"""The training loop: fine-tune a face embedding on triplet judgments.

Single process (CPU or one GPU) or several through ``torchrun`` (DistributedDataParallel; NCCL on
CUDA, gloo on CPU). Each epoch ends with validation triplet accuracy; the best checkpoint is kept
in the output directory, ``last.pt`` holds everything needed to resume (model, optimizer, epoch,
RNG states). Resuming restarts at the epoch after the last completed one.
"""

from __future__ import annotations

import json
import os
import random
import resource
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from ..model import PerFace
from ..stats import bootstrap_ci
from .config import TrainConfig
from .data import TripletSet, load_triplets
from .dataset import TripletImages, align_photos
from .evaluate import triplet_correct, triplet_similarities
from .loss import triplet_margin_cosine_loss
from .output import append_training_card, trained_fields, write_checkpoint
from .splits import Split, make_split

__all__ = ["train", "prepare_data", "PreparedData"]


@dataclass
class PreparedData:
    """The three parts of a split as image datasets, plus what the model card records."""

    train: TripletImages
    val: TripletImages
    test: TripletImages
    split: Split
    triplets: TripletSet
    template: str


class _Embedder(nn.Module):
    """``PerFace.embed`` as ``forward`` so DistributedDataParallel can wrap it."""

    def __init__(self, metric: PerFace) -> None:
        super().__init__()
        self.metric = metric

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.metric.embed(x)


def _dist_env() -> Tuple[bool, int, int, int]:
    """(launched by torchrun?, rank, world size, local rank)."""
    launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return launched, int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def _device(cfg: TrainConfig, local_rank: int) -> torch.device:
    if cfg.device != "auto":
        return torch.device(cfg.device)
    return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")


def _amp_dtype(cfg: TrainConfig, device: torch.device) -> Optional[torch.dtype]:
    if device.type != "cuda" or cfg.amp == "off":
        return None
    if cfg.amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[cfg.amp]


def prepare_data(cfg: TrainConfig, init_template: str, init_size: int) -> PreparedData:
    """Load the triplets, split them, and wrap train (D1/D2) / val / test (unanimous) as datasets."""
    triplets = load_triplets(cfg.data, cfg.answers, cfg.images, cfg.crop_template).majority_only()
    photos = None
    if triplets.images == "photos":
        triplets, photos = align_photos(triplets, init_template, init_size, progress=cfg.progress)
    template = triplets.template or init_template
    split = make_split(triplets.ids, cfg.split, seed=cfg.seed, val=cfg.val_fraction, test=cfg.test_fraction,
                       holdout=cfg.holdout, val_holdout=cfg.val_holdout, layout=cfg.layout, grid=cfg.grid)
    train_set = triplets.subset(split.train)
    if cfg.train_set == "unanimous":
        train_set = train_set.unanimous_only()
    convert = cfg.align == "convert" and template != init_template and photos is None
    size = 224 if convert else init_size  # keep resolution for the template conversion warp
    make = lambda s: TripletImages(s, size, photos)  # noqa: E731
    return PreparedData(make(train_set), make(triplets.subset(split.val).unanimous_only()),
                        make(triplets.subset(split.test).unanimous_only()), split, triplets, template)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> Dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _accuracy(metric: PerFace, data: TripletImages, cfg: TrainConfig, device: torch.device, desc: str
              ) -> Optional[Dict[str, Any]]:
    """Accuracy with 95% CI on ``data`` (None if empty); leaves ``metric`` in eval mode."""
    if len(data) == 0:
        return None
    metric.eval()
    pos, neg = triplet_similarities(metric.embed, data, cfg.eval_batch_size, cfg.workers, device,
                                    progress=cfg.progress, desc=desc)
    return bootstrap_ci(triplet_correct(pos, neg), seed=cfg.seed).to_dict()


class _Log:
    """JSONL log (rank 0 only)."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path, self.enabled = path, enabled

    def write(self, **record: Any) -> None:
        if self.enabled:
            with open(self.path, "a") as fh:
                fh.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")


def _freeze_bn(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def train(cfg: TrainConfig) -> Dict[str, Any]:
    """Train as ``cfg`` says; returns the summary also written to ``OUT/summary.json``."""
    cfg.validate()
    distributed, rank, world, local_rank = _dist_env()
    device = _device(cfg, local_rank)
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    main = rank == 0
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    _seed_all(cfg.seed)
    started = time.time()

    metric = PerFace(cfg.init, trainable=True, check_range=False)
    init_spec = metric.spec
    data = prepare_data(cfg, init_spec.template, init_spec.input_size)
    if len(data.train) == 0:
        raise ValueError(f"no training triplets in {cfg.data} for split {cfg.split!r} and train set {cfg.train_set!r}")
    if cfg.align == "convert" and data.template != init_spec.template:
        metric = PerFace(cfg.init, trainable=True, check_range=False, align=data.template)
        out_template = init_spec.template
    else:
        out_template = data.template
    metric.to(device)
    name = cfg.name or f"perface-{init_spec.name}"
    amp_dtype = _amp_dtype(cfg, device)
    log = _Log(out / "log.jsonl", main)

    params = [p for p in metric.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
                 if cfg.lr_schedule == "cosine" else None)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    embedder: nn.Module = _Embedder(metric)
    if distributed:
        embedder = nn.parallel.DistributedDataParallel(embedder, device_ids=[device.index] if device.type == "cuda" else None)

    state = {"epoch": 0, "step": 0, "best_val": -1.0, "best_epoch": -1, "bad_epochs": 0, "train_seconds": 0.0,
             "triplets_seen": 0}
    baseline: Dict[str, Any] = {}
    last = out / "last.pt"
    if cfg.resume and last.is_file():
        ckpt = torch.load(last, map_location="cpu", weights_only=False)
        if ckpt["data_sha256"] != data.triplets.sha256 or ckpt["split"] != data.split.to_dict():
            raise ValueError(f"{last} was written for other data or another split; use a new --out or --no-resume")
        metric.net.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        if scheduler is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        state, baseline = ckpt["state"], ckpt["baseline"]
        _set_rng_state(ckpt["rng"])
        log.write(event="resume", epoch=state["epoch"], step=state["step"])
    else:
        if main:
            (out / "log.jsonl").unlink(missing_ok=True)
        log.write(event="start", config=cfg.to_dict(), world_size=world, device=str(device),
                  amp=str(amp_dtype), counts=_counts(data))
        if main:
            baseline = {"val": _accuracy(metric, data.val, cfg, device, "baseline val"),
                        "test": _accuracy(metric, data.test, cfg, device, "baseline test")}
            log.write(event="baseline", epoch=0, val_acc=_mean(baseline["val"]), test_acc=_mean(baseline["test"]))

    fields = lambda scores: trained_fields(  # noqa: E731
        init_spec, name, out_template, _trained_on(cfg, data), scores, cfg.license)
    if main and state["best_epoch"] < 0:  # the initialization is the best so far
        write_checkpoint(out, metric, fields({}))
        state["best_val"], state["best_epoch"] = _mean(baseline.get("val")) if baseline.get("val") else -1.0, 0

    sampler = DistributedSampler(data.train, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=False)
    loader = DataLoader(data.train, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers,
                        pin_memory=device.type == "cuda", drop_last=len(data.train) > cfg.batch_size * world,
                        persistent_workers=cfg.workers > 0)
    from tqdm.auto import tqdm

    stop = False
    while state["epoch"] < cfg.epochs and not stop:
        epoch = state["epoch"] + 1
        sampler.set_epoch(epoch)
        flips = torch.Generator().manual_seed(cfg.seed * 100003 + epoch * 101 + rank)
        metric.train()
        if cfg.bn == "frozen":
            _freeze_bn(metric)
        t0, losses = time.time(), []
        bar = tqdm(loader, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", disable=not (main and cfg.progress))
        for ref, pos, neg in bar:
            b = ref.shape[0]
            x = torch.cat([ref, pos, neg])
            flip = (torch.rand(b, generator=flips) < cfg.hflip).repeat(3)
            x[flip] = x[flip].flip(-1)
            x = x.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                e = embedder(x).float()
            loss = triplet_margin_cosine_loss(e[:b], e[b:2 * b], e[2 * b:], cfg.margin)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            state["step"] += 1
            state["triplets_seen"] += b * world
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
            if state["step"] % cfg.log_every == 0:
                log.write(event="step", epoch=epoch, step=state["step"], loss=float(np.mean(losses[-cfg.log_every:])),
                          lr=optimizer.param_groups[0]["lr"])
            if cfg.max_steps is not None and state["step"] >= cfg.max_steps:
                stop = True
                break
        state["train_seconds"] += time.time() - t0
        if scheduler is not None:
            scheduler.step()
        state["epoch"] = epoch
        stop = _end_epoch(cfg, metric, data, device, state, losses, log, main, out, fields) or stop
        if main:
            _save_last(last, metric, optimizer, scaler, scheduler, state, baseline, data)
        if distributed:
            flag = torch.tensor([int(stop)], device=device)
            dist.broadcast(flag, 0)
            stop = bool(flag.item())

    summary = _finish(cfg, data, device, state, baseline, out, fields, init_spec, started) if main else {}
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return summary


def _mean(entry: Optional[Dict[str, Any]]) -> Optional[float]:
    return None if entry is None else entry["mean"]


def _counts(data: PreparedData) -> Dict[str, int]:
    return {"loaded": len(data.triplets), "train": len(data.train), "val": len(data.val), "test": len(data.test),
            "skipped_unreadable": len(data.triplets.skipped)}


def _train_set_name(cfg: TrainConfig) -> str:
    which = "D2 (unanimous)" if cfg.train_set == "unanimous" else "D1 (all, majority answer)"
    return f"{which} triplets of the training split"


def _trained_on(cfg: TrainConfig, data: PreparedData) -> str:
    return (f"{Path(cfg.data).name}: {_train_set_name(cfg)}; {data.split.description}; "
            "the training data's own terms also apply")


def _end_epoch(cfg, metric, data, device, state, losses, log, main, out, fields) -> bool:
    """Validate, keep the best checkpoint, log; returns True to stop early (rank 0 decides)."""
    if not main:
        return False
    val = _accuracy(metric, data.val, cfg, device, "val")
    seen = state["triplets_seen"]
    log.write(event="epoch", epoch=state["epoch"], step=state["step"], train_loss=float(np.mean(losses)) if losses else None,
              val_acc=_mean(val), val=val, triplets_per_s=seen / max(state["train_seconds"], 1e-9))
    improved = val is None or val["mean"] > state["best_val"]
    if improved:
        state["best_val"] = val["mean"] if val else -1.0
        state["best_epoch"], state["bad_epochs"] = state["epoch"], 0
        write_checkpoint(out, metric, fields({}))
    else:
        state["bad_epochs"] += 1
    return cfg.patience > 0 and state["bad_epochs"] >= cfg.patience


def _save_last(path, metric, optimizer, scaler, scheduler, state, baseline, data) -> None:
    ckpt = {"model": metric.net.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None, "state": dict(state),
            "baseline": baseline, "rng": _rng_state(), "data_sha256": data.triplets.sha256,
            "split": data.split.to_dict()}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)


def _peak_memory_mb(device: torch.device) -> Dict[str, float]:
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    mem = {"process_max_rss_mb": round(self_kb / 1024, 1), "workers_max_rss_mb": round(child_kb / 1024, 1)}
    if device.type == "cuda":
        mem["cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return mem


def _finish(cfg, data, device, state, baseline, out, fields, init_spec, started) -> Dict[str, Any]:
    """Reload the best weights, score them on the test split, write the model card and the plot."""
    best = PerFace(out, check_range=False).to(device)
    if cfg.align == "convert" and data.template != best.template:
        best = PerFace(out, check_range=False, align=data.template).to(device)
    val, test = _accuracy(best, data.val, cfg, device, "val (best)"), _accuracy(best, data.test, cfg, device, "test")
    scores: Dict[str, Any] = {}
    for key, entry in (("val", val), ("test", test), ("init_val", baseline.get("val")), ("init_test", baseline.get("test"))):
        if entry is not None:
            scores[f"triplet_accuracy_{key}"] = entry
    final = fields({**{k: round(v["mean"], 4) for k, v in scores.items()}, "protocol": data.split.description})
    write_checkpoint(out, best, final)
    recipe = {k: getattr(cfg, k) for k in ("epochs", "batch_size", "lr", "momentum", "weight_decay", "margin",
                                             "lr_schedule", "hflip", "bn", "align", "patience", "seed", "train_set")}
    recipe.update(best_epoch=state["best_epoch"], epochs_run=state["epoch"], steps=state["step"])
    labels = {"triplet_accuracy_val": f"validation ({final['name']})", "triplet_accuracy_test": f"test ({final['name']})",
              "triplet_accuracy_init_val": f"validation, initialization {init_spec.name}",
              "triplet_accuracy_init_test": f"test, initialization {init_spec.name}"}
    append_training_card(out, {
        "init": cfg.init, "data": cfg.data, "data_sha256": data.triplets.sha256, "split": data.split.description,
        "train_set": _train_set_name(cfg), "counts": _counts(data), "recipe": recipe,
        "scores": {labels[k]: v for k, v in scores.items()},
    })
    summary = {"name": final["name"], "out": str(out), "scores": scores, "counts": _counts(data),
               "best_epoch": state["best_epoch"], "epochs_run": state["epoch"], "steps": state["step"],
               "train_seconds": round(state["train_seconds"], 2), "wall_seconds": round(time.time() - started, 2),
               "train_triplets_per_s": round(state["triplets_seen"] / max(state["train_seconds"], 1e-9), 3),
               "device": str(device), "torch_threads": torch.get_num_threads(), **_peak_memory_mb(device)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "split.json").write_text(json.dumps(data.split.to_dict()) + "\n")
    _Log(out / "log.jsonl", True).write(event="finish", **summary)
    try:
        from .plot import plot_training_curve

        plot_training_curve(out / "log.jsonl", out / "training_curve.png")
    except ImportError:
        warnings.warn("matplotlib is not installed: no training_curve.png (pip install 'perface[plot]')", stacklevel=2)
    return summary
