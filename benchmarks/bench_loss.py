"""PerFace as a loss: forward + backward throughput (pairs/s), per backbone and alignment mode.

The metric is frozen (the usual loss setting); the gradient flows to the generated image ``x``.
Modes: ``none`` (aligned 112 crops), the fixed template conversions (256 crops, no detection) and
``detect`` (a real photo, detection without gradient + differentiable warp). iresnet50 runs with
random weights (same compute as trained ones). On CUDA every variant of ``_util.variants`` is
measured. ``python benchmarks/bench_loss.py [--quick] [--json OUT]``; ``run(quick)`` for run_all.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import EXAMPLES, apply_variant, bench_main, device_sync, metric_sources, timed, variants

BACKBONES = ("sface", "iresnet50")


def _modes() -> list[str]:
    try:
        from perface.alignment import align_modes
    except ImportError:
        return ["none"]
    return list(align_modes())


def _inputs(mode: str, batch: int, device: torch.device) -> torch.Tensor:
    if mode == "detect":
        import perface

        photo = perface.load_image(EXAMPLES / "obama.jpg")  # (3, H, W) in [0, 1]
        return photo.unsqueeze(0).expand(batch, -1, -1, -1).contiguous().to(device)
    side = 112 if mode == "none" else 256
    return torch.rand(batch, 3, side, side, generator=torch.Generator().manual_seed(0)).to(device)


def run(quick: bool = False) -> dict[str, object]:
    """Measure and return ``{"title", "rows", "notes"}`` (rows: one dict per configuration)."""
    import perface

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sync = device_sync(device)
    batch = 4 if quick else 32
    iters, min_s = (2, 0.0) if quick else (5, 2.0)
    rows: list[dict[str, object]] = []
    notes: list[str] = []
    for label, source in metric_sources(BACKBONES):
        for mode in _modes():
            if quick and label != "sface" and mode != "none":
                continue  # quick mode: every mode on sface, the default mode on the rest
            n = 1 if quick and mode == "detect" else (batch // 8 if mode == "detect" else batch)
            y = _inputs(mode, n, device)
            for var in variants(device):
                metric = perface.PerFace(source, align=mode, check_range=False).to(device)
                apply_variant(metric, var)
                x = (y.clone() * 0.9 + 0.05).requires_grad_(True)

                def step() -> None:
                    x.grad = None
                    with torch.autocast(device.type, dtype=var["amp"], enabled=var["amp"] is not None):
                        loss = metric(x, y).mean()
                    loss.backward()

                try:
                    sec = timed(step, warmup=1 if quick else 2, iters=iters, min_seconds=min_s, sync=sync)
                except Exception as exc:  # a variant that does not work here is reported, not fatal
                    notes.append(f"{label}/{mode}/{var['name']}: {type(exc).__name__}: {exc}")
                    continue
                rows.append(
                    {
                        "backbone": label,
                        "align": mode,
                        "variant": var["name"],
                        "device": device.type,
                        "threads": torch.get_num_threads(),
                        "batch": n,
                        "input": "x".join(map(str, y.shape[-2:])),
                        "pairs_per_s": round(n / sec, 1),
                        "ms_per_batch": round(sec * 1e3, 1),
                    }
                )
    notes.append("forward+backward of d = 1 - cos(f(x), f(y)) with a frozen metric; gradient to x only")
    return {"title": "Loss forward+backward", "rows": rows, "notes": notes}


if __name__ == "__main__":
    bench_main(run, __doc__)
