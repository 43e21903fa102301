"""The training-curve plot (PNG) from a training run's JSONL log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .._plotting import count_axis, pyplot, save_figure

__all__ = ["plot_training_curve"]


def plot_training_curve(log_path: Path, png_path: Path) -> Path:
    """Training loss per logged step and validation accuracy per epoch (epoch 0 = initialization),
    titled with the checkpoint, its initialization and data, the metric signature underneath."""
    plt = pyplot()
    records = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line.strip()]
    steps = [(r["step"], r["loss"]) for r in records if r.get("event") == "step"]
    epochs = [
        (r["epoch"], r["val_acc"])
        for r in records
        if r.get("event") in ("baseline", "epoch") and r.get("val_acc") is not None
    ]
    start: dict[str, Any] = next((r for r in records if r.get("event") == "start"), {})
    finish: dict[str, Any] = next((r for r in reversed(records) if r.get("event") == "finish"), {})
    config = start.get("config") or {}
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    if config or finish:
        name = finish.get("name") or config.get("name") or "checkpoint"
        fig.suptitle(
            f"{name}: fine-tuned from {config.get('init', '?')} on {Path(str(config.get('data', '?'))).name}",
            fontsize=10,
        )
    if steps:
        ax_loss.plot(*zip(*steps), lw=1.2)
    ax_loss.set(xlabel="optimizer step", ylabel="triplet loss", title="training loss")
    ax_loss.grid(alpha=0.3)
    if epochs:
        ax_acc.plot(*zip(*sorted(dict(epochs).items())), marker="o")
    ax_acc.axhline(0.5, color="gray", ls="--", lw=1, label="chance")
    ax_acc.set(
        xlabel="epoch (0 = initialization)", ylabel="triplet accuracy", title="validation accuracy", ylim=(0, 1.02)
    )
    ax_acc.legend(loc="lower right")
    count_axis(ax_loss.xaxis)  # steps and epochs are whole numbers
    count_axis(ax_acc.xaxis)
    ax_acc.grid(alpha=0.3)
    try:
        return save_figure(fig, png_path, dpi=110, footer=[str(finish.get("signature", ""))])
    finally:
        plt.close(fig)
