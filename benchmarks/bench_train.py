"""Training throughput (triplets/s) of the PerFace recipe on a synthetic batch.

One step = embed reference, positive and negative crops (3B aligned 112 crops) with every layer
trainable, the triplet loss max(0, cos(r, n) - cos(r, p) + 0.1), backward, SGD (lr 0.01, momentum
0.9, weight decay 5e-4). sface from its embedded weights, iresnet50 with random weights (same
compute). Peak memory: CUDA allocator peak, or the process's max RSS on CPU.
``python benchmarks/bench_train.py [--quick] [--json OUT]``; ``run(quick)`` for run_all.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path
from typing import Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from perface.train.loss import triplet_margin_cosine_loss  # noqa: E402
from _util import bench_main, apply_variant, device_sync, metric_sources, timed, variants  # noqa: E402

BACKBONES = ("sface", "iresnet50")


def run(quick: bool = False) -> Dict[str, object]:
    """Measure and return ``{"title", "rows", "notes"}`` (rows: one dict per configuration)."""
    import perface

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sync = device_sync(device)
    batch = 4 if quick else 32
    iters, min_s = (2, 0.0) if quick else (3, 3.0)
    rows: List[Dict[str, object]] = []
    notes: List[str] = []
    g = torch.Generator().manual_seed(0)
    for label, source in metric_sources(BACKBONES):
        images = torch.rand(3 * batch, 3, 112, 112, generator=g).to(device)
        for var in variants(device):
            metric = perface.PerFace(source, trainable=True).to(device)
            metric.train()
            apply_variant(metric, var)
            if var["channels_last"]:
                images = images.contiguous(memory_format=torch.channels_last)
            opt = torch.optim.SGD([p for p in metric.parameters() if p.requires_grad], lr=0.01,
                                  momentum=0.9, weight_decay=5e-4)
            scaler = torch.amp.GradScaler(device.type, enabled=var["amp"] == torch.float16)

            def step() -> None:
                opt.zero_grad(set_to_none=True)
                with torch.autocast(device.type, dtype=var["amp"], enabled=var["amp"] is not None):
                    emb = metric.embed(images).float()
                    loss = triplet_margin_cosine_loss(*emb.chunk(3), margin=0.1)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()

            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            try:
                sec = timed(step, warmup=1 if quick else 2, iters=iters, min_seconds=min_s, sync=sync)
            except Exception as exc:  # reported, not fatal
                notes.append(f"{label}/{var['name']}: {type(exc).__name__}: {exc}")
                continue
            peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
                    else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
            rows.append({"backbone": label, "variant": var["name"], "device": device.type,
                         "threads": torch.get_num_threads(), "batch_triplets": batch,
                         "triplets_per_s": round(batch / sec, 2), "ms_per_step": round(sec * 1e3, 1),
                         "peak_mem_mib": round(peak / 2**20)})
    notes.append("synthetic 112x112 crops; SGD step on all layers; CPU peak memory is the process max RSS so far")
    return {"title": "Training step", "rows": rows, "notes": notes}


if __name__ == "__main__":
    bench_main(run, __doc__)
