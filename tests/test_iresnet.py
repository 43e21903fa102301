"""iresnet against insightface's public ``arcface_torch`` definition: names, shapes and outputs.

Source of both fixtures: deepinsight/insightface, ``recognition/arcface_torch/backbones/iresnet.py``
at commit 04a433f154de30ff8604d78f73f2b6af5822f71c, run outside this repository (its code is not
part of perface).

``data/iresnet50_state_dict_keys.json``: that definition instantiated with its defaults
(``num_features=512``) and ``model.state_dict()`` listed as (name, shape, dtype), in order, for
iresnet50 (the architecture of ``ms1mv3_arcface_r50_fp16.pth``), plus the tensor and element
counts of iresnet18/34/50/100. Checkpoints saved by arcface_torch are exactly such state dicts
(fp32; "fp16" names the training precision), so matching it means they load with ``strict=True``.

``data/iresnet50_reference_outputs.npz``: what the public iresnet50 computes, made by a script
kept outside the repository that (1) builds the public ``iresnet50()`` and casts it to float64;
(2) loads :func:`seeded_state_dict` (imported from this file, so both sides use identical
weights) with ``strict=True``; (3) runs :func:`seeded_inputs` through it under
``torch.no_grad()``, once in ``eval()`` mode (running BatchNorm statistics: ``eval_fp64``) and
once in ``train()`` mode (batch statistics, as in fine-tuning: ``train_fp64``); (4) stores
those two (3, 512) float64 arrays, the fingerprints of the weights and inputs it used
(:func:`fingerprint`) and a provenance string. Outputs, not weights, are stored: the weights
are regenerated here from the key/shape list and a seed with numpy's legacy ``RandomState``,
whose streams numpy keeps bit-for-bit stable across versions and platforms.

Tolerances: in float64 our network and the reference run the same operations, so any
difference is rounding in a different summation order (CPU vendor, BLAS, thread count), about
1e-13 relative after 50 layers; the test allows 1e-8 of the output's largest magnitude. In
float32 the observed error against the float64 reference is 2e-6 relative (AMD EPYC); the test
allows 1e-4. Swapping two layers of ``IBasicBlock.forward`` changes the output by more than
10% relative (checked below for the closest pair, BatchNorm and PReLU).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from perface.archs import build_backbone
from perface.archs import iresnet as iresnet_module

DATA = Path(__file__).parent / "data"
CONTRACT = json.loads((DATA / "iresnet50_state_dict_keys.json").read_text())
REFERENCE_FILE = DATA / "iresnet50_reference_outputs.npz"
WEIGHTS_SEED = 2025
INPUTS_SEED = 7
FP64_RTOL = 1e-8
FP32_RTOL = 1e-4


def seeded_state_dict(seed: int = WEIGHTS_SEED) -> dict[str, torch.Tensor]:
    """float64 tensors for every (name, shape) of the public iresnet50 state dict, in order.

    One ``numpy.random.RandomState(seed)`` stream, drawn tensor by tensor: running variances
    U(0.5, 1.5); running means N(0, 0.1); conv/linear weights N(0, 1/fan_in); PReLU slopes
    U(0, 0.5); BatchNorm scales U(0.5, 1.5), times 0.3 for each block's last BatchNorm
    (``bn3``, so 24 residual additions keep activations of order 1); biases N(0, 0.1);
    ``num_batches_tracked`` 0. Every value is distinct and away from the defaults (BN scale 1,
    PReLU 0.25), so a mixed-up layer shows in the output.
    """
    rs = np.random.RandomState(seed)
    state = {}
    for name, shape, dtype in CONTRACT["iresnet50"]:
        n = math.prod(shape)
        leaf = name.rsplit(".", 1)[-1]
        if dtype == "int64":
            values = np.zeros(n, dtype=np.int64)
        elif leaf == "running_var":
            values = rs.uniform(0.5, 1.5, n)
        elif leaf == "running_mean":
            values = rs.normal(0.0, 0.1, n)
        elif len(shape) > 1:
            values = rs.normal(0.0, 1.0 / math.sqrt(n / shape[0]), n)
        elif name.endswith("prelu.weight"):
            values = rs.uniform(0.0, 0.5, n)
        elif leaf == "weight":
            values = rs.uniform(0.5, 1.5, n) * (0.3 if ".bn3." in name else 1.0)
        else:
            values = rs.normal(0.0, 0.1, n)
        state[name] = torch.from_numpy(values.reshape(shape))
    return state


def seeded_inputs(seed: int = INPUTS_SEED) -> torch.Tensor:
    """Three normalized "images" (3, 3, 112, 112), float64 U(-1, 1), from ``RandomState(seed)``."""
    return torch.from_numpy(np.random.RandomState(seed).uniform(-1.0, 1.0, (3, 3, 112, 112)))


def fingerprint(tensors) -> float:
    """A float64 checksum of tensors (sum of |values| weighted by position): detects a change of
    the weight or input recipe, so a mismatch is not mistaken for a bug in the network."""
    total = 0.0
    for i, t in enumerate(tensors):
        total += (i + 1) * float(t.double().abs().sum())
    return total


@pytest.fixture(scope="module")
def reference():
    with np.load(REFERENCE_FILE) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def state():
    return seeded_state_dict()


def _outputs(state, dtype: torch.dtype, train: bool = False) -> torch.Tensor:
    with torch.device("meta"):  # no random init: every value comes from ``state``
        net = build_backbone("iresnet50")
    # copies: train mode updates the running statistics in place
    net.load_state_dict(
        {k: v.to(dtype, copy=True) if v.is_floating_point() else v.clone() for k, v in state.items()}, assign=True
    )
    net.train(train)
    with torch.no_grad():
        return net(seeded_inputs().to(dtype)).double()


def _relative_error(out: torch.Tensor, ref: np.ndarray) -> float:
    ref_t = torch.from_numpy(ref)
    return float((out - ref_t).abs().max() / ref_t.abs().max())


def test_fixture_was_made_from_these_weights_and_inputs(reference, state):
    assert "04a433f154de30ff8604d78f73f2b6af5822f71c" in str(reference["provenance"])
    assert math.isclose(fingerprint(state.values()), float(reference["weights_fingerprint"]), rel_tol=1e-12), (
        "seeded_state_dict changed since the fixture was made: regenerate it (see the module docstring)"
    )
    assert math.isclose(fingerprint([seeded_inputs()]), float(reference["inputs_fingerprint"]), rel_tol=1e-12)


def test_iresnet50_matches_public_definition_in_float64(reference, state):
    assert _relative_error(_outputs(state, torch.float64), reference["eval_fp64"]) <= FP64_RTOL


@pytest.mark.slow
def test_iresnet50_matches_public_definition_in_train_mode(reference, state):
    """Batch statistics instead of running ones: the mode the paper fine-tunes every layer in."""
    assert _relative_error(_outputs(state, torch.float64, train=True), reference["train_fp64"]) <= FP64_RTOL


@pytest.mark.slow
def test_iresnet50_matches_public_definition_in_float32(reference, state):
    assert _relative_error(_outputs(state, torch.float32), reference["eval_fp64"]) <= FP32_RTOL


@pytest.mark.slow
def test_swapped_block_layers_fail_the_comparison(reference, state, monkeypatch):
    """The fixture can tell a wrong layer order: PReLU before BatchNorm moves the output >10%."""

    def swapped(block, x):
        out = block.bn3(block.conv2(block.bn2(block.prelu(block.conv1(block.bn1(x))))))
        return out + (x if block.downsample is None else block.downsample(x))

    monkeypatch.setattr(iresnet_module.IBasicBlock, "forward", swapped)
    assert _relative_error(_outputs(state, torch.float64), reference["eval_fp64"]) > 0.1


def test_iresnet50_names_shapes_dtypes_match_public_contract():
    ours = [
        [k, list(v.shape), str(v.dtype).replace("torch.", "")]
        for k, v in build_backbone("iresnet50").state_dict().items()
    ]
    theirs = CONTRACT["iresnet50"]
    missing = sorted({k for k, _, _ in theirs} - {k for k, _, _ in ours})
    unexpected = sorted({k for k, _, _ in ours} - {k for k, _, _ in theirs})
    assert not missing and not unexpected, f"missing {missing[:5]}, unexpected {unexpected[:5]}"
    assert ours == theirs


def test_iresnet50_loads_public_layout_strictly(state):
    net = build_backbone("iresnet50")
    net.load_state_dict(state, strict=True)
    assert torch.equal(net.fc.weight, state["fc.weight"].float())  # values really landed where named


@pytest.mark.parametrize("depth", [18, 34, 50, 100])
def test_iresnet_tensor_and_element_counts_per_depth(depth):
    sd = build_backbone(f"iresnet{depth}").state_dict()
    expected = CONTRACT["counts"][f"iresnet{depth}"]
    assert len(sd) == expected["tensors"]
    assert sum(v.numel() for v in sd.values()) == expected["numel"]


def test_contract_matches_size_of_registered_r50_checkpoint():
    """The pinned size of ms1mv3_arcface_r50_fp16.pth is fp32 storage of the contract (+ pickle overhead)."""
    from perface.registry import get_spec

    spec = get_spec("arcface-r50-ms1mv3")
    assert spec.weights is not None
    payload = 4 * sum(math.prod(shape) for _, shape, dtype in CONTRACT["iresnet50"] if dtype == "float32")
    assert payload <= spec.weights.size <= payload * 1.01
