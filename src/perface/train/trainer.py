"""The training loop: fine-tune a face embedding on triplet judgments.

Single process (CPU or one GPU) or several through ``torchrun`` (DistributedDataParallel; NCCL on
CUDA, gloo on CPU). Every image is decoded once (:class:`~perface.train.dataset.ImageBank`);
batches are gathered from memory, on the GPU when training there. Each epoch ends with
validation triplet accuracy; the best checkpoint is kept in the output directory, ``last.pt``
holds everything needed to resume (model, optimizer, epoch, RNG states). Resuming restarts at the
epoch after the last completed one. Every file is written atomically (:mod:`perface._io`), and a
lock keeps a second run from writing into the same output directory at the same time.

On the CPU with BatchNorm frozen, a backbone that runs faster in small batches (SFace) takes
each batch as micro-batches of a few triplets whose gradients add up to the full batch's (the
loss is a mean over independent triplets): the activations of a small micro-batch stay in
cache and in malloc's heap, which makes SFace's step 2.8 times faster than one pass over
3 x 32 images (``benchmarks/bench_train.py``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import resource
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, TypedDict, cast

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data.distributed import DistributedSampler

from .._io import atomic_write, atomic_write_text, file_lock
from ..devices import resolve_device
from ..model import PerFace
from ..registry import ModelSpec
from ..stats import bootstrap_ci
from .config import TrainConfig
from .data import TripletSet, load_triplets
from .dataset import ImageBank, TripletImages, align_photos
from .evaluate import triplet_correct, triplet_similarities
from .loss import triplet_margin_cosine_loss
from .output import append_training_card, trained_fields, write_checkpoint
from .splits import Split, make_split, top_up_validation

if TYPE_CHECKING:
    from filelock import BaseFileLock

    from ..registry import ModelSpec

__all__ = ["train", "prepare_data", "PreparedData", "micro_batch_size", "train_step"]

# Triplets per micro-batch on the CPU (3 images each); measured in benchmarks/bench_train.py.
CPU_MICRO_BATCH = 4


@dataclass
class PreparedData:
    """The three parts of a split as image datasets, plus what the model card records."""

    train: TripletImages
    val: TripletImages
    test: TripletImages
    split: Split
    triplets: TripletSet
    template: str
    val_from_split: int  # validation triplets of the split itself (the rest were drawn from training)


class _Embedder(nn.Module):
    """``PerFace.embed`` as ``forward`` so DistributedDataParallel can wrap it."""

    def __init__(self, metric: PerFace) -> None:
        super().__init__()
        self.metric = metric

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.metric.embed(x)


def _dist_env() -> tuple[bool, int, int, int]:
    """(launched by torchrun?, rank, world size, local rank)."""
    launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return launched, int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def _amp_dtype(cfg: TrainConfig, device: torch.device) -> Optional[torch.dtype]:
    if device.type != "cuda" or cfg.amp == "off":
        return None
    if cfg.amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[cfg.amp]


def prepare_data(
    cfg: TrainConfig, init_template: str, init_size: int, device: torch.device = torch.device("cpu")
) -> PreparedData:
    """Load the triplets, split them, decode every image once, and wrap train (D1/D2) / val / test
    (unanimous) as datasets sharing one :class:`ImageBank` (moved to ``device``)."""
    triplets = load_triplets(
        cfg.data, cfg.answers, cfg.images, cfg.crop_template, missing_list=cfg.missing_list
    ).majority_only()
    photos = None
    if triplets.images == "photos":
        triplets, photos = align_photos(
            triplets, init_template, init_size, progress=cfg.progress, missing_list=cfg.missing_list
        )
    template = triplets.template or init_template
    split = make_split(
        triplets.ids,
        cfg.split,
        seed=cfg.seed,
        val=cfg.val_fraction,
        test=cfg.test_fraction,
        holdout=cfg.holdout,
        val_holdout=cfg.val_holdout,
        layout=cfg.layout,
        grid=cfg.grid,
    )
    unanimous = set(triplets.unanimous_only().ids)
    val_from_split = sum(t in unanimous for t in split.val)
    split = top_up_validation(split, sorted(unanimous), cfg.min_val, seed=cfg.seed)
    train_set = triplets.subset(split.train)
    if cfg.train_set == "unanimous":
        train_set = train_set.unanimous_only()
    val_set, test_set = triplets.subset(split.val).unanimous_only(), triplets.subset(split.test).unanimous_only()
    convert = cfg.align == "convert" and template != init_template and photos is None
    size = 224 if convert else init_size  # keep resolution for the template conversion warp
    if photos is not None:
        bank = ImageBank.from_photos(photos)
    else:
        paths = [p for part in (train_set, val_set, test_set) for t in part.triplets for p in t.paths]
        bank = ImageBank.decode(paths, size, cfg.workers, progress=cfg.progress)
    bank = bank.to(device)
    return PreparedData(
        TripletImages(train_set, bank),
        TripletImages(val_set, bank),
        TripletImages(test_set, bank),
        split,
        triplets,
        template,
        val_from_split,
    )


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _accuracy(
    metric: PerFace, data: TripletImages, cfg: TrainConfig, device: torch.device, desc: str
) -> Optional[dict[str, Any]]:
    """Accuracy with 95% CI on ``data`` (None if empty); leaves ``metric`` in eval mode."""
    if len(data) == 0:
        return None
    metric.eval()
    pos, neg = triplet_similarities(metric.embed, data, cfg.eval_batch_size, device, progress=cfg.progress, desc=desc)
    return bootstrap_ci(triplet_correct(pos, neg), seed=cfg.seed).to_dict()


class _State(TypedDict):
    """The training loop's progress (saved in ``last.pt`` to resume)."""

    epoch: int
    step: int
    best_val: float
    best_epoch: int
    bad_epochs: int
    train_seconds: float
    train_cpu_seconds: float
    epoch_seconds: float
    triplets_seen: int


