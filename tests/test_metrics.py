"""perface.metrics.PerFaceSimilarity against torchmetrics' conventions, in the style of torchmetrics'
own metric tests: class attributes, forward vs update/compute, state merging, reset, half
precision, differentiability, plotting, and DDP over 2 gloo processes.

The reference for every value is :meth:`perface.PerFace.similarity` called directly on the
same pairs (tested against onnxruntime in test_core.py), averaged in float64 with numpy. The
pairs are the six real aligned faces of ``data/sface_reference.npz`` (three photos of one
person, three other people), so similarities spread over [0.06, 0.75] rather than clustering.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("torchmetrics")

from conftest import sface_signature
from perface import PerFace
from perface.metrics import PerFaceSimilarity

CROPS = torch.from_numpy(np.load(Path(__file__).parent / "data" / "sface_reference.npz")["crops"])
FACES = CROPS.permute(0, 3, 1, 2).float() / 255  # (6, 3, 112, 112) in [0, 1]
ATOL = 1e-5  # float32 similarities of the same pairs, batched differently


def _batches(seed: int, n_batches: int = 2, size: int = 3):
    """Pairs of distinct real faces, drawn with a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        i = torch.randint(0, 6, (size,), generator=g)
        j = (i + torch.randint(1, 6, (size,), generator=g)) % 6
        out.append((FACES[i], FACES[j]))
    return out


def _reference(metric: PerFace, batches) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([metric.similarity(x, y) for x, y in batches]).double().numpy()


def _quiet_compute(m):
    with warnings.catch_warnings():  # torchmetrics warns on compute() before update()
        warnings.simplefilter("ignore")
        return m.compute()


def test_declares_what_torchmetrics_reads():
    assert PerFaceSimilarity.is_differentiable is True
    assert PerFaceSimilarity.higher_is_better is True  # a similarity: higher = more alike
    assert PerFaceSimilarity.full_state_update is False  # enables merge_state and the fast forward
    assert (PerFaceSimilarity.plot_lower_bound, PerFaceSimilarity.plot_upper_bound) == (-1.0, 1.0)


def test_update_compute_gives_the_float32_mean_over_all_pairs(metric):
    m = PerFaceSimilarity(metric)
    # obama-obama2, obama2-obama3, biden-grace_hopper; obama-obama3, obama3-biden, astronaut-obama
    batches = [(FACES[[0, 1, 3]], FACES[[1, 2, 4]]), (FACES[[0, 2, 5]], FACES[[2, 3, 0]])]
    for x, y in batches:
        m.update(x, y)
    out = m.compute()
    ref = _reference(metric, batches)
    assert out.dtype == torch.float32 and out.dim() == 0
    assert abs(float(out) - ref.mean()) < ATOL
    assert ref.min() < 0.5 < ref.max()  # real spread: a wrong pairing would move the mean


def test_ci_mode_gives_mean_interval_and_count(metric):
    m = PerFaceSimilarity(metric, ci=True)
    batches = _batches(1, n_batches=3)
    for x, y in batches:
        m.update(x, y)
    out = m.compute()
    ref = _reference(metric, batches)
    half = 1.959964 * ref.std(ddof=1) / np.sqrt(ref.size)  # normal approximation, z(0.975)
    assert {k: v.dtype for k, v in out.items()} == {
        "mean": torch.float32,
        "low": torch.float32,
        "high": torch.float32,
        "count": torch.int64,
    }
    assert int(out["count"]) == ref.size
    assert abs(float(out["mean"]) - ref.mean()) < ATOL
    assert abs(float(out["low"]) - (ref.mean() - half)) < ATOL
    assert abs(float(out["high"]) - (ref.mean() + half)) < ATOL


def test_identical_pairs_score_one(metric):
    m = PerFaceSimilarity(metric)
    m.update(FACES, FACES)
    assert abs(float(m.compute()) - 1.0) < 1e-5


def test_forward_returns_the_batch_value_and_accumulates(metric):
    m = PerFaceSimilarity(metric)
    batches = _batches(2)
    for x, y in batches:
        batch_value = m(x, y)
        assert abs(float(batch_value) - _reference(metric, [(x, y)]).mean()) < ATOL
    assert abs(float(m.compute()) - _reference(metric, batches).mean()) < ATOL
    assert not m.total.requires_grad  # accumulated state keeps no autograd graph


def test_forward_is_differentiable_update_is_not(metric):
    m = PerFaceSimilarity(metric)
    x, y = _batches(3, n_batches=1)[0]
    x = x.clone().requires_grad_()
    out = m(x, y)
    assert out.requires_grad
    (grad,) = torch.autograd.grad(out, x)
    x_ref = x.detach().clone().requires_grad_()
    (grad_ref,) = torch.autograd.grad(metric.similarity(x_ref, y).mean(), x_ref)
    assert torch.allclose(grad, grad_ref, atol=1e-7, rtol=1e-4) and grad.abs().sum() > 0
    m.update(x, y)
    assert not m.total.requires_grad


@pytest.mark.slow
def test_merge_state_equals_one_metric_over_all_batches(metric):
    batches = _batches(4, n_batches=4)
    for ci in (False, True):
        a, b, whole = (PerFaceSimilarity(metric, ci=ci) for _ in range(3))
        for i, (x, y) in enumerate(batches):
            (a if i % 2 else b).update(x, y)
            whole.update(x, y)
        a.merge_state(b)
        merged, expected = a.compute(), whole.compute()
        if ci:
            for key in ("mean", "low", "high", "count"):
                assert torch.allclose(merged[key].double(), expected[key].double(), atol=ATOL), key
        else:
            assert abs(float(merged) - float(expected)) < ATOL
    with pytest.raises(ValueError):
        a.merge_state({"total": torch.tensor(1.0, dtype=torch.float64)})  # "count" missing


