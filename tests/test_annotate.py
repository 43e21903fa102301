"""perface annotate without a server: making triplets, the study folder, the answers store,
the order questions are given in, agreement statistics and the export."""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from perface.annotate.agreement import krippendorff_alpha, majority_agreement, pairwise_agreement
from perface.annotate.assign import Assigner
from perface.annotate.export import export, write_report
from perface.annotate.make import make_study
from perface.annotate.store import AnswerConflict, AnswerStore
from perface.annotate.study import load_study, write_study
from perface.annotate.triplets import (
    catch_trials,
    collect_images,
    design_triplets,
    load_groups,
    n_possible,
    random_triplets,
)

REPO = Path(__file__).resolve().parents[1]


def _images(tmp_path: Path, n: int) -> list:
    """``n`` small distinct PNG files (the store and export tests need files, not faces)."""
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir(exist_ok=True)
    paths = []
    for k in range(n):
        path = folder / f"img{k:02d}.png"
        Image.new("RGB", (8, 8), (k * 20 % 256, 0, 0)).save(path)
        paths.append(path)
    return paths


def _study(tmp_path: Path, n_triplets: int = 6, n_catch: int = 2, seed: int = 0):
    images = _images(tmp_path, 6)
    items = random_triplets(images, n_triplets, seed)
    write_study(tmp_path / "study", items, catch_trials(images, n_catch, seed), [images[0].parent], "random", seed)
    return load_study(tmp_path / "study")


# -- making triplets -------------------------------------------------------------------------------


def test_collect_images_folders_files_and_lists(tmp_path, faces_dir):
    listing = tmp_path / "list.txt"
    listing.write_text(f"# two photos\n{faces_dir / 'obama.jpg'}\n{faces_dir / 'biden.jpg'}\n")
    images, roots = collect_images([faces_dir, listing])
    expected = sorted(p for p in faces_dir.iterdir() if p.suffix in (".jpg", ".png"))
    assert sorted(images) == expected  # the listed photos are already in the folder: no duplicates
    assert roots == [faces_dir]
    with pytest.raises(FileNotFoundError, match="no such file"):
        collect_images([tmp_path / "missing"])
    with pytest.raises(ValueError, match="not an image"):
        collect_images([faces_dir / "SHA256SUMS"])


def test_random_triplets_distinct_unrepeated_and_repeatable(tmp_path):
    images = _images(tmp_path, 5)
    assert n_possible(5) == 30  # 5 references x C(4, 2) candidate pairs
    items = random_triplets(images, 30, seed=3)
    keys = {(t.reference, frozenset((t.a, t.b))) for t in items}
    assert len(keys) == 30 and all(len({t.reference, t.a, t.b}) == 3 for t in items)
    assert items == random_triplets(images, 30, seed=3)
    assert [t.a for t in items] != [t.a for t in random_triplets(images, 30, seed=4)]
    sides = sum(t.a < t.b for t in items)
    assert 5 < sides < 25  # candidate order is shuffled, not sorted
    with pytest.raises(ValueError, match="only 30 distinct triplets"):
        random_triplets(images, 31)


def test_catch_trials_put_the_reference_among_the_candidates(tmp_path):
    images = _images(tmp_path, 4)
    trials = catch_trials(images, 10, seed=1)
    assert len(trials) == 10 and {t.expected for t in trials} == {"a", "b"}
    for t in trials:
        assert t.path(t.expected) == t.reference
        assert t.path("b" if t.expected == "a" else "a") != t.reference
    assert catch_trials(images, 0) == []


def test_design_triplets_follow_the_simceleba_design(tmp_path):
    groups = {
        "t1": [(Path(f"/x/t1_s{k}.jpg"), f"s{k}") for k in range(7)],
        "t2": [(Path(f"/x/t2_s{k}.jpg"), f"s{k % 2}") for k in range(6)],
    }  # t2: only two distinct sources
    items = design_triplets(groups, seed=0)
    assert [t.extra["group"] for t in items] == ["t1", "t1"]  # 7 swaps -> 2 disjoint triples; t2 has none
    used = [p for t in items for p in (t.reference, t.a, t.b)]
    assert len(used) == len(set(used)) == 6
    assert all(str(p).startswith("/x/t1_") for p in used)
    groups["t2"] = [(Path(f"/x/t2_s{k}.jpg"), f"s{k}") for k in range(3)]
    items = design_triplets(groups, n=3, seed=0)
    assert [t.extra["group"] for t in items] == ["t1", "t2", "t1"]  # round robin over targets
    with pytest.raises(ValueError, match="give 3 disjoint triplets"):
        design_triplets(groups, n=4)


def test_groups_from_folders_and_csv(tmp_path):
    images = _images(tmp_path, 6)
    for k, path in enumerate(images):
        (tmp_path / "g" / f"target{k % 2}").mkdir(parents=True, exist_ok=True)
        os.link(path, tmp_path / "g" / f"target{k % 2}" / path.name)
    groups, roots = load_groups(tmp_path / "g")
    assert sorted(groups) == ["target0", "target1"] and roots == [tmp_path / "g"]
    assert [len(m) for m in groups.values()] == [3, 3]
    table = tmp_path / "groups.csv"
    table.write_text("group,image,source\n" + "".join(f"t,imgs/{p.name},src{k}\n" for k, p in enumerate(images)))
    groups, roots = load_groups(table)
    assert groups["t"][2] == (images[2], "src2") and roots == [images[0].parent]
    table.write_text("group,picture\nt,imgs/img00.png\n")
    with pytest.raises(ValueError, match="'group' and 'image'"):
        load_groups(table)


@pytest.mark.slow
def test_uncertain_triplets_take_the_closest_similarities(tmp_path, faces_dir):
    """The first triplet is the one with the smallest similarity gap over *all* triplets (brute
    force over the embeddings of perface.embed_images), with its similarities recorded."""
    import perface
    from perface.annotate.triplets import uncertain_triplets

    images = sorted(collect_images([faces_dir])[0])[:6]
    items, signature, failures = uncertain_triplets(images, 4, model=perface.PerFace(), progress=False, device="cpu")
    assert not failures and signature.startswith("perface:") and "|det:" in signature
    emb = perface.embed_images([str(p) for p in images], progress=False).embeddings.double()
    sims = {(images[r], images[k]): (emb[r] @ emb[k]).item() for r in range(6) for k in range(6)}
    best = min(abs(sims[r, i] - sims[r, j]) for r, i, j in itertools.permutations(images, 3))
    first = items[0]
    assert abs(float(first.extra["sim_a"]) - float(first.extra["sim_b"])) == pytest.approx(best, abs=1e-5)
    for t in items:
        assert float(t.extra["sim_a"]) == pytest.approx(sims[t.reference, t.a], abs=1e-5)
        assert float(t.extra["sim_b"]) == pytest.approx(sims[t.reference, t.b], abs=1e-5)
        assert t.extra["signature"] == signature


# -- the study folder --------------------------------------------------------------------------------


def test_study_round_trip_and_the_csv_training_reads(tmp_path):
    from perface.train.data import load_triplet_csv

    study = _study(tmp_path)
    assert len(study.triplets) == 6 and len(study.catch) == 2 and study.display == "photos"
    assert study.roots == [(tmp_path / "imgs").resolve()]
    loaded = load_triplet_csv(study.root / "triplets.csv")  # the generic format, answers still empty
    assert [t.reference.resolve() for t in loaded.triplets] == [t.reference for t in study.triplets]
    assert all(t.answers == () for t in loaded.triplets)
    with pytest.raises(FileExistsError, match="already holds"):
        write_study(tmp_path / "study", study.triplets, study.catch, study.roots, "random", 0)


def test_edited_study_is_refused(tmp_path):
    study = _study(tmp_path)
    path = study.root / "triplets.csv"
    path.write_text(path.read_text().replace("q00001", "q00099"))
    with pytest.raises(ValueError, match="changed after the study was made"):
        load_study(study.root)


def test_make_study_with_face_crops(tmp_path, faces_dir):
    from PIL import Image

    study = make_study(tmp_path / "s", [faces_dir], mode="random", n=5, catch=0.5, progress=False)
    assert study.display == "crops" and len(study.catch) == 3  # ceil(0.5 * 5)
    shown = study.shown(study.triplets[0], "reference")
    assert shown.parent == study.root / "crops"
    with Image.open(shown) as im:
        assert im.size == (256, 256)
    assert study.triplets[0].reference.parent == faces_dir  # the CSV keeps the photos


# -- the answers store ---------------------------------------------------------------------------


def test_store_records_once_and_refuses_a_changed_answer(tmp_path):
    with AnswerStore(tmp_path / "answers.sqlite", "s1") as store:
        assert store.record("alice", "q1", "a", 900) is True
        assert store.record("alice", "q1", "a", 950) is False  # a retry: stored once
        with pytest.raises(AnswerConflict, match="already answered 'a'"):
            store.record("alice", "q1", "b")
        with pytest.raises(ValueError, match="not 'a' or 'b'"):
            store.record("alice", "q2", "c")
        with pytest.raises(ValueError, match="pseudonym"):
            store.record("alice@example.org", "q2", "a")
        store.record("bob", "q1", "b")
    with AnswerStore(tmp_path / "answers.sqlite", "s1") as store:  # reopened: all there, once
        assert [(a.annotator, a.item, a.answer, a.ms) for a in store.answers()] == [
            ("alice", "q1", "a", 900),
            ("bob", "q1", "b", None),
        ]
        assert store.counts() == {"q1": 2}
    with pytest.raises(ValueError, match="answers to other questions"):
        AnswerStore(tmp_path / "answers.sqlite", "s2")


