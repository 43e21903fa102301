"""``python -m perface.eval anonymization`` on the real photos and on generated "anonymized" sets."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys

import pytest
import torch
from PIL import Image, ImageFilter, ImageOps

from conftest import sface_signature
from perface.eval.anonymization import images_by_stem, match_pairs, reid_ranks

MAX_SIDE = 320
PHOTOS = ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg", "grace_hopper.jpg", "astronaut.png"]


def _main(argv):
    from perface.eval.__main__ import main

    return main(argv)


@pytest.fixture(scope="module")
def sets(tmp_path_factory, faces_dir):
    """originals: six real photos; copies: the same files; anonymized: blurred/recoloured PNGs with
    one original missing, one stray file and one image without a face."""
    root = tmp_path_factory.mktemp("anon")
    orig, copy, anon = root / "original", root / "copy", root / "anonymized"
    for d in (orig, copy, anon):
        d.mkdir()
    for name in PHOTOS:  # downscaled (detection time), same names and formats
        with Image.open(faces_dir / name) as im:
            im = im.convert("RGB")
            im.thumbnail((MAX_SIDE, MAX_SIDE))
            im.save(orig / name)
        shutil.copy(orig / name, copy / name)
    for i, name in enumerate(PHOTOS[:4]):  # astronaut.png stays without a counterpart
        with Image.open(orig / name) as im:
            im = im.convert("RGB")
            altered = (
                im.filter(ImageFilter.GaussianBlur(radius=max(im.size) / 60))
                if i % 2 == 0
                else ImageOps.posterize(ImageOps.colorize(ImageOps.grayscale(im), "#301000", "#ffe0a0"), 3)
            )
            altered.save(anon / (name.rsplit(".", 1)[0] + ".png"))  # extension differs on purpose
    Image.new("RGB", (300, 300), (128, 128, 128)).save(anon / "grace_hopper.png")  # no face
    Image.new("RGB", (64, 64), (0, 0, 0)).save(anon / "stranger.png")  # no original
    ids = root / "identities.csv"
    ids.write_text(
        "file,identity\n"
        + "".join(
            f"{n},obama\n"
            for n in ("obama.jpg", "obama2.jpg", "obama3.jpg", "obama2_rgba.png", "obama_partial_face.jpg")
        )
    )
    return {"orig": orig, "copy": copy, "anon": anon, "ids": ids}


def test_matching_by_name_reports_both_sides(sets):
    o, _ = images_by_stem(sets["orig"])
    a, _ = images_by_stem(sets["anon"])
    keys, only_o, only_a = match_pairs(o, a)
    assert keys == sorted(["obama", "obama2", "obama3", "biden", "grace_hopper"])
    assert only_o == ["astronaut"] and only_a == ["stranger"]


def test_same_name_with_two_extensions_is_reported(tmp_path):
    for name in ("a.jpg", "a.png", "b.jpg"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    files, skipped = images_by_stem(tmp_path)
    assert sorted(files) == ["a", "b"] and len(skipped) == 1 and "a.png" in skipped[0][0]


def test_reid_ranks_count_better_impostors():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    gal = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1], [0.9, 0.5], [0.0, 1.0]]), dim=1)
    # query 0 is "x" (gallery 0, best match) ; query 1 is "x" too but gallery 2 ("z") is closer
    assert reid_ranks(q, ["x", "x"], gal, ["x", "y", "z"]) == [0, 2]
    assert reid_ranks(q, ["w", "y"], gal, ["x", "y", "z"])[0] is None


@pytest.fixture(scope="module")
def anon_out(sets, tmp_path_factory):
    out = tmp_path_factory.mktemp("anon_report")
    rc = _main(
        [
            "anonymization",
            "--original",
            str(sets["orig"]),
            "--anonymized",
            str(sets["anon"]),
            "--identities",
            str(sets["ids"]),
            "--thresholds",
            "0.3",
            "0.5",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 1  # reported, not fatal: an original without counterpart, a stray file, a faceless image
    return out


def test_anonymization_command_on_real_photos(anon_out):
    out = anon_out
    s = json.loads((out / "summary.json").read_text())
    assert s["matched_pairs"] == 5
    assert s["unmatched"]["original_only"][0].endswith("astronaut.png")
    assert s["unmatched"]["anonymized_only"][0].endswith("stranger.png")
    (m,) = s["models"]
    assert m["model"] == "sface" and m["kind"] == "identity baseline"
    failed = {f["file"].rsplit("/", 1)[-1]: f for f in m["failures"]}
    assert failed["grace_hopper.png"]["role"] == "anonymized" and "NoFace" in failed["grace_hopper.png"]["reason"]
    assert m["failed_pairs"] == 5 - m["n_pairs"] >= 1  # counted, not dropped
    assert set(m["verification"]) == {"0.3", "0.5"}
    assert m["reid_gallery_identities"] >= 3  # obama x3 count as one identity
    with open(out / "pairs.csv") as f:
        rows = {r["name"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"obama", "obama2", "obama3", "biden", "grace_hopper"}
    assert rows["grace_hopper"]["similarity_sface"] == ""
    assert -1 <= float(rows["obama"]["similarity_sface"]) <= 1
    report = (out / "report.md").read_text()
    assert "stranger.png" in report and "grace_hopper.png" in report
    with Image.open(out / "similarity_hist.png") as im:
        assert im.size[0] > 100


def test_unaltered_copies_are_fully_identifiable_and_score_above_anonymized(sets, anon_out):
    from perface.eval.anonymization import evaluate

    same = evaluate(sets["orig"], sets["copy"], identities=sets["ids"], progress=False, thresholds=[0.5])
    (ms,) = same["models"]
    (ma,) = json.loads((anon_out / "summary.json").read_text())["models"]
    assert ms["similarity"]["mean"] > 0.99 and ms["verification"]["0.5"]["mean"] == 1.0
    assert ms["reid"]["top1"]["mean"] == 1.0
    common = set(ms["similarities"]) & set(ma["similarities"])
    assert common and all(ma["similarities"][k] < ms["similarities"][k] for k in common)


def test_real_photo_folder_as_gallery(sets, faces_dir, tmp_path):
    out = tmp_path / "g"
    assert (
        _main(
            [
                "anonymization",
                "--original",
                str(sets["orig"]),
                "--anonymized",
                str(sets["copy"]),
                "--gallery",
                str(faces_dir),
                "--identities",
                str(sets["ids"]),
                "--out",
                str(out),
                "--quiet",
                "--no-plot",
            ]
        )
        == 0
    )
    (m,) = json.loads((out / "summary.json").read_text())["models"]
    # gallery: every photo of ../shared/data/faces; identities obama (5 files), biden, grace_hopper, astronaut
    assert m["reid_gallery_identities"] == 4 and m["reid_queries"] == 6 and m["reid_no_true_match"] == 0
    assert m["reid_chance"]["top1"] == pytest.approx(1 / 4)
    assert m["reid"]["top1"]["mean"] == 1.0  # unaltered copies are found
    assert all(f["role"] == "gallery" for f in m["failures"])
    assert not (out / "similarity_hist.png").exists()
    assert not math.isnan(m["similarity"]["mean"])


def test_module_entry_point_lists_the_subcommands():
    proc = subprocess.run([sys.executable, "-m", "perface.eval", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "anonymization" in proc.stdout and "attributes" in proc.stdout


def test_every_output_carries_the_metric_signature_and_the_small_set_warning(anon_out):
    sig = sface_signature("detect")
    s = json.loads((anon_out / "summary.json").read_text())
    assert s["models"][0]["signature"] == sig
    with open(anon_out / "pairs.csv") as f:
        assert {r["signature_sface"] for r in csv.DictReader(f)} == {sig}
    report = (anon_out / "report.md").read_text()
    assert sig in report
    # 5 matched pairs, at most 4 scored: far too few for a bootstrap CI, and said so in the report
    assert any(w.startswith("only ") and "pairs scored by sface" in w for w in s["warnings"])
    assert "## Warnings" in report and "pairs scored by sface" in report
    # the mean similarity is read against the shipped reference set
    assert s["models"][0]["reference_reading"]["reference"] == "shared-faces-v1"
    assert "Reference set 'shared-faces-v1'" in report


def test_no_partial_report_folder_when_writing_fails(anon_out, tmp_path, monkeypatch):
    from perface.eval import anonymization

    report = json.loads((anon_out / "summary.json").read_text())

    def broken(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(anonymization, "_histogram", broken)
    with pytest.raises(KeyboardInterrupt):
        anonymization.write_report(report, tmp_path / "out")
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []
