"""The core metric: conversion equivalence, the input contract, gradients, modes, import hygiene, CLI.

``data/sface_reference.npz`` (made by ``tools/make_sface_fixture.py``) holds six real faces
(RetinaFace landmarks, warped onto the ArcFace 112x112 template) and the embeddings onnxruntime
gave for them with the original SFace ONNX, so equivalence is checked without onnxruntime.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import perface
from perface import InputRangeError, PerFace

DATA = Path(__file__).parent / "data"
REFERENCE = np.load(DATA / "sface_reference.npz")
NAMES = [str(n) for n in REFERENCE["names"]]
SAME_PERSON = {"obama", "obama2", "obama3"}


@pytest.fixture(scope="module")
def crops() -> torch.Tensor:
    """The fixture's aligned faces as uint8 (K, 3, 112, 112)."""
    return torch.from_numpy(REFERENCE["crops"]).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module")
def faces(crops) -> torch.Tensor:
    """The fixture's aligned faces as float (K, 3, 112, 112) in [0, 1]."""
    return crops.float() / 255


# --- conversion equivalence --------------------------------------------------------------------


def test_fixture_made_from_the_converted_onnx():
    provenance = json.loads(str(REFERENCE["provenance"]))
    shipped = json.loads((Path(perface.__file__).parent / "weights" / "PROVENANCE.json").read_text())
    assert provenance["sface_onnx_sha256"] == shipped["sface.safetensors"]["source_sha256"]


def test_torch_matches_onnxruntime_on_real_faces(metric, crops):
    reference = torch.from_numpy(REFERENCE["onnx_embeddings"])
    with torch.no_grad():
        raw = metric.net(metric.preprocess(crops))
    assert raw.shape == reference.shape
    # relative to each embedding's norm (about 12): float32 through ~50 layers whose kernels differ
    # between CPUs (and from onnxruntime's) in the last bits; 1.1e-6 measured on an AMD EPYC
    relative = (raw - reference).norm(dim=1) / reference.norm(dim=1)
    assert relative.max().item() <= 1e-4
    cos = (metric.embed(crops) * nn.functional.normalize(reference, dim=1)).sum(1)
    assert cos.min().item() >= 0.99999


def test_same_person_scores_above_different_people(metric, faces):
    with torch.no_grad():
        sim = metric.embed(faces) @ metric.embed(faces).T
    same, cross = [], []
    for i in range(len(NAMES)):
        for j in range(i + 1, len(NAMES)):
            if NAMES[i] in SAME_PERSON and NAMES[j] in SAME_PERSON:
                same.append(sim[i, j].item())
            elif NAMES[i] in SAME_PERSON or NAMES[j] in SAME_PERSON:
                cross.append(sim[i, j].item())
    assert len(same) == 3 and cross
    assert min(same) > max(cross), (same, cross)


def test_embed_is_l2_normalized(metric, faces):
    e = metric.embed(faces)
    assert e.shape == (len(NAMES), metric.embedding_size) == (len(NAMES), 128)
    assert torch.allclose(e.norm(dim=1), torch.ones(len(NAMES)), atol=1e-5)


# --- distance and gradients ----------------------------------------------------------------------


def test_distance_is_zero_with_finite_gradient_at_identical_inputs(metric, faces):
    x = faces[:2].clone().requires_grad_(True)
    d = metric(x, x)
    assert d.shape == (2,)
    assert d.abs().max().item() <= 1e-6
    d.sum().backward()
    assert torch.isfinite(x.grad).all()

    y = faces[:2].clone()
    x2 = faces[:2].clone().requires_grad_(True)
    metric(x2, y).sum().backward()
    assert torch.isfinite(x2.grad).all()


def test_gradients_reach_both_inputs(metric, faces):
    x = faces[[0]].clone().requires_grad_(True)
    y = faces[[3]].clone().requires_grad_(True)
    d = metric(x, y)
    assert 0 < d.item() <= 2
    d.backward()
    for g in (x.grad, y.grad):
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0


