"""Attribute-group classification: the math on embeddings alone, and the command on real photos."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from scipy import stats as sps

from perface.eval.groups import classify, group_distances, group_scores, roc_auc


def _naive_distance(emb: torch.Tensor, labels: torch.Tensor, i: int, g: int, level: float = 0.95) -> float:
    d = [1.0 - float(emb[i].double() @ emb[j].double()) for j in range(len(labels)) if j != i and labels[j] == g]
    if len(d) < 2:
        return math.inf
    mean = sum(d) / len(d)
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (len(d) - 1))
    return mean + sps.t.ppf((1 + level) / 2, len(d) - 1) * sd / math.sqrt(len(d))


def test_group_distance_is_the_ci_upper_bound_without_the_query():
    g = torch.Generator().manual_seed(0)
    emb = F.normalize(torch.randn(23, 16, generator=g), dim=1)
    labels = torch.tensor([0] * 8 + [1] * 9 + [2] * 2 + [-1] * 4)
    dist = group_distances(emb, labels, 3, chunk=5)  # several chunks
    for i in range(len(labels)):
        for grp in range(3):
            assert dist[i, grp].item() == pytest.approx(_naive_distance(emb, labels, i, grp), rel=1e-9, abs=1e-12)
    # group 2 has 2 members: its members have one left besides themselves, so no interval
    assert math.isinf(dist[17, 2]) and math.isinf(dist[18, 2]) and math.isfinite(dist[0, 2])


def test_clustered_groups_are_recovered():
    g = torch.Generator().manual_seed(1)
    centers = F.normalize(torch.randn(3, 32, generator=g), dim=1)
    labels = torch.arange(3).repeat_interleave(10)
    emb = F.normalize(centers[labels] + 0.05 * torch.randn(30, 32, generator=g), dim=1)
    res = group_scores(group_distances(emb, labels, 3), labels, ["a", "b", "c"])
    assert res["accuracy"] == 1.0 and res["n"] == 30
    for gs in res["groups"]:
        assert gs.precision == gs.recall == gs.accuracy == gs.auc == 1.0 and gs.support == 10


def test_shuffled_labels_score_near_chance():
    g = torch.Generator().manual_seed(2)
    emb = F.normalize(torch.randn(200, 32, generator=g), dim=1)
    labels = torch.randint(0, 2, (200,), generator=g)
    res = group_scores(group_distances(emb, labels, 2), labels, ["x", "y"])
    assert 0.3 < res["accuracy"] < 0.7
    assert all(0.3 < gs.auc < 0.7 for gs in res["groups"])


def test_roc_auc_matches_pairwise_counting_with_ties():
    g = torch.Generator().manual_seed(3)
    scores = torch.randint(0, 5, (40,), generator=g).double()  # many ties
    pos = torch.rand(40, generator=g) < 0.4
    p, n = scores[pos], scores[~pos]
    expected = float(((p[:, None] > n[None, :]).double() + 0.5 * (p[:, None] == n[None, :]).double()).mean())
    assert roc_auc(scores, pos) == pytest.approx(expected)
    assert math.isnan(roc_auc(scores, torch.zeros(40, dtype=torch.bool)))


def test_unlabelled_rows_are_ignored_and_classify_takes_the_nearest():
    dist = torch.tensor([[0.1, 0.5], [0.9, 0.2], [0.3, 0.4]], dtype=torch.float64)
    assert classify(dist).tolist() == [0, 1, 0]
    res = group_scores(dist, torch.tensor([0, -1, 1]), ["a", "b"])
    assert res["n"] == 2 and res["accuracy"] == 0.5
    a, b = res["groups"]
    assert (a.precision, a.recall, b.recall) == (0.5, 1.0, 0.0) and math.isnan(b.precision)


# --- the command on real photos -------------------------------------------------------------

PEOPLE = {
    "obama.jpg": ("male", "obama"),
    "obama2.jpg": ("male", "obama"),
    "obama3.jpg": ("male", "obama"),
    "biden.jpg": ("male", "biden"),
    "grace_hopper.jpg": ("female", "hopper"),
    "astronaut.png": ("female", "astronaut"),
}


@pytest.fixture(scope="module")
def labelled_set(tmp_path_factory, faces_dir):
    """Each photo plus two altered copies (mirrored; darker), labelled by gender and person."""
    from PIL import Image, ImageEnhance, ImageOps

    root = tmp_path_factory.mktemp("attributes")
    rows = []
    for name, (gender, person) in PEOPLE.items():
        with Image.open(faces_dir / name) as im:
            im = im.convert("RGB")
            im.thumbnail((320, 320))  # detection time
            stem = Path(name).stem
            for tag, img in (
                ("orig", im),
                ("flip", ImageOps.mirror(im)),
                ("dark", ImageEnhance.Brightness(im).enhance(0.7)),
            ):
                img.save(root / f"{stem}_{tag}.jpg", quality=92)
                rows.append({"file": f"{stem}_{tag}.jpg", "gender": gender, "person": person})
    (root / "broken.jpg").write_bytes(b"not a jpeg")
    rows.append({"file": "broken.jpg", "gender": "male", "person": ""})
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["file", "gender", "person"])
        w.writeheader()
        w.writerows(rows)
    return root


def test_attributes_command_on_real_photos(labelled_set, tmp_path):
    from perface.eval.__main__ import main

    out = tmp_path / "out"
    rc = main(
        [
            "attributes",
            "--images",
            str(labelled_set),
            "--labels",
            str(labelled_set / "labels.csv"),
            "--combine",
            "gender",
            "person",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 1  # broken.jpg failed: listed in the report, the rest evaluated
    summary = json.loads((out / "summary.json").read_text())
    (m,) = summary["models"]
    assert [f["file"].endswith("broken.jpg") for f in m["failures"]] == [True]  # listed, not dropped
    assert m["n_ok"] == 18
    assert set(m["tasks"]) == {"gender", "person", "gender&person"}
    person = m["tasks"]["person"]
    assert person["n"] == 18 and {g["group"] for g in person["groups"]} == {"obama", "biden", "hopper", "astronaut"}
    # altered copies of one photo are near-duplicates: the person task must be easy
    assert person["accuracy"]["mean"] >= 0.8
    with open(out / "groups.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 + 4 + 4
    assert all(0.0 <= float(r["auc"]) <= 1.0 for r in rows)
    with open(out / "predictions.csv") as f:
        assert len(list(csv.DictReader(f))) == 3 * 18
    assert "| person | obama |" in (out / "report.md").read_text()
