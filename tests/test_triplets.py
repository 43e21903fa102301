"""Triplet sets, splits, confidence intervals and the ``perface.eval triplets`` table."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from perface.stats import bootstrap_ci, mean_ci
from perface.train.data import load_simceleba, load_triplet_csv, load_triplets
from perface.train.splits import load_split_file, make_split, protocol_split, random_split

SIMCELEBA_ANSWERS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "simceleba" / "triplet_answers.csv"

GRID_IDS = [f"t{i:04d}" for i in range(6400)]


def _write_simceleba(root: Path, answers, crlf: bool = True, images: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    end = "\r\n" if crlf else "\n"
    lines = ["tripletId,ans1,ans2,ans3"] + [f"t{i:04d}," + ",".join(a) for i, a in enumerate(answers)]
    (root / "triplet_answers.csv").write_bytes((end.join(lines) + end).encode())
    if images:
        rng = np.random.default_rng(0)
        for i in range(len(answers)):
            for slot in "abc":
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / f"t{i:04d}_{slot}.jpg")
    return root


# -- loading -------------------------------------------------------------------------------------


def test_crlf_majority_and_unanimous(tmp_path):
    root = _write_simceleba(tmp_path / "s", ["aab", "bbb", "aaa", "abb"])
    data = load_simceleba(root)
    assert data.ids == ["t0000", "t0001", "t0002", "t0003"]
    assert [t.majority for t in data.triplets] == ["a", "b", "a", "b"]
    assert next(t.answers for t in data.triplets) == ("a", "a", "b")  # no stray '\r' from CRLF
    assert data.unanimous_only().ids == ["t0001", "t0002"]
    t0 = data.triplets[0]
    assert (
        t0.reference.name == "t0000_c.jpg" and t0.positive.name == "t0000_a.jpg" and t0.negative.name == "t0000_b.jpg"
    )
    assert len(data.sha256) == 64


def test_lf_file_reads_the_same(tmp_path):
    a = load_simceleba(_write_simceleba(tmp_path / "crlf", ["aab", "bbb"], crlf=True))
    b = load_simceleba(_write_simceleba(tmp_path / "lf", ["aab", "bbb"], crlf=False))
    assert [t.answers for t in a.triplets] == [t.answers for t in b.triplets]


def test_empty_image_skipped_with_one_summary_warning(tmp_path):
    root = _write_simceleba(tmp_path / "s", ["aab", "bbb", "aaa"])
    (root / "t0001_c.jpg").write_bytes(b"")  # like t4963_c.jpg in the public archive
    (root / "t0002_a.jpg").write_bytes(b"not a jpeg")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_simceleba(root, missing_list=tmp_path / "bad.csv")
    assert data.ids == ["t0000"]
    assert data.skipped == ("t0001", "t0002")
    assert sorted((p.name, why) for p, why in data.unreadable) == [
        ("t0001_c.jpg", "empty"),
        ("t0002_a.jpg", "not an image"),
    ]
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "2 of 9 images" in message and "2 of 3 triplets" in message
    assert "t0001_c.jpg (empty)" in message and "t0002_a.jpg (not an image)" in message
    rows = list(csv.DictReader(open(tmp_path / "bad.csv")))
    assert [(Path(r["path"]).name, r["problem"], r["triplets"]) for r in rows] == [
        ("t0001_c.jpg", "empty", "t0001"),
        ("t0002_a.jpg", "not an image", "t0002"),
    ]


def test_answers_without_images_is_one_short_error_with_the_fix(tmp_path):
    """SimCelebA's answers file without its images (distributed separately): a short summary, not every path."""
    from perface.errors import ImageReadError

    root = _write_simceleba(tmp_path / "s", ["aab", "bbb", "aaa"] * 200, images=False)  # 600 triplets
    with pytest.raises(ImageReadError) as info:
        load_simceleba(root, missing_list=tmp_path / "missing.csv")
    message = str(info.value)
    assert len(message) < 600, message
    assert "1,800 of 1,800 images unusable (1,800 missing)" in message and "600 of 600 triplets" in message
    assert "t0000_a.jpg (missing)" in message and "and 1,797 more" in message
    assert "distributed separately" in message and "docs/reproducing.md" in message
    assert str(tmp_path / "missing.csv") in message
    assert len((tmp_path / "missing.csv").read_text().splitlines()) == 1 + 1800


