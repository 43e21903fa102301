"""Helpers shared by bench_loss.py, bench_train.py and run_all.py: timing, machine details, and a
randomly initialized checkpoint for backbones whose weights are not available offline."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import torch

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def sample_times(
    step: Callable[[], object], warmup: int, iters: int, min_seconds: float, sync: Callable[[], None] = lambda: None
) -> list[float]:
    """Sorted seconds per call of ``step``: at least ``iters`` calls and ``min_seconds`` in all."""
    for _ in range(warmup):
        step()
    sync()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < iters or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return sorted(times)


def timed(step: Callable[[], None], warmup: int, iters: int, min_seconds: float, sync: Callable[[], None]) -> float:
    """Median seconds per call of ``step`` (see :func:`sample_times`)."""
    times = sample_times(step, warmup, iters, min_seconds, sync)
    return times[len(times) // 2]


def device_sync(device: torch.device) -> Callable[[], None]:
    """A function that waits for queued work on ``device`` (no-op on CPU)."""
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def random_checkpoint(arch: str, directory: Path) -> Path:
    """A checkpoint directory with a randomly initialized ``arch`` (same compute as trained weights).

    Uses the registry spec of the first checkpoint with that architecture, renamed
    ``<arch>-random-init``. Loads with ``PerFace(directory)``.
    """
    from safetensors.torch import save_file

    from perface.archs import build_backbone
    from perface.registry import MODELS

    spec = next(s for s in MODELS.values() if s.arch == arch)
    spec = dataclasses.replace(spec, name=f"{arch}-random-init", weights=None)
    torch.manual_seed(0)
    net = build_backbone(spec.arch, **spec.arch_kwargs)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(spec.to_config()))
    return directory


def metric_sources(names: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    """``(label, PerFace source)`` for backbone names: ``sface`` is the embedded checkpoint; other
    names are architectures built with random weights in a temporary directory."""
    tmp = Path(tempfile.mkdtemp(prefix="perface-bench-"))
    for name in names:
        if name == "sface":
            yield "sface", "sface"
        else:
            yield name, str(random_checkpoint(name, tmp / name))


def variants(device: torch.device) -> list[dict[str, object]]:
    """Execution variants to measure: fp32 eager everywhere; on CUDA also autocast fp16/bf16,
    channels_last and torch.compile (what wins is reported, nothing is assumed)."""
    if device.type != "cuda":
        return [{"name": "fp32", "amp": None, "channels_last": False, "compile": False}]
    out = [
        {"name": "fp32", "amp": None, "channels_last": False, "compile": False},
        {"name": "fp16", "amp": torch.float16, "channels_last": False, "compile": False},
        {"name": "fp16+channels_last", "amp": torch.float16, "channels_last": True, "compile": False},
    ]
    if torch.cuda.is_bf16_supported():
        out.append({"name": "bf16+channels_last", "amp": torch.bfloat16, "channels_last": True, "compile": False})
    out.append({"name": "fp16+channels_last+compile", "amp": torch.float16, "channels_last": True, "compile": True})
    return out


def apply_variant(metric: torch.nn.Module, variant: dict[str, object]) -> None:
    """Put ``metric.net`` in the variant's memory format / compiled form (in place)."""
    if variant["channels_last"]:
        metric.net.to(memory_format=torch.channels_last)
    if variant["compile"]:
        metric.net = torch.compile(metric.net)


def machine_info() -> dict[str, object]:
    """CPU, threads, torch and accelerator details for the benchmark table."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, object] = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_default_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import perface

        info["perface"] = perface.__version__
    except ImportError:
        pass
    try:
        info["git"] = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=5
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        info["git"] = None
    with contextlib.suppress(OSError):
        info["load_average"] = os.getloadavg()
    return info


def bench_main(run: Callable[[bool], dict[str, Any]], doc: str) -> None:
    """Command line of a ``bench_<name>.py`` with a ``run(quick) -> dict``: ``[--quick] [--json OUT]``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small batches, few iterations")
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args()
    text = json.dumps(run(args.quick), indent=2)
    if args.json:
        args.json.write_text(text)
    print(text)
