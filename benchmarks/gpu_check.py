"""One-shot GPU check of perface's training and loss paths (under 8 minutes on one H100/H200).

Run from the repository root with ``src/`` on the path (no install needed)::

    PYTHONPATH=src python benchmarks/gpu_check.py --out results/          # on the GPU machine
    PYTHONPATH=src python benchmarks/gpu_check.py --tiny --out /tmp/gc    # the same steps on a CPU, tiny sizes

What it measures, in this order (each part is skipped with a note when the time budget runs out):

1. iresnet50 training throughput at batch 32 (the paper's backbone and batch; random weights, same
   compute as ArcFace's), BatchNorm in training mode as in ``--recipe paper``: fp32, AMP
   (bf16 where supported, else fp16) + channels_last, and that plus ``torch.compile``, whose
   compile time is reported and weighed against a 30-epoch run ("pays").
2. Evaluation throughput (triplets/s of ``perface.train.evaluate.triplet_similarities``, the path
   of ``python -m perface.eval triplets`` and of training's validation), fp32.
3. PerFace as a face-swap training loss: forward+backward pairs/s at batch 32 on 256 px
   FFHQ-aligned crops (``align="ffhq"``, frozen metric, gradient to the image), sface and
   iresnet50, fp32 and AMP + channels_last.
4. One full epoch of ``perface.train.train`` (``--recipe paper``, random split, default AMP) on a
   generated SimCelebA-sized folder: 6,400 triplets of 224 px JPEG crops with 2,128 unanimous
   answers, as in SimCelebA; then the projected time of the 30-epoch reproduction (goal: under
   10 minutes), from the measured epoch and the measured one-time costs.

The machine needs torch, numpy, pillow, safetensors, huggingface-hub, filelock, tqdm and scipy
(facexlib is not needed: nothing here detects faces). ``--wheels DIR`` installs any wheels in
DIR first (``pip install --no-index --no-deps --target``), for a machine without network.
Results: ``gpu_check.json`` and ``gpu_check.md`` in ``--out``, and the markdown on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

HERE = Path(__file__).resolve().parent
SIMCELEBA_TRIPLETS, SIMCELEBA_UNANIMOUS = 6400, 2128  # the paper's SimCelebA: D1 and D2


def install_wheels(folder: Path) -> None:
    """Install the wheels in ``folder`` into a temporary site folder and put it on ``sys.path``."""
    wheels = sorted(str(p) for p in folder.glob("*.whl"))
    if not wheels:
        return
    target = Path(tempfile.gettempdir()) / "perface-gpu-check-site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-index",
            "--no-deps",
            "--no-compile",
            "--upgrade",
            "--target",
            str(target),
            *wheels,
        ],
        check=True,
    )
    sys.path.insert(0, str(target))


class Budget:
    """Wall-clock budget: parts ask whether they still fit."""

    def __init__(self, seconds: float) -> None:
        self.start, self.seconds = time.perf_counter(), seconds

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)


def _timed_steps(step: Callable[[], Any], sync: Callable[[], None], warmup: int, steps: int) -> dict[str, float]:
    """Seconds of the warm-up (compilation included) and the median seconds per step after it."""
    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    sync()
    warm = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    return {"warmup_s": warm, "step_s": statistics.median(times)}


def _variants(device, with_compile: bool) -> list[dict[str, Any]]:
    import torch

    if device.type != "cuda":
        out = [{"name": "fp32", "amp": None, "channels_last": False, "compile": False}]
        return out + (
            [{"name": "fp32+compile", "amp": None, "channels_last": False, "compile": True}] if with_compile else []
        )
    amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    name = "bf16" if amp == torch.bfloat16 else "fp16"
    out = [
        {"name": "fp32", "amp": None, "channels_last": False, "compile": False},
        {"name": f"{name}+channels_last", "amp": amp, "channels_last": True, "compile": False},
    ]
    if with_compile:
        out.append({"name": f"{name}+channels_last+compile", "amp": amp, "channels_last": True, "compile": True})
    return out


def part_training(ckpt: str, batch: int, steps: int, device, with_compile: bool, epoch_steps: int) -> dict[str, Any]:
    """iresnet50 optimizer steps per variant (BatchNorm in training mode, full batch)."""
    import torch

    import perface
    from perface.train.trainer import _Embedder, train_step

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rows = []
    for var in _variants(device, with_compile):
        metric = perface.PerFace(ckpt, trainable=True, check_range=False).to(device)
        metric.train()
        if var["channels_last"]:
            metric.net.to(memory_format=torch.channels_last)
        embedder: Any = _Embedder(metric)
        if var["compile"]:
            embedder = torch.compile(embedder)
        opt = torch.optim.SGD(
            [p for p in metric.parameters() if p.requires_grad], lr=0.01, momentum=0.9, weight_decay=5e-4
        )
        scaler = torch.amp.GradScaler("cuda", enabled=var["amp"] == torch.float16)
        x = torch.randint(
            0, 256, (batch, 3, 3, 112, 112), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
        ).to(device)
        try:
            t = _timed_steps(
                lambda: train_step(embedder, x, opt, scaler, 0.1, batch, var["amp"]), sync, warmup=3, steps=steps
            )
        except Exception as exc:  # e.g. torch.compile unavailable: reported, the other variants stand
            rows.append({"variant": var["name"], "error": f"{type(exc).__name__}: {exc}"[:200]})
            continue
        rows.append(
            {
                "variant": var["name"],
                "batch_triplets": batch,
                "triplets_per_s": round(batch / t["step_s"], 1),
                "ms_per_step": round(t["step_s"] * 1e3, 2),
                "warmup_s": round(t["warmup_s"], 1),
            }
        )
        if device.type == "cuda":
            torch.cuda.empty_cache()
    verdict = None
    if with_compile and len(rows) >= 2 and "error" not in rows[-1] and "error" not in rows[-2]:
        eager, compiled = rows[-2], rows[-1]
        saved = 30 * epoch_steps * (eager["ms_per_step"] - compiled["ms_per_step"]) / 1e3
        extra = compiled["warmup_s"] - eager["warmup_s"]
        verdict = {"saved_over_30_epochs_s": round(saved, 1), "compile_cost_s": round(extra, 1), "pays": saved > extra}
    return {"rows": rows, "compile": verdict}


def part_evaluation(ckpts: dict[str, str], n_triplets: int, batch: int, device, tmp: Path) -> dict[str, Any]:
    """Triplets/s of the evaluation path on a bank of decoded crops (decoding not included)."""
    import torch

    import perface
    from perface.train.data import load_simceleba
    from perface.train.dataset import TripletImages
    from perface.train.evaluate import triplet_similarities

    folder = make_simceleba_like(tmp / "eval-set", n_triplets, n_triplets, seed=1)
    triplets = load_simceleba(folder).majority_only()
    t0 = time.perf_counter()
    images = TripletImages.from_set(triplets, 112)
    decode_s = time.perf_counter() - t0
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rows = []
    for label, ckpt in ckpts.items():
        metric = perface.PerFace(ckpt, check_range=False).to(device).eval()
        t = _timed_steps(lambda: triplet_similarities(metric.embed, images, batch, device), sync, warmup=1, steps=3)
        rows.append(
            {
                "backbone": label,
                "triplets": len(images),
                "batch_triplets": batch,
                "triplets_per_s": round(len(images) / t["step_s"], 1),
            }
        )
    return {"rows": rows, "decode_images_per_s": round(3 * len(triplets) / decode_s, 1)}


def part_loss(ckpts: dict[str, str], batch: int, steps: int, device) -> dict[str, Any]:
    """PerFace(align="ffhq") as a loss on 256 px crops: forward+backward pairs/s, gradient to x."""
    import torch

    import perface

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    g = torch.Generator().manual_seed(0)
    y = torch.rand(batch, 3, 256, 256, generator=g).to(device)
    rows = []
    for label, ckpt in ckpts.items():
        for var in _variants(device, with_compile=False):
            metric = perface.PerFace(ckpt, align="ffhq", check_range=False).to(device)
            if var["channels_last"]:
                metric.net.to(memory_format=torch.channels_last)
            x = (y.clone() * 0.9 + 0.05).requires_grad_(True)

            def step() -> None:
                x.grad = None
                with torch.autocast(device.type, dtype=var["amp"], enabled=var["amp"] is not None):
                    loss = metric(x, y).float().mean()
                loss.backward()

            t = _timed_steps(step, sync, warmup=2, steps=steps)
            rows.append(
                {
                    "backbone": label,
                    "variant": var["name"],
                    "batch_pairs": batch,
                    "input": "256x256 ffhq",
                    "pairs_per_s": round(batch / t["step_s"], 1),
                    "ms_per_batch": round(t["step_s"] * 1e3, 2),
                }
            )
    return {"rows": rows}


def make_simceleba_like(folder: Path, n: int, unanimous: int, seed: int = 0, side: int = 224) -> Path:
    """A SimCelebA-format folder: ``n`` triplets of ``side`` px JPEG crops (smooth random images of
    about SimCelebA's file size) and ``triplet_answers.csv`` with ``unanimous`` unanimous triplets."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, 2**31, size=n)

    def write(i: int) -> None:
        r = np.random.default_rng(int(seeds[i]))
        for slot in "abc":
            small = r.integers(0, 256, (side // 16, side // 16, 3), dtype=np.uint8)
            image = Image.fromarray(small).resize((side, side), Image.BICUBIC)
            image.save(folder / f"t{i:04d}_{slot}.jpg", quality=90)

    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        list(pool.map(write, range(n)))
    is_unanimous = np.zeros(n, dtype=bool)
    is_unanimous[rng.choice(n, size=unanimous, replace=False)] = True
    lines = ["tripletId,ans1,ans2,ans3"]
    for i in range(n):
        first = "a" if rng.random() < 0.5 else "b"
        other = "b" if first == "a" else "a"
        answers = [first] * 3 if is_unanimous[i] else [first, first, other]
        rng.shuffle(answers)
        lines.append(f"t{i:04d}," + ",".join(answers))
    (folder / "triplet_answers.csv").write_text("\r\n".join(lines) + "\r\n")
    return folder


def part_epoch(
    ckpt: str, n: int, unanimous: int, batch: int, device, tmp: Path, use_compile: bool, max_steps: Optional[int]
) -> dict[str, Any]:
    """One epoch of ``perface.train.train`` with ``--recipe paper`` on a generated SimCelebA-sized set."""
    from perface.train.config import TrainConfig
    from perface.train.trainer import train

    t0 = time.perf_counter()
    folder = make_simceleba_like(tmp / "simceleba-like", n, unanimous)
    generate_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    summary = train(
        TrainConfig(
            data=str(folder),
            out=str(tmp / "run"),
            recipe="paper",
            init=ckpt,
            epochs=1,
            batch_size=batch,
            device="auto" if device.type == "cuda" else "cpu",
            compile=use_compile,
            progress=False,
            resume=False,
            max_steps=max_steps,
        )
    )
    wall = time.perf_counter() - t0
    one_time = wall - summary["epoch_seconds"]  # model load, decoding, baseline and final evaluation, writing
    projected = one_time + 30 * summary["epoch_seconds"]
    return {
        "set_generation_s": round(generate_s, 1),
        "counts": summary["counts"],
        "steps": summary["steps"],
        "train_seconds": summary["train_seconds"],
        "epoch_seconds": summary["epoch_seconds"],
        "train_triplets_per_s": summary["train_triplets_per_s"],
        "epoch_triplets_per_s": summary["epoch_triplets_per_s"],
        "wall_s": round(wall, 1),
        "one_time_s": round(one_time, 1),
        "projected_30_epochs_min": round(projected / 60, 2),
        "goal_30_epochs_min": 10,
        "compile": use_compile,
        "peak": {k: v for k, v in summary.items() if "max" in k},
    }


def _table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return ["(nothing measured)"]
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return [
        "| " + " | ".join(keys) + " |",
        "|" + "---|" * len(keys),
        *["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows],
    ]


def to_markdown(result: dict[str, Any]) -> str:
    """The result as the markdown section of docs/benchmarks.md."""
    lines = [
        "## GPU check (`benchmarks/gpu_check.py`)",
        "",
        "| machine | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in result["machine"].items()],
        "",
    ]
    for key, title in (
        ("training", "iresnet50 training steps, batch 32 triplets (BatchNorm training)"),
        ("evaluation", "Evaluation (triplet_similarities, fp32)"),
        ("loss", "PerFace as a loss: forward+backward, 256 px FFHQ-aligned crops"),
    ):
        part = result.get(key)
        lines += [f"### {title}", ""]
        if not isinstance(part, dict) or "rows" not in part:
            lines += [f"skipped: {part}", ""]
            continue
        lines += [*_table(part["rows"]), ""]
        extra = {k: v for k, v in part.items() if k != "rows" and v is not None}
        if extra:
            lines += [f"- {k}: {v}" for k, v in extra.items()] + [""]
    epoch = result.get("epoch")
    lines += ["### One epoch of `python -m perface.train --recipe paper` on a SimCelebA-sized set", ""]
    lines += [f"- {k}: {v}" for k, v in epoch.items()] if isinstance(epoch, dict) else [f"skipped: {epoch}"]
    lines += ["", f"Total wall time of the check: {result['seconds']} s.", ""]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (a CPU run proving every step works)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(os.environ.get("OUT") or HERE / "results"),
        help="folder for gpu_check.json and gpu_check.md (default: $OUT, else benchmarks/results)",
    )
    parser.add_argument("--wheels", type=Path, help="install the wheels in this folder first (offline machine)")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds; parts that no longer fit are skipped")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    args = parser.parse_args(argv)
    if args.wheels:
        install_wheels(args.wheels)
    import torch

    from _util import random_checkpoint  # benchmarks/ helper: a randomly initialized checkpoint

    budget = Budget(args.budget)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    tiny = args.tiny
    batch = 4 if tiny else 32
    n, unanimous = (48, 32) if tiny else (SIMCELEBA_TRIPLETS, SIMCELEBA_UNANIMOUS)
    epoch_steps = max(1, round(0.8 * unanimous / batch))
    tmp = Path(tempfile.mkdtemp(prefix="perface-gpu-check-"))
    r50 = str(random_checkpoint("iresnet50", tmp / "iresnet50"))
    ckpts = {"sface": "sface", "iresnet50": r50}
    result: dict[str, Any] = {
        "machine": {
            "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
            "device": str(device),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "tiny": tiny,
        }
    }

    def attempt(key: str, need_s: float, fn: Callable[[], Any]) -> None:
        if budget.left() < need_s:
            result[key] = f"not run: {budget.left():.0f} s of the budget left, about {need_s:.0f} s needed"
            return
        t0 = time.perf_counter()
        try:
            result[key] = fn()
        except Exception as exc:  # a part that fails is reported; the others still run
            result[key] = f"failed: {type(exc).__name__}: {exc}"
        print(f"gpu_check: {key} done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)

    with_compile = not args.no_compile and device.type == "cuda"
    attempt(
        "training",
        30 if tiny else 150,
        lambda: part_training(r50, batch, 3 if tiny else 20, device, with_compile, epoch_steps),
    )
    compile_pays = bool(
        isinstance(result.get("training"), dict) and (result["training"].get("compile") or {}).get("pays")
    )
    attempt("evaluation", 20 if tiny else 30, lambda: part_evaluation(ckpts, 8 if tiny else 512, 64, device, tmp))
    attempt("loss", 30 if tiny else 40, lambda: part_loss(ckpts, batch, 3 if tiny else 20, device))
    attempt(
        "epoch",
        60 if tiny else 150,
        lambda: part_epoch(r50, n, unanimous, batch, device, tmp, compile_pays, 2 if tiny else None),
    )
    result["seconds"] = round(time.perf_counter() - budget.start, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    text = to_markdown(result)
    (args.out / "gpu_check.md").write_text(text)
    print(text)
    failed = [k for k in ("training", "evaluation", "loss", "epoch") if not isinstance(result.get(k), dict)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