def test_generic_csv_missing_images_name_the_csv_folder(tmp_path):
    Image.new("RGB", (20, 20), "gray").save(tmp_path / "r.png")
    (tmp_path / "j.csv").write_text("reference,a,b,answer\nr.png,x.png,r.png,a\nr.png,r.png,r.png,b\n")
    with pytest.warns(
        UserWarning, match=r"1 of 2 images unusable \(1 missing\): x.png \(missing\).*relative to its folder"
    ):
        data = load_triplet_csv(tmp_path / "j.csv", images="crops", template="arcface")
    assert data.ids == ["row3"]


def test_bad_answer_names_the_line(tmp_path):
    root = _write_simceleba(tmp_path / "s", ["aab", "abx"], images=False)
    with pytest.raises(ValueError, match=r"line 3.*'x'"):
        load_simceleba(root, check_images=False)


@pytest.mark.skipif(not SIMCELEBA_ANSWERS.is_file(), reason="real SimCelebA answers not available")
def test_real_answers_d1_d2_counts():
    data = load_simceleba(SIMCELEBA_ANSWERS.parent, check_images=False)
    assert len(data) == 6400
    assert len(data.majority_only()) == 6400
    assert len(data.unanimous_only()) == 2128  # D2 in the paper


def test_generic_csv(tmp_path):
    for name in ("r.png", "x.png", "y.png"):
        Image.new("RGB", (20, 20), "gray").save(tmp_path / name)
    (tmp_path / "j.csv").write_text(
        "id,reference,a,b,answer,answer2\nq1,r.png,x.png,y.png,b,B\nq2,r.png,x.png,y.png,a,\n"
    )
    data = load_triplet_csv(tmp_path / "j.csv", images="crops", template="arcface")
    assert data.ids == ["q1", "q2"] and data.template == "arcface" and data.images == "crops"
    assert data.triplets[0].answers == ("b", "b") and data.triplets[1].answers == ("a",)
    assert data.triplets[0].positive == tmp_path / "y.png"
    assert load_triplets(tmp_path / "j.csv").images == "photos"
    with pytest.raises(ValueError, match="template"):
        load_triplet_csv(tmp_path / "j.csv", images="crops")


def test_generic_csv_missing_columns(tmp_path):
    (tmp_path / "j.csv").write_text("reference,a,answer\nr.png,x.png,a\n")
    with pytest.raises(ValueError, match="missing"):
        load_triplet_csv(tmp_path / "j.csv", check_images=False)


# -- splits --------------------------------------------------------------------------------------


def test_random_split_partitions_and_is_seeded():
    s = random_split(GRID_IDS, val=0.1, test=0.1, seed=3)
    assert len(s.train) == 5120 and len(s.val) == 640 and len(s.test) == 640
    assert set(s.train) | set(s.val) | set(s.test) == set(GRID_IDS)
    assert not (set(s.train) & set(s.test)) and not (set(s.val) & set(s.test))
    assert s == random_split(GRID_IDS, val=0.1, test=0.1, seed=3)
    assert s.test != random_split(GRID_IDS, val=0.1, test=0.1, seed=4).test


def _cells(ids, layout="target-major"):
    n = np.array([int(i[1:]) for i in ids])
    return (set(n // 80), set(n % 80)) if layout == "target-major" else (set(n % 80), set(n // 80))


@pytest.mark.parametrize("layout", ["target-major", "source-major"])
def test_protocol_unseen_target_and_source(layout):
    s = protocol_split(GRID_IDS, "unseen", holdout=0.2, val_holdout=0.1, seed=0, layout=layout)
    (tr_t, tr_s), (te_t, te_s), (va_t, va_s) = _cells(s.train, layout), _cells(s.test, layout), _cells(s.val, layout)
    assert not (tr_t & te_t) and not (tr_s & te_s)  # neither targets nor source groups seen
    assert not (tr_t & va_t) and not (tr_s & va_s) and not (va_t & te_t)
    assert len(te_t) == len(te_s) == 16 and len(s.test) == 256
    assert len(s.train) == 56 * 56


def test_protocol_seen_source_and_seen_target():
    ii = protocol_split(GRID_IDS, "seen-source", holdout=0.2, seed=0)
    (tr_t, tr_s), (te_t, te_s) = _cells(ii.train), _cells(ii.test)
    assert not (tr_t & te_t) and te_s <= tr_s and len(ii.test) == 16 * 80
    iii = protocol_split(GRID_IDS, "seen-target", holdout=0.2, seed=0)
    (tr_t, tr_s), (te_t, te_s) = _cells(iii.train), _cells(iii.test)
    assert not (tr_s & te_s) and te_t <= tr_t and len(iii.test) == 16 * 80
    for s in (ii, iii):
        assert not (set(s.train) & set(s.test)) and not (set(s.val) & set(s.test))


def test_protocol_layouts_differ_and_seed_is_deterministic():
    a = protocol_split(GRID_IDS, "seen-source", seed=1, layout="target-major")
    b = protocol_split(GRID_IDS, "seen-source", seed=1, layout="source-major")
    assert a.test != b.test
    assert a == protocol_split(GRID_IDS, "seen-source", seed=1, layout="target-major")


def test_split_file(tmp_path):
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"train": ["t0000", "t0001"], "val": ["t0002"], "test": ["t0003", "t9999"]}))
    s = make_split(GRID_IDS[:4], str(path))
    assert s.train == ("t0000", "t0001") and s.test == ("t0003",)
    path.write_text(json.dumps({"train": ["t0000"], "val": [], "test": ["t0000"]}))
    with pytest.raises(ValueError, match="more than one part"):
        load_split_file(path, GRID_IDS[:4])


