"""The iresnet name/shape contract with insightface's public ``arcface_torch`` checkpoints.

``data/iresnet50_state_dict_keys.json`` was derived outside perface: the public definition
(deepinsight/insightface, ``recognition/arcface_torch/backbones/iresnet.py`` at commit
04a433f154de30ff8604d78f73f2b6af5822f71c) was instantiated with its defaults
(``num_features=512``) and ``model.state_dict()`` listed as (name, shape, dtype), in order, for
iresnet50 (the architecture of ``ms1mv3_arcface_r50_fp16.pth``), plus the tensor and element
counts of iresnet18/34/50/100. Checkpoints saved by arcface_torch are exactly such state dicts
(fp32; "fp16" names the training precision), so matching it means they load with ``strict=True``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from perface.archs import build_backbone

CONTRACT = json.loads((Path(__file__).parent / "data" / "iresnet50_state_dict_keys.json").read_text())


def _fixture_state_dict() -> dict:
    """A state dict with the public r50 names, shapes and dtypes, filled with seeded values."""
    gen = torch.Generator().manual_seed(0)
    sd = {}
    for name, shape, dtype in CONTRACT["iresnet50"]:
        if dtype == "int64":
            sd[name] = torch.zeros(shape, dtype=torch.int64)
        elif name.endswith("running_var"):
            sd[name] = torch.rand(shape, generator=gen) + 0.5
        else:
            sd[name] = torch.randn(shape, generator=gen) * 0.05
    return sd


def test_iresnet50_names_shapes_dtypes_match_public_contract():
    ours = [[k, list(v.shape), str(v.dtype).replace("torch.", "")]
            for k, v in build_backbone("iresnet50").state_dict().items()]
    theirs = CONTRACT["iresnet50"]
    missing = sorted({k for k, _, _ in theirs} - {k for k, _, _ in ours})
    unexpected = sorted({k for k, _, _ in ours} - {k for k, _, _ in theirs})
    assert not missing and not unexpected, f"missing {missing[:5]}, unexpected {unexpected[:5]}"
    assert ours == theirs


def test_iresnet50_loads_public_layout_strictly_and_gives_512d():
    sd = _fixture_state_dict()
    net = build_backbone("iresnet50")
    net.load_state_dict(sd, strict=True)
    assert torch.equal(net.fc.weight, sd["fc.weight"])  # values really landed where named
    net.eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, 112, 112) * 2 - 1)
    assert out.shape == (2, 512)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("depth", [18, 34, 50, 100])
def test_iresnet_tensor_and_element_counts_per_depth(depth):
    sd = build_backbone(f"iresnet{depth}").state_dict()
    expected = CONTRACT["counts"][f"iresnet{depth}"]
    assert len(sd) == expected["tensors"]
    assert sum(v.numel() for v in sd.values()) == expected["numel"]


def test_contract_matches_size_of_registered_r50_checkpoint():
    """The pinned size of ms1mv3_arcface_r50_fp16.pth is fp32 storage of the contract (+ pickle overhead)."""
    from perface.registry import get_spec

    size = get_spec("arcface-r50-ms1mv3").weights.size
    payload = 4 * sum(math.prod(shape) for _, shape, dtype in CONTRACT["iresnet50"] if dtype == "float32")
    assert payload <= size <= payload * 1.01