def test_reset_forgets_everything(metric):
    m = PerFaceSimilarity(metric, ci=True)
    for x, y in _batches(5):
        m.update(x, y)
    m.reset()
    assert int(m.count) == 0 and m.values == []
    out = _quiet_compute(m)
    assert torch.isnan(out["mean"]) and out["mean"].dtype == torch.float32
    batches = _batches(6, n_batches=1)
    m.update(*batches[0])
    assert int(m.compute()["count"]) == 3
    assert abs(float(m.compute()["mean"]) - _reference(metric, batches).mean()) < ATOL


def test_half_precision_input(metric):
    """fp16 inputs (e.g. from an AMP generator) are accepted; their rounding (<= 2.5e-4 per
    pixel) moves a similarity by far less than 1e-2."""
    m = PerFaceSimilarity(metric)
    batches = _batches(7)
    for x, y in batches:
        m.update(x.half(), y.half())
    out = m.compute()
    assert out.dtype == torch.float32
    assert abs(float(out) - _reference(metric, batches).mean()) < 1e-2


@pytest.mark.slow
def test_half_precision_metric_as_torchmetrics_precision_tests_do(metric):
    """``.to(dtype=torch.half)`` moves the network and the states to fp16, as torchmetrics'
    precision tests do; the result stays within fp16 accuracy and the signature says fp16."""
    m = PerFaceSimilarity(PerFace()).to(dtype=torch.half)
    batches = _batches(8, n_batches=1)
    out = m(*(t.half() for t in batches[0]))
    assert out.dtype == torch.half and torch.isfinite(out)
    assert abs(float(out) - _reference(metric, batches).mean()) < 2e-2
    assert m.signature.endswith("|prec:fp16") and "*" not in m.signature


def test_signature_names_the_wrapped_metric_and_its_alignment(metric):
    assert PerFaceSimilarity(metric).signature == metric.signature
    detect = PerFaceSimilarity(PerFace(align="detect"))
    assert detect.signature == sface_signature("detect")
    assert PerFaceSimilarity(metric).model_name == "sface"


def test_plot_draws_within_bounds_with_the_signature_in_the_title(metric, tmp_path):
    pytest.importorskip("matplotlib")
    m = PerFaceSimilarity(metric, ci=True)
    values = []
    for x, y in _batches(9, n_batches=3):
        values.append(m(x, y))
    fig, ax = m.plot()
    assert metric.signature in "".join(ax.get_title().split())  # wrapped over lines at the '|'s
    assert ax.get_ylim()[0] <= -1.0 and ax.get_ylim()[1] >= 1.0
    labels = {line.get_label() for line in ax.get_lines()}
    assert {"mean", "low", "high"} <= labels and "count" not in labels  # the count is not a similarity
    fig.savefig(tmp_path / "one.png")
    fig, ax = m.plot(values)  # one point per step
    assert len(ax.get_lines()[0].get_xdata()) == 3
    fig.savefig(tmp_path / "steps.png")
    _, given = PerFaceSimilarity(metric).plot(torch.tensor(0.5), ax=ax)
    assert given is ax
    assert (tmp_path / "one.png").stat().st_size > 0 and (tmp_path / "steps.png").stat().st_size > 0


def test_import_perface_does_not_import_torchmetrics():
    code = "import sys, perface; print('torchmetrics' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_missing_torchmetrics_names_the_extra():
    code = (
        "import sys; sys.modules['torchmetrics'] = None\n"
        "try:\n    import perface.metrics\nexcept ImportError as e:\n    print(e)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "perface[metrics]" in out.stdout


# --- DDP: 2 gloo processes -------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        metric = PerFace()
        plain, ci = PerFaceSimilarity(metric), PerFaceSimilarity(metric, ci=True)
        batch_values = []
        for x, y in _batches(seed=10 + rank, n_batches=1 + rank):  # unequal work per process
            batch_values.append(float(plain(x, y)))  # forward: this process's batch only
            ci.update(x, y)
        out_plain, out_ci = plain.compute(), ci.compute()
        result = {
            "batch_values": batch_values,
            "plain": float(out_plain),
            "plain_dtype": str(out_plain.dtype),
            **{k: float(v) for k, v in out_ci.items()},
        }
        with open(f"{out_dir}/rank{rank}.json", "w") as f:
            json.dump(result, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_syncs_across_two_processes(tmp_path, metric):
    world = 2
    torch.multiprocessing.spawn(_worker, args=(world, _free_port(), str(tmp_path)), nprocs=world, join=True)
    per_rank = [_batches(seed=10 + r, n_batches=1 + r) for r in range(world)]
    ref = _reference(metric, [b for batches in per_rank for b in batches])
    half = 1.959964 * ref.std(ddof=1) / np.sqrt(ref.size)
    for rank in range(world):
        res = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert res["plain_dtype"] == "torch.float32"
        for value, batch in zip(res["batch_values"], per_rank[rank]):
            assert abs(value - _reference(metric, [batch]).mean()) < ATOL
        # every process sees the global result
        assert res["count"] == ref.size
        assert abs(res["plain"] - ref.mean()) < ATOL and abs(res["mean"] - ref.mean()) < ATOL
        assert abs(res["low"] - (ref.mean() - half)) < ATOL and abs(res["high"] - (ref.mean() + half)) < ATOL
