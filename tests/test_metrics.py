"""perface.metrics: the torchmetrics Metric, single-process and synced over 2 gloo processes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import warnings

import pytest
import torch

pytest.importorskip("torchmetrics")

from perface.metrics import PerFaceSimilarity  # noqa: E402


def _batches(seed: int, n_batches: int = 2, size: int = 3):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(size, 3, 112, 112, generator=g), torch.rand(size, 3, 112, 112, generator=g))
            for _ in range(n_batches)]


def test_accumulates_the_mean_over_batches(metric):
    m = PerFaceSimilarity(metric, ci=True)
    batches = _batches(0)
    for x, y in batches:
        m.update(x, y)
    with torch.no_grad():
        sims = torch.cat([metric.similarity(x, y) for x, y in batches]).double()
    out = m.compute()
    assert int(out["count"]) == sims.numel()
    assert torch.allclose(out["mean"], sims.mean(), atol=1e-6)
    assert out["low"] < out["mean"] < out["high"]
    m.reset()
    with warnings.catch_warnings():  # torchmetrics warns on compute() before update()
        warnings.simplefilter("ignore")
        assert torch.isnan(m.compute()["mean"])


def test_identical_pairs_score_one_and_plain_mode_returns_a_scalar(metric):
    m = PerFaceSimilarity(metric)
    x = torch.rand(3, 3, 112, 112, generator=torch.Generator().manual_seed(1))
    m.update(x, x)
    out = m.compute()
    assert out.dim() == 0 and abs(float(out) - 1.0) < 1e-5
    assert m.model_name == metric.name


def test_import_perface_does_not_import_torchmetrics():
    code = "import sys, perface; print('torchmetrics' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_missing_torchmetrics_names_the_extra():
    code = ("import sys; sys.modules['torchmetrics'] = None\n"
            "try:\n    import perface.metrics\nexcept ImportError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "perface[metrics]" in out.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        m = PerFaceSimilarity(ci=True)
        for x, y in _batches(seed=10 + rank, n_batches=1 + rank):  # unequal work per process
            m.update(x, y)
        out = m.compute()
        with open(f"{out_dir}/rank{rank}.json", "w") as f:
            json.dump({k: float(v) for k, v in out.items()}, f)
    finally:
        dist.destroy_process_group()


def test_syncs_across_two_processes(tmp_path, metric):
    world = 2
    torch.multiprocessing.spawn(_worker, args=(world, _free_port(), str(tmp_path)), nprocs=world, join=True)
    with torch.no_grad():
        sims = torch.cat([metric.similarity(x, y) for r in range(world)
                          for x, y in _batches(seed=10 + r, n_batches=1 + r)]).double()
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(world)]
    for res in results:  # every process sees the global result
        assert res["count"] == sims.numel()
        assert abs(res["mean"] - float(sims.mean())) < 1e-5
        assert res["low"] < res["mean"] < res["high"]