def test_similarity_and_distance_agree(metric, faces):
    x, y = faces[:3], faces[3:6]
    with torch.no_grad():
        assert torch.allclose(metric(x, y), 1 - metric.similarity(x, y), atol=1e-6)
        assert ((metric.similarity(x, y) >= -1) & (metric.similarity(x, y) <= 1)).all()


def test_chunked_cpu_embedding_equals_one_pass(metric, faces, monkeypatch):
    x = torch.cat([faces, faces.flip(-1)])  # 12 faces, more than one chunk
    assert x.shape[0] > metric.spec.cpu_chunk
    xa = x.clone().requires_grad_(True)
    chunked = metric.embed(xa)
    (chunked * torch.linspace(-1, 1, 128)).sum().backward()
    monkeypatch.setattr(metric, "spec", dataclasses.replace(metric.spec, cpu_chunk=None))
    xb = x.clone().requires_grad_(True)
    single = metric.embed(xb)
    (single * torch.linspace(-1, 1, 128)).sum().backward()
    assert torch.allclose(chunked, single, atol=1e-5)
    assert torch.allclose(xa.grad, xb.grad, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("setting", ["1", "0"])
def test_malloc_tuning_applies_on_glibc_and_can_be_switched_off(setting):
    path = Path(perface.__file__).parent / "_malloc.py"  # loaded alone: a fresh process without torch
    code = (
        "import ctypes, importlib.util as u, json, sys; "
        f"spec = u.spec_from_file_location('m', {str(path)!r}); m = u.module_from_spec(spec); "
        "spec.loader.exec_module(m); "
        "glibc = sys.platform.startswith('linux') and hasattr(ctypes.CDLL(None), 'gnu_get_libc_version'); "
        "print(json.dumps([glibc, m.tune_malloc(), m.tune_malloc()]))"
    )
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "LD_PRELOAD")
    }
    env["PERFACE_TUNE_MALLOC"] = setting
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    glibc, first, second = json.loads(out.stdout)
    assert first == second == (glibc and setting == "1")


# --- input contract -------------------------------------------------------------------------------


def test_float_above_one_is_rejected_with_min_max_and_fix(metric, faces):
    x = 0.25 + faces[:1] * 0.5  # in [0.25, 0.75], then one pixel at 200
    x[0, 0, 0, 0] = 200.0
    with pytest.raises(InputRangeError) as info:
        metric.embed(x)
    msg = str(info.value)
    assert "0.25" in msg and "200" in msg
    assert "255" in msg and "check_range=False" in msg


def test_negative_input_with_default_range_names_value_range(metric, faces):
    x = faces[:1] * 1.25 - 0.5  # in [-0.5, 0.75]
    x[0, 0, 0, 0], x[0, 0, 0, 1] = -0.5, 0.75
    with pytest.raises(InputRangeError) as info:
        metric(x, faces[:1])
    msg = str(info.value)
    assert "-0.5" in msg and "0.75" in msg
    assert "value_range=(-1, 1)" in msg
    assert isinstance(info.value, ValueError)


def test_minus_one_one_range_gives_the_same_result(metric, faces):
    signed = PerFace(value_range=(-1, 1))
    with torch.no_grad():
        a = signed.embed(faces * 2 - 1)
        b = metric.embed(faces)
    assert torch.allclose(a, b, atol=1e-5)


def test_uint8_equals_float_over_255(metric, crops):
    with torch.no_grad():
        assert torch.allclose(metric.embed(crops), metric.embed(crops.float() / 255), atol=1e-6)


def test_check_range_false_lets_out_of_range_pass(faces):
    loose = PerFace(check_range=False)
    with torch.no_grad():
        d = loose(faces[:2] * 1.5 - 0.2, faces[:2])
    assert d.shape == (2,) and torch.isfinite(d).all()


@pytest.mark.parametrize("size", [(160, 160), (96, 128), (224, 224)])
def test_any_spatial_size(metric, faces, size):
    x = nn.functional.interpolate(faces, size=size, mode="bilinear", align_corners=False).clamp(0, 1)
    with torch.no_grad():
        sim = metric.similarity(x, faces)
    assert sim.shape == (len(NAMES),)
    if size[0] == size[1]:  # same face, only resampled
        assert sim.min().item() > 0.9