# trained_fields(..., scores, improved=...) with the run's fixed arguments bound
Fields = Callable[..., dict[str, Any]]


class _Log:
    """The JSONL log, rewritten atomically on each record (rank 0 only)."""

    def __init__(self, path: Path, enabled: bool, keep: bool) -> None:
        self.path, self.enabled = path, enabled
        self.lines: list[str] = path.read_text().splitlines() if keep and path.is_file() else []

    def write(self, **record: Any) -> None:
        if self.enabled:
            self.lines.append(json.dumps({"time": round(time.time(), 3), **record}))
            atomic_write_text(self.path, "\n".join(self.lines) + "\n", durable=False)


def _freeze_bn(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def micro_batch_size(bn: str, device: torch.device, batch_size: int, spec: ModelSpec) -> int:
    """Triplets per forward/backward pass: the whole batch, except on the CPU with frozen
    BatchNorm for a backbone that runs faster in small CPU batches (a spec with a ``cpu_chunk``,
    e.g. SFace), where :data:`CPU_MICRO_BATCH` triplets at a time give the same gradient faster.
    With BatchNorm in training mode the batch statistics need the whole batch at once; the
    compute-bound iresnet50 gains nothing from micro-batches (``benchmarks/bench_train.py``)."""
    if device.type == "cpu" and bn == "frozen" and spec.cpu_chunk:
        return min(batch_size, CPU_MICRO_BATCH)
    return batch_size


def train_step(
    embedder: nn.Module,
    x: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    margin: float,
    micro: int,
    amp_dtype: Optional[torch.dtype],
    sync_last_only: bool = False,
) -> float:
    """One optimizer step on ``x`` (B, 3, 3, S, S): reference, positive, negative per triplet, any
    dtype ``embedder`` accepts. Runs ``micro`` triplets per forward/backward pass and accumulates
    their gradients (weighted by size, so the step equals the full batch's). Returns the loss."""
    b = x.shape[0]
    optimizer.zero_grad(set_to_none=True)
    parts = torch.arange(b, device=x.device).split(micro)
    total = 0.0
    for k, idx in enumerate(parts):
        chunk = x[idx]
        n = chunk.shape[0]
        no_sync = sync_last_only and k < len(parts) - 1 and hasattr(embedder, "no_sync")
        # nn.Module.__getattr__ is typed Tensor | Module: no_sync is DDP's method (hasattr above)
        with embedder.no_sync() if no_sync else contextlib.nullcontext():  # type: ignore[operator]
            with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                e = embedder(chunk.transpose(0, 1).reshape(3 * n, *chunk.shape[2:])).float()
            loss = triplet_margin_cosine_loss(e[:n], e[n : 2 * n], e[2 * n :], margin) * (n / b)
            scaler.scale(loss).backward()
        total += float(loss.detach())
    scaler.step(optimizer)
    scaler.update()
    return total


def _claim(out: Path) -> BaseFileLock:
    """Hold the output directory's lock for the whole run; a second run into it fails at once."""
    from filelock import Timeout

    lock = file_lock(out / ".train", timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise OSError(
            errno.EBUSY,
            "another training run is writing into this output folder; wait for it to finish or choose another --out",
            str(out),
        ) from None
    return lock


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train as ``cfg`` says; returns the summary also written to ``OUT/summary.json``."""
    cfg = cfg.resolved()
    cfg.validate()
    distributed, rank, world, local_rank = _dist_env()
    device = resolve_device(cfg.device, local_rank)
    main = rank == 0
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    lock = _claim(out) if main else None
    try:
        return _train(cfg, distributed, rank, world, device, out)
    finally:
        if lock is not None:
            lock.release()


def _train(
    cfg: TrainConfig, distributed: bool, rank: int, world: int, device: torch.device, out: Path
) -> dict[str, Any]:
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    main = rank == 0
    assert cfg.epochs is not None and cfg.bn is not None, "cfg.resolved() sets the recipe's knobs"
    _seed_all(cfg.seed)
    started = time.time()

    metric = PerFace(cfg.init, trainable=True, check_range=False)
    init_spec = metric.spec
    data = prepare_data(cfg, init_spec.template, init_spec.input_size, device)
    if len(data.train) == 0:
        raise ValueError(f"no training triplets in {cfg.data} for split {cfg.split!r} and train set {cfg.train_set!r}")
    if cfg.align == "convert" and data.template != init_spec.template:
        metric = PerFace(cfg.init, trainable=True, check_range=False, align=data.template)
        out_template = init_spec.template
    else:
        out_template = data.template
    metric.to(device)
    if device.type == "cuda":
        metric.net.to(memory_format=torch.channels_last)
    name = cfg.name or f"perface-{init_spec.name}"
    amp_dtype = _amp_dtype(cfg, device)
    last = out / "last.pt"
    resuming = cfg.resume and last.is_file()
    log = _Log(out / "log.jsonl", main, keep=resuming)
    _warn_small_validation(len(data.val))

    params = [p for p in metric.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs) if cfg.lr_schedule == "cosine" else None
    )
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    embedder: nn.Module = _Embedder(metric)
    if cfg.compile:
        embedder = torch.compile(embedder)  # type: ignore[assignment]  # torch types it Callable; it is a Module
    if distributed:
        embedder = nn.parallel.DistributedDataParallel(
            embedder, device_ids=[device.index] if device.type == "cuda" else None
        )

    state: _State = {
        "epoch": 0,
        "step": 0,
        "best_val": -1.0,
        "best_epoch": -1,
        "bad_epochs": 0,
        "train_seconds": 0.0,
        "train_cpu_seconds": 0.0,
        "epoch_seconds": 0.0,
        "triplets_seen": 0,
    }
    baseline: dict[str, Any] = {}
    if resuming:
        ckpt = torch.load(last, map_location="cpu", weights_only=False)
        if ckpt["data_sha256"] != data.triplets.sha256 or ckpt["split"] != data.split.to_dict():
            raise ValueError(f"{last} was written for other data or another split; use a new --out or --no-resume")
        metric.net.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        if scheduler is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        # torch.load gives Any: last.pt holds a _State (written before the timing keys: without them)
        state = cast(_State, {"epoch_seconds": 0.0, "train_cpu_seconds": 0.0, **ckpt["state"]})
        baseline = ckpt["baseline"]
        _set_rng_state(ckpt["rng"])
        log.write(event="resume", epoch=state["epoch"], step=state["step"])
    else:
        log.write(
            event="start",
            config=cfg.to_dict(),
            world_size=world,
            device=str(device),
            amp=str(amp_dtype),
            counts=_counts(data),
        )
        if main:
            baseline = {
                "val": _accuracy(metric, data.val, cfg, device, "baseline val"),
                "test": _accuracy(metric, data.test, cfg, device, "baseline test"),
            }
            log.write(event="baseline", epoch=0, val_acc=_mean(baseline["val"]), test_acc=_mean(baseline["test"]))

    fields = lambda scores, improved=True: trained_fields(
        init_spec, name, out_template, _trained_on(cfg, data), scores, cfg.license, improved=improved
    )
    if main and state["best_epoch"] < 0:  # the initialization is the best so far
        write_checkpoint(out, metric, fields({}, improved=False))
        state["best_val"], state["best_epoch"] = baseline["val"]["mean"] if baseline.get("val") else -1.0, 0

    sampler: DistributedSampler[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = DistributedSampler(
        data.train, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=False
    )
    micro = micro_batch_size(cfg.bn, device, cfg.batch_size, metric.spec)
    from tqdm.auto import tqdm

    stop = False
    while state["epoch"] < cfg.epochs and not stop:
        epoch = state["epoch"] + 1
        sampler.set_epoch(epoch)
        order = torch.tensor(list(iter(sampler)), dtype=torch.long)
        batches = list(order.split(cfg.batch_size))
        if len(batches) > 1 and len(batches[-1]) < cfg.batch_size:
            batches.pop()  # a short last batch only when it would be the only one
        flips = torch.Generator().manual_seed(cfg.seed * 100003 + epoch * 101 + rank)
        metric.train()
        if cfg.bn == "frozen":
            _freeze_bn(metric)
        t0, losses, step_seconds, cpu_seconds = time.time(), [], 0.0, 0.0
        bar = tqdm(batches, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", disable=not (main and cfg.progress))
        for idx in bar:
            s0, c0 = time.perf_counter(), time.process_time()
            x = data.train.uint8_batch(idx)
            flip = (torch.rand(x.shape[0], generator=flips) < cfg.hflip).to(x.device)
            x = torch.where(flip[:, None, None, None, None], x.flip(-1), x)
            losses.append(
                train_step(embedder, x, optimizer, scaler, cfg.margin, micro, amp_dtype, sync_last_only=distributed)
            )
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            step_seconds += time.perf_counter() - s0
            cpu_seconds += time.process_time() - c0
            state["step"] += 1
            state["triplets_seen"] += x.shape[0] * world
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
            if state["step"] % cfg.log_every == 0:
                log.write(
                    event="step",
                    epoch=epoch,
                    step=state["step"],
                    loss=float(np.mean(losses[-cfg.log_every :])),
                    lr=optimizer.param_groups[0]["lr"],
                )
            if cfg.max_steps is not None and state["step"] >= cfg.max_steps:
                stop = True
                break
        state["train_seconds"] += step_seconds
        state["train_cpu_seconds"] += cpu_seconds
        if scheduler is not None:
            scheduler.step()
        state["epoch"] = epoch
        stop = _end_epoch(cfg, metric, data, device, state, losses, log, main, out, fields) or stop
        state["epoch_seconds"] += time.time() - t0
        if main:
            _save_last(last, metric, optimizer, scaler, scheduler, state, baseline, data)
        if distributed:
            flag = torch.tensor([int(stop)], device=device)
            dist.broadcast(flag, 0)
            stop = bool(flag.item())

    summary = _finish(cfg, data, device, state, baseline, out, fields, init_spec, started, log) if main else {}
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return summary


def _warn_small_validation(n: int) -> None:
    if 0 < n < 50:
        half = 1.96 * 0.5 / np.sqrt(n)
        warnings.warn(
            f"validation has only {n} unanimous triplets (95% CI up to +-{half:.2f}): the best epoch is "
            "chosen on noise; add judged triplets or raise --val-fraction / --val-holdout",
            stacklevel=4,
        )


def _mean(entry: Optional[dict[str, Any]]) -> Optional[float]:
    return None if entry is None else entry["mean"]


def _counts(data: PreparedData) -> dict[str, int]:
    return {
        "loaded": len(data.triplets),
        "train": len(data.train),
        "val": len(data.val),
        "test": len(data.test),
        "skipped_unreadable": len(data.triplets.skipped),
    }


def _train_set_name(cfg: TrainConfig) -> str:
    which = "D2 (unanimous)" if cfg.train_set == "unanimous" else "D1 (all, majority answer)"
    return f"{which} triplets of the training split"


def _trained_on(cfg: TrainConfig, data: PreparedData) -> str:
    return (
        f"{Path(cfg.data).name}: {_train_set_name(cfg)}; {data.split.description}; "
        "the training data's own terms also apply"
    )


def _end_epoch(
    cfg: TrainConfig,
    metric: PerFace,
    data: PreparedData,
    device: torch.device,
    state: _State,
    losses: list[float],
    log: _Log,
    main: bool,
    out: Path,
    fields: Fields,
) -> bool:
    """Validate, keep the best checkpoint, log; returns True to stop early (rank 0 decides)."""
    if not main:
        return False
    val = _accuracy(metric, data.val, cfg, device, "val")
    log.write(
        event="epoch",
        epoch=state["epoch"],
        step=state["step"],
        train_loss=float(np.mean(losses)) if losses else None,
        val_acc=_mean(val),
        val=val,
        triplets_per_s=state["triplets_seen"] / max(state["train_seconds"], 1e-9),
    )
    improved = val is None or val["mean"] > state["best_val"]
    if improved:
        state["best_val"] = val["mean"] if val else -1.0
        state["best_epoch"], state["bad_epochs"] = state["epoch"], 0
        write_checkpoint(out, metric, fields({}))
    else:
        state["bad_epochs"] += 1
    assert cfg.patience is not None, "cfg.resolved() sets the recipe's knobs"
    return cfg.patience > 0 and state["bad_epochs"] >= cfg.patience


def _save_last(
    path: Path,
    metric: PerFace,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    scheduler: Optional[torch.optim.lr_scheduler.LRScheduler],
    state: _State,
    baseline: dict[str, Any],
    data: PreparedData,
) -> None:
    ckpt = {
        "model": metric.net.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "state": dict(state),
        "baseline": baseline,
        "rng": _rng_state(),
        "data_sha256": data.triplets.sha256,
        "split": data.split.to_dict(),
    }
    atomic_write(path, lambda tmp: torch.save(ckpt, tmp))


def _peak_memory_mb(device: torch.device) -> dict[str, float]:
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    mem = {"process_max_rss_mb": round(self_kb / 1024, 1), "workers_max_rss_mb": round(child_kb / 1024, 1)}
    if device.type == "cuda":
        mem["cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return mem


def _outcome(state: _State, baseline: dict[str, Any], val: Optional[dict[str, Any]]) -> tuple[bool, str]:
    """(did training beat the initialization on validation?, one sentence saying what happened)."""
    init = baseline.get("val")
    if init is None or val is None:
        return True, (
            f"no validation triplets: the last epoch ({state['best_epoch']}) was kept without a check "
            "against the initialization"
        )
    if state["best_epoch"] == 0:
        return False, (
            f"no epoch beat the initialization on validation (initialization {init['mean']:.3f}, "
            f"n={init['n']}): the written weights are the initialization's, not fine-tuned ones"
        )
    return True, (
        f"epoch {state['best_epoch']} of {state['epoch']} had the best validation accuracy, {val['mean']:.3f} "
        f"[{val['ci_low']:.3f}, {val['ci_high']:.3f}] against {init['mean']:.3f} for the initialization "
        f"(n={val['n']})"
    )


def _finish(
    cfg: TrainConfig,
    data: PreparedData,
    device: torch.device,
    state: _State,
    baseline: dict[str, Any],
    out: Path,
    fields: Fields,
    init_spec: ModelSpec,
    started: float,
    log: _Log,
) -> dict[str, Any]:
    """Reload the best weights, score them on the test split, write the model card and the plot."""
    from ..signature import signature_of

    def load() -> PerFace:
        best = PerFace(out, check_range=False)
        if cfg.align == "convert" and data.template != best.template:
            best = PerFace(out, check_range=False, align=data.template)
        return best.to(device).eval()

    best = load()
    val, test = _accuracy(best, data.val, cfg, device, "val (best)"), _accuracy(best, data.test, cfg, device, "test")
    improved, outcome = _outcome(state, baseline, val)
    scores: dict[str, Any] = {}
    for key, entry in (
        ("val", val),
        ("test", test),
        ("init_val", baseline.get("val")),
        ("init_test", baseline.get("test")),
    ):
        if entry is not None:
            scores[f"triplet_accuracy_{key}"] = entry
    final = fields(
        {**{k: round(v["mean"], 4) for k, v in scores.items()}, "protocol": data.split.description}, improved=improved
    )
    write_checkpoint(out, best, final)
    signature = str(signature_of(load()))  # of the files just written: the hash is model.safetensors'
    recipe = {
        k: getattr(cfg, k)
        for k in (
            "recipe",
            "epochs",
            "batch_size",
            "lr",
            "momentum",
            "weight_decay",
            "margin",
            "lr_schedule",
            "hflip",
            "bn",
            "align",
            "patience",
            "seed",
            "train_set",
        )
    }
    recipe.update(best_epoch=state["best_epoch"], epochs_run=state["epoch"], steps=state["step"])
    labels = {
        "triplet_accuracy_val": f"validation ({final['name']})",
        "triplet_accuracy_test": f"test ({final['name']})",
        "triplet_accuracy_init_val": f"validation, initialization {init_spec.name}",
        "triplet_accuracy_init_test": f"test, initialization {init_spec.name}",
    }
    drawn = len(data.val) - data.val_from_split
    validation = (
        f"{len(data.val)} unanimous triplets ({data.val_from_split} from the split's validation part"
        + (f", {drawn} drawn from its training part" if drawn > 0 else "")
        + "); the written epoch is the one "
        "with the best validation accuracy (epoch 0 = the initialization)"
    )
    append_training_card(
        out,
        {
            "init": cfg.init,
            "data": cfg.data,
            "data_sha256": data.triplets.sha256,
            "split": data.split.description,
            "train_set": _train_set_name(cfg),
            "counts": _counts(data),
            "recipe": recipe,
            "outcome": outcome,
            "validation": validation,
            "signature": signature,
            "scores": {labels[k]: v for k, v in scores.items()},
        },
    )
    summary = {
        "name": final["name"],
        "out": str(out),
        "signature": signature,
        "improved": improved,
        "outcome": outcome,
        "scores": scores,
        "counts": _counts(data),
        "recipe": cfg.recipe,
        "best_epoch": state["best_epoch"],
        "epochs_run": state["epoch"],
        "steps": state["step"],
        "train_seconds": round(state["train_seconds"], 2),
        "train_cpu_seconds": round(state["train_cpu_seconds"], 2),
        "epoch_seconds": round(state["epoch_seconds"], 2),
        "wall_seconds": round(time.time() - started, 2),
        "train_triplets_per_s": round(state["triplets_seen"] / max(state["train_seconds"], 1e-9), 3),
        "epoch_triplets_per_s": round(state["triplets_seen"] / max(state["epoch_seconds"], 1e-9), 3),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        **_peak_memory_mb(device),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / "split.json", json.dumps(data.split.to_dict()) + "\n")
    log.write(event="finish", **summary)
    try:
        from .plot import plot_training_curve

        plot_training_curve(out / "log.jsonl", out / "training_curve.png")
    except ImportError:
        warnings.warn("matplotlib is not installed: no training_curve.png (pip install 'perface[plot]')", stacklevel=2)
    return summary
