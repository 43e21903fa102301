"""Training throughput (triplets/s): the training loop beside the forward+backward bound of the same step.

For each backbone and BatchNorm policy, in one process and interleaved (so both numbers see the
same machine load), repeated ``--reps`` times, medians reported:

- ``bound``: ``perface.train.trainer.train_step`` (embed reference, positive and negative, the
  triplet loss, backward, SGD with lr 0.01 / momentum 0.9 / weight decay 5e-4) again and again
  on one batch already in memory: what the network alone allows;
- ``loop``: ``perface.train.trainer.train`` on a SimCelebA-format folder of JPEG crops
  (decoding, batching, augmentation, logging, the step), timed over its optimizer steps, and
  ``loop+val`` with its per-epoch validation and checkpoint writing included;
- ``full batch``: the same step as one pass over 3 x batch images, as training ran before
  micro-batching (frozen BatchNorm only; with BatchNorm in training mode it is the only way).

sface from its embedded weights, iresnet50 with random weights (same compute).
``python benchmarks/bench_train.py [--quick] [--json OUT]``; ``run(quick)`` for run_all.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import bench_main, device_sync, metric_sources
from gpu_check import make_simceleba_like

BACKBONES = ("sface", "iresnet50")


def make_crops_set(folder: Path, n_train: int, n_val: int) -> Path:
    """A SimCelebA-format folder of 224 px JPEG crops, all answers unanimous, and its split.json."""
    make_simceleba_like(folder, n_train + n_val, n_train + n_val)
    ids = [f"t{i:04d}" for i in range(n_train + n_val)]
    (folder / "split.json").write_text(json.dumps({"train": ids[:n_train], "val": ids[n_train:], "test": []}))
    return folder


def _bound(source: str, bn: str, batch: int, micro: int, steps: int, device: torch.device) -> dict[str, float]:
    """Median wall and CPU seconds per ``train_step`` over ``steps`` steps on one in-memory batch
    (after one warm-up)."""
    import perface
    from perface.train.trainer import _Embedder, _freeze_bn, train_step

    metric = perface.PerFace(source, trainable=True, check_range=False).to(device)
    metric.train()
    if bn == "frozen":
        _freeze_bn(metric)
    x = torch.randint(
        0,
        256,
        (batch, 3, 3, metric.input_size, metric.input_size),
        dtype=torch.uint8,
        generator=torch.Generator().manual_seed(0),
    ).to(device)
    opt = torch.optim.SGD([p for p in metric.parameters() if p.requires_grad], lr=0.01, momentum=0.9, weight_decay=5e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    embedder = _Embedder(metric)
    sync = device_sync(device)
    train_step(embedder, x, opt, scaler, 0.1, micro, None)
    times, cpu = [], []
    for _ in range(steps):
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        train_step(embedder, x, opt, scaler, 0.1, micro, None)
        sync()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"step": statistics.median(times), "cpu": statistics.median(cpu)}


def _loop(source: str, bn: str, batch: int, steps: int, data: Path, out: Path) -> dict[str, float]:
    """``train()`` for ``steps`` steps: wall and CPU seconds per step in the loop, and per step with validation."""
    from perface.train.config import TrainConfig
    from perface.train.trainer import train

    cfg = TrainConfig(
        data=str(data),
        out=str(out),
        split=str(data / "split.json"),
        init=source,
        bn=bn,
        batch_size=batch,
        epochs=1,
        max_steps=steps,
        patience=0,
        progress=False,
        resume=False,
        min_val=0,
        log_every=1,
    )
    summary = train(cfg)
    return {
        "step": summary["train_seconds"] / summary["steps"],
        "cpu": summary["train_cpu_seconds"] / summary["steps"],
        "epoch": summary["epoch_seconds"] / summary["steps"],
    }


def run(quick: bool = False, reps: int = 3, backbones: tuple[str, ...] = BACKBONES) -> dict[str, object]:
    """Measure and return ``{"title", "rows", "notes"}`` (rows: one dict per backbone and BatchNorm policy)."""
    from perface.train.trainer import micro_batch_size

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch, steps, reps = (4, 2, 2) if quick else (32, 3, reps)
    backbones = backbones[:1] if quick else backbones
    tmp = Path(tempfile.mkdtemp(prefix="perface-bench-train-"))
    data = make_crops_set(tmp / "set", n_train=batch * steps, n_val=max(4, batch // 2))
    rows: list[dict[str, object]] = []
    for label, source in metric_sources(backbones):
        for bn in ("frozen", "train"):
            import perface

            micro = micro_batch_size(bn, device, batch, perface.PerFace(source).net)
            got: dict[str, list[float]] = {
                k: [] for k in ("bound", "bound_cpu", "loop", "loop_cpu", "epoch", "full", "full_cpu")
            }
            for rep in range(reps):  # interleaved: each repetition measures every variant once
                bound = _bound(source, bn, batch, micro, steps, device)
                got["bound"].append(bound["step"])
                got["bound_cpu"].append(bound["cpu"])
                loop = _loop(source, bn, batch, steps, data, tmp / f"run-{label}-{bn}-{rep}")
                got["loop"].append(loop["step"])
                got["loop_cpu"].append(loop["cpu"])
                got["epoch"].append(loop["epoch"])
                if micro < batch:
                    full = _bound(source, bn, batch, batch, steps, device)
                    got["full"].append(full["step"])
                    got["full_cpu"].append(full["cpu"])
            med = {k: statistics.median(v) for k, v in got.items() if v}
            rows.append(
                {
                    "backbone": label,
                    "bn": bn,
                    "device": device.type,
                    "threads": torch.get_num_threads(),
                    "batch": batch,
                    "micro_batch": micro,
                    "bound_triplets_s": round(batch / med["bound"], 2),
                    "loop_triplets_s": round(batch / med["loop"], 2),
                    "loop_over_bound": round(med["bound"] / med["loop"], 3),
                    "loop_with_val_triplets_s": round(batch / med["epoch"], 2),
                    "full_batch_triplets_s": round(batch / med["full"], 2) if "full" in med else None,
                    "bound_cpu_ms_per_triplet": round(1e3 * med["bound_cpu"] / batch, 1),
                    "loop_cpu_ms_per_triplet": round(1e3 * med["loop_cpu"] / batch, 1),
                    "loop_over_bound_cpu": round(med["bound_cpu"] / med["loop_cpu"], 3),
                    "full_batch_cpu_ms_per_triplet": round(1e3 * med["full_cpu"] / batch, 1)
                    if "full_cpu" in med
                    else None,
                    "reps": reps,
                }
            )
    notes = [
        f"medians of {reps} interleaved repetitions of {steps} steps each; bound and loop measured in the same "
        "process one after the other, so both see the same machine load",
        f"loop: python -m perface.train's train() on {batch * steps} triplets of random 224 px JPEG crops; "
        "loop+val adds the validation of each epoch and the checkpoint writing (here one short epoch, so its "
        "share is far larger than in a real run)",
        "full batch: the step as one pass over 3 x batch images, how training ran before micro-batching",
        "cpu_ms_per_triplet: CPU time of the process (all its threads) per triplet; on a machine shared with other "
        "jobs it moves far less than wall time, so compare those columns there",
    ]
    return {"title": "Training throughput: loop vs forward+backward bound", "rows": rows, "notes": notes}


if __name__ == "__main__":
    bench_main(run, __doc__)