def test_store_from_many_threads(tmp_path):
    store = AnswerStore(tmp_path / "answers.sqlite", "s")

    def work(who: str) -> None:
        for k in range(25):
            store.record(who, f"q{k}", "ab"[k % 2])
            store.record(who, f"q{k}", "ab"[k % 2])  # each answer sent twice

    threads = [threading.Thread(target=work, args=(f"r{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    answers = store.answers()
    store.close()
    assert len(answers) == 100 and len({(a.annotator, a.item) for a in answers}) == 100


_WRITER = """
import sys
from perface.annotate.store import AnswerStore
store = AnswerStore(sys.argv[1], "s")
for k in range(10000):
    store.record("w", f"q{k}", "a")
    print(k, flush=True)
"""


def test_answers_acknowledged_before_kill_9_survive(tmp_path):
    """A writer process is killed with SIGKILL mid-stream: every answer it reported stored is
    there after reopening, and the file is intact."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(tmp_path / "a.sqlite")], stdout=subprocess.PIPE, text=True, env=env
    )
    acknowledged = -1
    for line in proc.stdout:
        acknowledged = int(line)
        if acknowledged >= 30:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with AnswerStore(tmp_path / "a.sqlite", "s") as store:
        items = [a.item for a in store.answers()]
        assert store._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert len(items) == len(set(items)) >= acknowledged + 1
    assert items[: acknowledged + 1] == [f"q{k}" for k in range(acknowledged + 1)]


# -- which question comes next -------------------------------------------------------------------


def test_assigner_resumes_spreads_catch_trials_and_hides_ids(tmp_path):
    study = _study(tmp_path, n_triplets=8, n_catch=2)
    store = AnswerStore(study.root / "answers.sqlite", study.sha256)
    assigner = Assigner(study, store)
    seen = []
    while True:
        item, progress = assigner.next("alice")
        if item is None:
            break
        assert progress.done == len(seen) and progress.total == 10
        token = assigner.token(item.id)
        assert item.id not in token and assigner.item(token) is item
        seen.append(item)
        store.record("alice", item.id, "a")
        if len(seen) == 4:  # a restarted server resumes where alice left off
            assigner = Assigner(study, store)
    assert len({t.id for t in seen}) == 10
    # 2 catch trials among 8 triplets, evenly: after 8/3 and 16/3 triplets (rounded)
    assert [k for k, t in enumerate(seen) if t.is_catch] == [3, 6]
    bob_first, _ = assigner.next("bob")
    assert [assigner.next("bob")[0].id for _ in range(2)] == [bob_first.id] * 2  # stable until answered
    store.close()


def test_assigner_answers_per_triplet(tmp_path):
    study = _study(tmp_path, n_triplets=6, n_catch=1)
    store = AnswerStore(study.root / "answers.sqlite", study.sha256)
    assigner = Assigner(study, store, answers_per_triplet=1)
    got = {}
    for who in ("alice", "bob", "alice", "bob", "alice", "bob", "alice", "bob", "alice", "bob"):
        item, _ = assigner.next(who)
        if item is not None:
            store.record(who, item.id, "a")
            got.setdefault(who, []).append(item)
    real = [t.id for who in got for t in got[who] if not t.is_catch]
    assert sorted(real) == sorted(t.id for t in study.triplets)  # each triplet answered exactly once
    assert all(sum(t.is_catch for t in got[who]) == 1 for who in got)  # everyone gets every catch trial
    store.close()


# -- agreement -------------------------------------------------------------------------------------


def test_krippendorff_alpha_matches_the_published_example():
    """Krippendorff (2011), "Computing Krippendorff's alpha-reliability", section C: 4 observers,
    12 units, missing values; nominal alpha = 0.743."""
    table = {
        "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
        "C": [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
        "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
    }
    answers = {who: {f"u{k:02d}": v for k, v in enumerate(row) if v is not None} for who, row in table.items()}
    assert krippendorff_alpha(answers) == pytest.approx(0.743, abs=5e-4)


def test_agreement_on_a_small_hand_worked_case():
    answers = {"x": {"1": "a", "2": "a", "3": "b"}, "y": {"1": "a", "2": "b", "3": "b"}, "z": {"1": "a", "2": "b"}}
    # pairs: item 1: 3 agree of 3; item 2: (x,y) no, (x,z) no, (y,z) yes; item 3: (x,y) yes -> 5 of 7
    assert pairwise_agreement(answers) == pytest.approx(5 / 7)
    # x vs the others' majority: item 1 a=a yes, item 2 others say b: no, item 3 only y (b): yes -> 2 of 3
    assert majority_agreement(answers, "x") == {"agreement": pytest.approx(2 / 3), "n": 3}
    assert math.isnan(krippendorff_alpha({"x": {"1": "a"}, "y": {"1": "a"}}))  # one label only: undefined
    # alpha by hand (nominal; Krippendorff 2011): coincidences, each ordered pair of one item's values
    # weighted 1/(m-1): item 1 (a,a,a): o_aa = 3; item 2 (a,b,b): o_ab = o_ba = o_bb = 1; item 3 (b,b):
    # o_bb += 2. n = 8, n_a = n_b = 4; D_o = 2/8, D_e = 2*4*4/(8*7) -> alpha = 1 - (2/8)/(32/56) = 0.5625
    assert krippendorff_alpha(answers) == pytest.approx(0.5625)


# -- export ----------------------------------------------------------------------------------------


def _answered_study(tmp_path):
    """Three annotators on 6 triplets + 2 catch trials; 'careless' fails both catch trials."""
    study = _study(tmp_path)
    plan = {
        "alice": "aabbab",
        "bob": "aabbaa",
        "careless": "bbaab-",
    }
    with AnswerStore(study.root / "answers.sqlite", study.sha256) as store:
        for who, answers in plan.items():
            for t, ans in zip(study.triplets, answers):
                if ans != "-":
                    store.record(who, t.id, ans, 1000)
            for c in study.catch:
                right = c.expected
                store.record(who, c.id, right if who != "careless" else ("b" if right == "a" else "a"), 500)
    return study, plan


def test_export_quality_and_exclusion(tmp_path):
    from perface.train.data import load_triplet_csv

    study, _plan = _answered_study(tmp_path)
    out = tmp_path / "out" / "judgments.csv"
    report = export(study.root, out)
    by = {q.annotator: q for q in report.annotators}
    assert (by["alice"].catch_correct, by["alice"].catch_answered, by["careless"].catch_accuracy) == (2, 2, 0.0)
    # per triplet (alice, bob, careless): aab, aab, bba, bba, aab, ba- -> majorities a a b b a (tie)
    assert report.d1 == 5 and report.d2 == 0
    # leave-one-out: only items where the other two agree count; careless differs from both on 5
    assert (by["careless"].majority_agreement, by["careless"].majority_compared) == (0.0, 5)
    assert (by["alice"].majority_agreement, by["alice"].majority_compared) == (0.0, 1)  # only q6: bob alone says a
    rows = list(csv.DictReader(open(out)))
    assert [r["id"] for r in rows] == [t.id for t in study.triplets]
    assert [r["ans_alice"] + r["ans_bob"] + r["ans_careless"] for r in rows] == [
        "aab",
        "aab",
        "bba",
        "bba",
        "aab",
        "ba",
    ]
    loaded = load_triplet_csv(out)  # the CSV training reads, paths relative to its own folder
    assert loaded.triplets[0].reference.resolve() == study.triplets[0].reference
    assert [t.majority for t in loaded.triplets] == ["a", "a", "b", "b", "a", None]

    kept = export(study.root, tmp_path / "kept.csv", min_catch_accuracy=0.8)
    assert [q.annotator for q in kept.annotators if q.excluded] == ["careless"]
    header = next(csv.reader(open(tmp_path / "kept.csv")))
    assert header[:6] == ["id", "reference", "a", "b", "ans_alice", "ans_bob"] and "ans_careless" not in header
    assert kept.d2 == 5 and kept.d1 == 5  # alice and bob agree on all but the last triplet
    assert kept.answers == 12
    write_report(kept, [tmp_path / "r.json", tmp_path / "r.md"])
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["d2"] == 5 and data["annotators"][2]["excluded"] is True
    assert "| careless |" in (tmp_path / "r.md").read_text()


def test_export_slot_columns(tmp_path):
    from perface.train.data import load_triplet_csv

    study, _ = _answered_study(tmp_path)
    export(study.root, tmp_path / "slots.csv", columns="slot")
    header = next(csv.reader(open(tmp_path / "slots.csv")))
    assert header[4:7] == ["ans1", "ans2", "ans3"]
    loaded = load_triplet_csv(tmp_path / "slots.csv")
    assert next(t.answers for t in loaded.triplets) == ("a", "a", "b")  # in order of arrival