# -- statistics ----------------------------------------------------------------------------------


def test_bootstrap_ci_covers_mean_and_is_seeded():
    values = np.r_[np.ones(70), np.zeros(30)]
    est = bootstrap_ci(values, n=2000, seed=1)
    assert est.mean == pytest.approx(0.7) and est.low < 0.7 < est.high
    assert 0.08 < est.high - est.low < 0.25  # about 2 * 1.96 * sqrt(0.21 / 100) = 0.18
    assert est == bootstrap_ci(values, n=2000, seed=1)
    normal = mean_ci(values)
    assert normal.low == pytest.approx(est.low, abs=0.03) and normal.high == pytest.approx(est.high, abs=0.03)
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci([1.0, float("nan")])


# -- perface.eval triplets -------------------------------------------------------------------------


@pytest.mark.slow
def test_eval_triplets_table(tmp_path, faces_dir, capsys):
    """Two models on real aligned crops; one row per model in markdown, CSV and JSON."""
    from perface import PerFace
    from perface.alignment import align_faces
    from perface.eval.__main__ import main
    from perface.pretrained import save_pretrained

    crops = {
        n: align_faces(faces_dir / n, template="arcface", size=112)[0]
        for n in ("obama.jpg", "obama2.jpg", "biden.jpg", "grace_hopper.jpg")
    }
    save = lambda x, p: Image.fromarray((x.permute(1, 2, 0) * 255).round().byte().numpy()).save(p)
    for name, x in crops.items():
        save(x, tmp_path / name.replace(".jpg", ".png"))
    rows = [
        "id,reference,a,b,ans1,ans2,ans3",
        "same,obama.png,obama2.png,biden.png,a,a,a",  # the same person looks more alike
        "same2,obama.png,grace_hopper.png,obama2.png,b,b,b",
        "split,biden.png,obama.png,grace_hopper.png,a,a,b",
    ]  # not unanimous: not scored
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    save_pretrained(PerFace("sface"), tmp_path / "copy", name="sface-copy")  # a local checkpoint as second model
    args = [
        "triplets",
        "--data",
        str(tmp_path / "t.csv"),
        "--images",
        "crops",
        "--crop-template",
        "arcface",
        "--model",
        "sface",
        "--model",
        str(tmp_path / "copy"),
        "--quiet",
        "--bootstrap",
        "200",
        "--output",
        str(tmp_path / "t.json"),
        "--output",
        str(tmp_path / "t.csv.out.csv"),
    ]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "| sface |" in table and f"| {tmp_path / 'copy'} |" in table and "triplet accuracy [95% CI]" in table
    result = json.loads((tmp_path / "t.json").read_text())
    assert [r["n"] for r in result] == [2, 2] and result[1]["checkpoint"] == "sface-copy"
    assert all(r["accuracy"] == 1.0 for r in result)  # identity model: same person wins these two
    assert (tmp_path / "t.csv.out.csv").read_text().startswith("model,checkpoint,template")


def test_eval_unknown_subcommand():
    from perface.eval.__main__ import main

    with pytest.raises(SystemExit):
        main(["nope"])


@pytest.mark.skipif(not SIMCELEBA_ANSWERS.is_file(), reason="real SimCelebA answers not available")
def test_real_answers_support_source_group_is_id_mod_80():
    """docs/reproducing.md: answers at ids n and n + 80 agree far more than at n and n + 1."""
    data = load_simceleba(SIMCELEBA_ANSWERS.parent, check_images=False)
    votes = np.array([t.votes_a for t in data.triplets], dtype=float)
    corr = lambda lag: np.corrcoef(votes[:-lag], votes[lag:])[0, 1]
    assert corr(80) > 0.4 and abs(corr(1)) < 0.1