def test_single_image_chw(metric, faces):
    with torch.no_grad():
        one = metric.embed(faces[0])
        assert one.shape == (1, 128)
        assert torch.allclose(one, metric.embed(faces[:1]), atol=1e-6)
        assert metric(faces[0], faces[1]).shape == (1,)


def test_broadcasting_one_against_many(metric, faces):
    """One image against six equals the image repeated six times. The one image goes through the
    network as a batch of 1, the repeated one as a batch of 6, which may pick other kernels: the
    distances (in [0, 2]) then differ by float32 rounding (eps 1.2e-7 per operation; 1.8e-7 measured
    on an AMD EPYC), so 1e-5 holds on any CPU while a wrong pairing is off by 0.2 or more."""
    with torch.no_grad():
        d = metric(faces[:1], faces)
        expected = metric(faces[:1].expand_as(faces), faces)
    assert d.shape == (len(NAMES),)
    assert torch.allclose(d, expected, rtol=0, atol=1e-5)
    assert d[0].abs().item() <= 1e-5


# --- modes ------------------------------------------------------------------------------------------


def _batchnorms(module: nn.Module):
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def test_eval_and_frozen_by_default(metric):
    assert not metric.training
    assert not any(p.requires_grad for p in metric.parameters())
    parent = nn.Sequential(nn.Linear(2, 2), PerFace())
    parent.train()
    assert parent[0].training
    assert not any(bn.training for bn in _batchnorms(parent[1]))
    assert not parent[1].training


def test_trainable_metric_trains(faces):
    tuned = PerFace(trainable=True)
    assert all(p.requires_grad for p in tuned.parameters())
    assert not tuned.training  # eval until asked
    tuned.train()
    assert all(bn.training for bn in _batchnorms(tuned))
    tuned(faces[:2], faces[2:4]).sum().backward()
    grads = [p.grad for p in tuned.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_name_says_which_model(metric):
    assert metric.name == "sface"
    assert "sface" in repr(metric)


# --- import hygiene and CLI --------------------------------------------------------------------------

_HYGIENE = textwrap.dedent(
    """
    import json, os, socket, sys
    events = {"connect": [], "opened": []}

    def hook(event, args):
        if event == "socket.connect":
            events["connect"].append(repr(args[1]))
        elif event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            events["opened"].append(os.fsdecode(args[0]))

    sys.addaudithook(hook)

    def refuse(*args, **kwargs):
        raise OSError("network access attempted")

    socket.socket.connect = refuse
    socket.create_connection = refuse

    import perface
    report = {
        "import_connect": list(events["connect"]),
        "import_weights": [p for p in events["opened"] if p.endswith((".safetensors", ".pth", ".onnx"))],
        "heavy": [m for m in ("facexlib", "cv2", "matplotlib", "onnxruntime") if m in sys.modules],
    }
    metric = perface.PerFace()
    report["create_connect"] = list(events["connect"])
    report["name"] = metric.name
    print(json.dumps(report))
    """
)


def test_import_is_cheap_and_offline():
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_HUB_OFFLINE")}
    result = subprocess.run([sys.executable, "-c", _HYGIENE], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["import_connect"] == []
    assert report["import_weights"] == []
    assert report["heavy"] == []
    assert report["create_connect"] == []
    assert report["name"] == "sface"


def test_cli_similarity_prints_score_and_model(tmp_path, capsys):
    from PIL import Image

    from perface.cli import main

    paths = []
    for i in (0, 3):
        paths.append(tmp_path / f"{NAMES[i]}.png")
        Image.fromarray(REFERENCE["crops"][i]).save(paths[-1])
    assert main(["similarity", "--aligned", "arcface", str(paths[0]), str(paths[1])]) == 0
    out = capsys.readouterr().out.strip()
    assert "sface" in out
    onnx = nn.functional.normalize(torch.from_numpy(REFERENCE["onnx_embeddings"][[0, 3]]), dim=1)
    expected = float(onnx[0] @ onnx[1])  # onnxruntime's embeddings of the same two crops
    (line,) = [line for line in out.splitlines() if not line.startswith("#")]  # '#' lines: the legend
    assert float(line.split()[0]) == pytest.approx(expected, abs=1e-3)