def test_photo_triplets_are_aligned_once_and_faceless_ones_skipped(tmp_path, faces_dir):
    import torch

    from perface.train.dataset import TripletImages, align_photos

    Image.new("RGB", (200, 200), "white").save(tmp_path / "blank.png")
    rows = [
        "id,reference,a,b,answer",
        f"ok,{faces_dir / 'obama.jpg'},{faces_dir / 'obama2.jpg'},{faces_dir / 'biden.jpg'},a",
        f"noface,{faces_dir / 'obama.jpg'},{tmp_path / 'blank.png'},{faces_dir / 'biden.jpg'},b",
    ]
    (tmp_path / "p.csv").write_text("\n".join(rows) + "\n")
    data = load_triplet_csv(tmp_path / "p.csv")
    with pytest.warns(UserWarning, match=r"1 of 4 images unusable \(1 no face\).*blank.png"):
        kept, faces = align_photos(data, template="arcface", size=112, progress=False)
    assert kept.ids == ["ok"] and kept.skipped == ("noface",)
    assert faces[faces_dir / "obama.jpg"].dtype == torch.uint8 and faces[faces_dir / "obama.jpg"].shape == (3, 112, 112)
    ref, pos, _neg = TripletImages.from_set(kept, 112, faces)[0]
    assert ref.shape == (3, 112, 112) and float(ref.min()) >= 0.0 and float(ref.max()) <= 1.0
    assert torch.equal(pos, faces[faces_dir / "obama2.jpg"].float() / 255)


def test_random_split_is_stable_when_a_triplet_is_dropped():
    full = random_split(GRID_IDS, seed=0)
    fewer = random_split([i for i in GRID_IDS if i != "t4963"], seed=0)
    assert len(set(full.test) ^ set(fewer.test)) <= 2  # at most the dropped id and one at the boundary


def test_eval_triplets_without_images_exits_1_with_one_line(tmp_path, capsys):
    """``python -m perface.eval triplets`` on an answers file without its images: exit 1, a short
    message with the fix, no traceback, the full list only in the file asked for."""
    from perface.eval.__main__ import main

    root = _write_simceleba(tmp_path / "s", ["aab", "bbb", "aaa"] * 100, images=False)
    code = main(["triplets", "--data", str(root), "--quiet", "--missing-list", str(tmp_path / "m.csv")])
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback" not in err and len(err) < 800, err
    assert "distributed separately" in err and "docs/reproducing.md" in err and "900 of 900 images" in err
    assert len((tmp_path / "m.csv").read_text().splitlines()) == 1 + 900


def test_crop_bank_matches_reading_each_file(tmp_path):
    """The decoded bank (threads or worker processes) holds what PIL reads from each file, rounded to 8 bits."""
    import torch

    from perface.train.dataset import ImageBank

    root = _write_simceleba(tmp_path / "s", ["aab", "bbb"])
    paths = sorted(root.glob("*.jpg"))
    threads, procs = ImageBank.decode(paths, 32), ImageBank.decode(paths, 32, workers=1)
    for path in paths:
        expected = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)  # 32 px: no resize
        assert torch.equal(threads.images[threads.row[path]], expected)
        assert torch.equal(procs.images[procs.row[path]], expected)


def test_top_up_validation_draws_from_training_only_when_needed():
    from perface.train.splits import Split, top_up_validation

    ids = [f"t{i:04d}" for i in range(200)]
    split = Split(tuple(ids[:180]), tuple(ids[180:190]), tuple(ids[190:]), "test split")
    scored = ids[::2]  # every other triplet is unanimous
    grown = top_up_validation(split, scored, min_val=20, seed=0)
    moved = set(grown.val) - set(split.val)
    assert len(moved) == 20 - 5 and moved <= set(scored) and moved <= set(split.train)
    assert not set(grown.train) & set(grown.val) and grown.test == split.test
    assert set(grown.train) | set(grown.val) == set(split.train) | set(split.val)
    assert "15 drawn from its training part" in grown.description
    capped = top_up_validation(split, scored, min_val=1000, seed=0)
    assert len(set(capped.val) - set(split.val)) == int(0.2 * 90)  # at most 20% of the scored training triplets
    assert top_up_validation(split, scored, min_val=5, seed=0) is split
