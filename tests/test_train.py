"""Training: the loss, the synthetic generator, a short real training run, resume, the CLI."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from perface.train import triplet_margin_cosine_loss

REPO = Path(__file__).resolve().parents[1]


# -- loss ----------------------------------------------------------------------------------------


def test_loss_matches_formula_and_margin():
    ref = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), dim=1)
    pos = F.normalize(torch.tensor([[1.0, 1.0], [0.0, 1.0]]), dim=1)  # cos 0.707, 0
    neg = F.normalize(torch.tensor([[0.0, 1.0], [1.0, 1.0]]), dim=1)  # cos 0, 0.707
    loss = triplet_margin_cosine_loss(ref, pos, neg, margin=0.1)
    # first triplet satisfied beyond the margin (0 loss); second: 0.707 - 0 + 0.1
    assert loss.item() == pytest.approx((0.0 + 0.70711 + 0.1) / 2, abs=1e-4)
    assert triplet_margin_cosine_loss(ref, pos, neg, margin=0.0).item() == pytest.approx(0.70711 / 2, abs=1e-4)


def test_loss_gradient_pulls_positive_closer():
    g = torch.Generator().manual_seed(0)  # deterministic: some random draws never separate in 50 steps
    ref = F.normalize(torch.randn(4, 8, generator=g), dim=1)
    pos = torch.randn(4, 8, generator=g).requires_grad_(True)
    neg = F.normalize(torch.randn(4, 8, generator=g), dim=1)
    for _ in range(50):
        loss = triplet_margin_cosine_loss(ref, F.normalize(pos, dim=1), neg, margin=0.5)
        (grad,) = torch.autograd.grad(loss, pos)
        pos = (pos - 1.0 * grad).detach().requires_grad_(True)
    cos_pos = (ref * F.normalize(pos, dim=1)).sum(1)
    assert torch.all(cos_pos > (ref * neg).sum(1))


def test_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        triplet_margin_cosine_loss(torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(3, 4))


# -- synthetic generator + short training ---------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_set(tmp_path_factory, faces_dir):
    from perface.train.synthetic import generate

    out = tmp_path_factory.mktemp("synthetic")
    torch.set_num_threads(1)
    try:
        # conflict-heavy, so the identity baseline starts low and a rise is unmistakable
        generate(
            out, faces_dir, n_train=40, n_val=16, n_test=24, warps=2, conflict=0.6, agree=0.0, seed=0, progress=False
        )
    finally:
        torch.set_num_threads(os.cpu_count() or 1)
    return out


def test_synthetic_set_format_and_identity_split(synthetic_set):
    from PIL import Image

    from perface.train.data import load_simceleba

    raw = (synthetic_set / "triplet_answers.csv").read_bytes()
    assert raw.startswith(b"tripletId,ans1,ans2,ans3\r\n")
    data = load_simceleba(synthetic_set)
    assert len(data) == 80
    with Image.open(data.triplets[0].reference) as im:
        assert im.size == (224, 224)
    split = json.loads((synthetic_set / "split.json").read_text())
    meta = {r["tripletId"]: r for r in csv.DictReader(open(synthetic_set / "meta.csv"))}
    people = lambda ids: {
        p
        for i in ids
        for k in ("reference_identity", "positive_identity", "negative_identity")
        for p in meta[i][k].split("#")[0].split("@")[0].split("+")
    }
    assert not people(split["train"]) & people(split["test"])  # test identities come from held-out people
    assert set(split["test_people"]) == people(split["test"])
    assert {r["kind"] for r in meta.values()} == {"conflict", "neutral"}
    for r in meta.values():  # the construction the labels rely on
        if r["kind"] == "conflict":
            assert r["negative_identity"] == r["reference_identity"] != r["positive_identity"]
        else:
            assert len({r["reference_identity"], r["positive_identity"], r["negative_identity"]}) == 3
    assert 0 < len(data.unanimous_only()) < len(data)  # some triplets carry one dissenting answer


def _held_out_accuracy(model, root: Path, ids) -> float:
    """Triplet accuracy on the unanimous triplets ``ids`` of a SimCelebA-format folder, computed
    here from the files (PIL, float crops, PerFace.similarity), not by the training code."""
    import numpy as np
    from PIL import Image

    import perface

    rows = {
        r["tripletId"]: [r["ans1"], r["ans2"], r["ans3"]] for r in csv.DictReader(open(root / "triplet_answers.csv"))
    }
    metric = model if isinstance(model, perface.PerFace) else perface.PerFace(model, check_range=False)
    metric.eval()
    load = lambda tid, slot: (
        torch.from_numpy(np.array(Image.open(root / f"{tid}_{slot}.jpg").convert("RGB"))).permute(2, 0, 1).float() / 255
    )
    correct = []
    with torch.no_grad():
        for tid in ids:
            answers = rows[tid]
            if len(set(answers)) != 1:
                continue
            pos, neg = ("a", "b") if answers[0] == "a" else ("b", "a")
            ref = load(tid, "c")[None]
            correct.append(
                float(metric.similarity(ref, load(tid, pos)[None]) > metric.similarity(ref, load(tid, neg)[None]))
            )
    return sum(correct) / len(correct)


@pytest.mark.slow
def test_short_training_round_trips_with_an_honest_card(synthetic_set, tmp_path):
    """A few steps (lr 0.05 to learn within CI time): the written checkpoint loads back, its stored
    test accuracy is what the files give, and the card carries the signature of the written weights."""
    import hashlib

    import perface
    from perface.train.config import TrainConfig
    from perface.train.trainer import train

    out = tmp_path / "run"
    split = json.loads((synthetic_set / "split.json").read_text())
    cfg = TrainConfig(
        data=str(synthetic_set),
        out=str(out),
        split=str(synthetic_set / "split.json"),
        init="sface",
        epochs=3,
        batch_size=10,
        lr=0.05,
        progress=False,
        name="perface-test",
    )
    summary = train(cfg)
    metric = perface.PerFace.from_pretrained(out, check_range=False)
    assert metric.name == "perface-test" and metric.template == "simceleba"
    trained, initial = (
        _held_out_accuracy(metric, synthetic_set, split["test"]),
        _held_out_accuracy("sface", synthetic_set, split["test"]),
    )
    n = summary["scores"]["triplet_accuracy_test"]["n"]
    # the 8-bit crops training evaluates can flip a near-tie against these float crops: one triplet of slack
    assert abs(metric.spec.scores["triplet_accuracy_test"] - trained) <= 1 / n + 1e-9
    assert abs(summary["scores"]["triplet_accuracy_init_test"]["mean"] - initial) <= 1 / n + 1e-9
    assert trained >= initial + 0.3, (initial, trained)  # conflict-heavy set: the identity baseline is far below chance
    assert metric.spec.perceptual and summary["improved"]
    weights_hash = hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    card = (out / "README.md").read_text()
    assert f"model:perface-test@{weights_hash[:8]}|" in summary["signature"]
    assert summary["signature"] in card and "Outcome:** epoch" in card
    assert "95% CI" in card and "Initialization: `sface`" in card and "split by identity" in card
    assert f"Validation: {summary['counts']['val']} unanimous triplets" in card
    assert (out / "training_curve.png").stat().st_size > 1000
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]  # atomic writes leave no temporary files
    events = [json.loads(line)["event"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert events[:2] == ["start", "baseline"] and events.count("epoch") == 3 and events[-1] == "finish"


@pytest.mark.slow
def test_no_gain_keeps_the_initialization_and_says_so(synthetic_set, tmp_path):
    """lr 0 cannot beat the initialization: the card and the summary say so, and the checkpoint
    (the initialization's weights) is not labelled perceptual."""
    import perface
    from perface.train.config import TrainConfig
    from perface.train.trainer import train

    out = tmp_path / "run"
    summary = train(
        TrainConfig(
            data=str(synthetic_set),
            out=str(out),
            split=str(synthetic_set / "split.json"),
            init="sface",
            epochs=1,
            batch_size=10,
            lr=0.0,
            max_steps=2,
            progress=False,
        )
    )
    assert summary["improved"] is False and summary["best_epoch"] == 0
    assert "no epoch beat the initialization" in summary["outcome"]
    config = json.loads((out / "config.json").read_text())
    assert config["perceptual"] is False
    card = (out / "README.md").read_text()
    assert "Perceptual (fine-tuned on human similarity judgments): no" in card
    assert "no epoch beat the initialization" in card
    written, sface = perface.PerFace(out).net.state_dict(), perface.PerFace("sface").net.state_dict()
    assert all(torch.equal(written[k], sface[k]) for k in sface)


def test_a_second_run_into_the_same_folder_is_refused(synthetic_set, tmp_path):
    from filelock import FileLock

    from perface.train.config import TrainConfig
    from perface.train.trainer import train

    out = tmp_path / "run"
    out.mkdir()
    # another training run holds the folder
    with FileLock(str(out / ".train.lock")), pytest.raises(OSError, match="another training run"):
        train(TrainConfig(data=str(synthetic_set), out=str(out), init="sface", progress=False))
    assert not (out / "model.safetensors").exists()


def test_recipes():
    from perface.train.config import TrainConfig

    paper = TrainConfig(data="d", out="o", recipe="paper").resolved()
    assert (paper.bn, paper.epochs, paper.patience) == ("train", 30, 5)
    # the paper's stated hyper-parameters (Kumagai et al. 2025) are shared by both recipes
    for cfg in (paper, TrainConfig(data="d", out="o").resolved()):
        assert (cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch_size, cfg.margin) == (0.01, 0.9, 5e-4, 32, 0.1)
    default = TrainConfig(data="d", out="o").resolved()
    assert default.bn == "frozen"
    assert TrainConfig(data="d", out="o", recipe="paper", bn="frozen").resolved().bn == "frozen"  # a flag wins


@pytest.mark.slow
def test_micro_batches_give_the_full_batch_gradient():
    """With BatchNorm frozen, micro-batches accumulate the full batch's gradient (so CPU training may use them)."""
    import perface
    from perface.train.trainer import _Embedder, _freeze_bn, train_step

    x = torch.randint(0, 256, (6, 3, 3, 112, 112), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    grads = []
    for micro in (6, 2):
        metric = perface.PerFace("sface", trainable=True)
        metric.train()
        _freeze_bn(metric)
        opt = torch.optim.SGD(metric.parameters(), lr=0.0)
        loss = train_step(_Embedder(metric), x, opt, torch.amp.GradScaler("cuda", enabled=False), 0.5, micro, None)
        grads.append((loss, torch.cat([p.grad.flatten() for p in metric.parameters()])))
    (full_loss, full), (micro_loss, parts) = grads
    assert full.abs().sum() > 0
    assert micro_loss == pytest.approx(full_loss, rel=1e-5)
    assert torch.allclose(full, parts, rtol=1e-3, atol=1e-6)


def test_micro_batches_only_where_they_pay():
    """CPU + frozen BatchNorm + a backbone that asks for small CPU batches (SFace): micro-batches;
    BatchNorm in training mode, a GPU, or a backbone without ``cpu_chunk`` (iresnet50): whole batches."""
    from perface.registry import get_spec
    from perface.train.trainer import micro_batch_size

    sface, r50 = get_spec("sface"), get_spec("arcface-r50-ms1mv3")
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert micro_batch_size("frozen", cpu, 32, sface) < 32
    assert micro_batch_size("train", cpu, 32, sface) == 32
    assert micro_batch_size("frozen", gpu, 32, sface) == 32
    assert micro_batch_size("frozen", cpu, 32, r50) == 32


@pytest.mark.slow
def test_default_flags_learn_on_held_out_people(tmp_path, faces_dir):
    """The generated-set proof of docs/training.md, one seed: default flags gain >= 0.15 held-out
    triplet accuracy over the initialization (accuracies computed here from the files)."""
    from perface.train.__main__ import main
    from perface.train.synthetic import generate

    data = tmp_path / "set"
    torch.set_num_threads(1)
    try:
        generate(data, faces_dir, n_train=96, n_val=150, n_test=192, seed=0, progress=False)
    finally:
        torch.set_num_threads(os.cpu_count() or 1)
    out = tmp_path / "run"
    assert (
        main(["--data", str(data), "--split", str(data / "split.json"), "--init", "sface", "--out", str(out), "-q"])
        == 0
    )
    test_ids = json.loads((data / "split.json").read_text())["test"]
    before, after = _held_out_accuracy("sface", data, test_ids), _held_out_accuracy(str(out), data, test_ids)
    assert after >= before + 0.15, (before, after)


@pytest.mark.slow
def test_resume_continues_from_last_epoch(synthetic_set, tmp_path):
    from perface.train.config import TrainConfig
    from perface.train.trainer import train

    full = json.loads((synthetic_set / "split.json").read_text())
    small = {"train": full["train"][:20], "val": full["val"][:4], "test": full["test"][:4]}  # keep it quick
    (tmp_path / "small.json").write_text(json.dumps(small))
    common = dict(
        data=str(synthetic_set),
        out=str(tmp_path / "run"),
        split=str(tmp_path / "small.json"),
        init="sface",
        batch_size=6,
        progress=False,
        patience=0,
        min_val=0,
    )
    train(TrainConfig(epochs=1, **common))
    first = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert first["state"]["epoch"] == 1
    summary = train(TrainConfig(epochs=2, **common))
    assert first["state"]["step"] >= 1
    assert summary["epochs_run"] == 2 and summary["steps"] == 2 * first["state"]["step"]
    # the resumed run restored the optimizer: momentum buffers exist from the first epoch on
    assert first["optimizer"]["state"], "optimizer state was not saved"
    events = [json.loads(line)["event"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert "resume" in events and events.count("baseline") == 1


def _cli(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=env, cwd=cwd)


def test_cli_help_shows_each_option_once_without_markup():
    done = _cli("perface.train", "--help")
    assert done.returncode == 0
    text = done.stdout
    assert "``" not in text and ":func:" not in text
    # every knob of the paper's recipe is a flag, with the paper's value as its default
    for flag, default in (
        ("--lr", "0.01"),
        ("--momentum", "0.9"),
        ("--weight-decay", "0.0005"),
        ("--batch-size", "32"),
        ("--margin", "0.1"),
    ):
        block = text.split(f"  {flag} ", 1)[1].split("\n  --", 1)[0]
        assert f"(default: {default})" in " ".join(block.split()), (flag, block)
    for flag in (
        "--recipe",
        "--missing-list",
        "--min-val",
        "--split",
        "--train-set",
        "--hflip",
        "--patience",
        "--seed",
        "--workers",
        "--amp",
        "--compile",
        "--resume",
        "--quiet",
        "--json",
    ):
        assert flag in text
    options = [b for b in text.split("\n  -")[1:]]
    assert all(b.count("(default:") <= 1 for b in options)
    bn = " ".join(text.split("  --bn ", 1)[1].split("\n  --", 1)[0].split())
    assert "default recipe: frozen" in bn and "paper recipe: train" in bn


def test_cli_answers_without_images_one_line_exit_1(tmp_path):
    """issue 12: the answers file without its images printed ~700 KB; now one line with the fix."""
    root = tmp_path / "s"
    root.mkdir()
    lines = ["tripletId,ans1,ans2,ans3"] + [f"t{i:04d},a,a,b" for i in range(400)]
    (root / "triplet_answers.csv").write_text("\r\n".join(lines) + "\r\n")
    done = _cli(
        "perface.train",
        "--data",
        str(root),
        "--out",
        str(tmp_path / "o"),
        "--init",
        "sface",
        "-q",
        "--missing-list",
        str(tmp_path / "missing.csv"),
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and len(done.stderr) < 800, done.stderr
    assert done.stderr.startswith("python -m perface.train: error:") and "docs/reproducing.md" in done.stderr
    assert len((tmp_path / "missing.csv").read_text().splitlines()) == 1 + 1200


def test_cli_bad_option_exits_2():
    done = _cli("perface.train", "--data", "x", "--out", "y", "--bn", "sometimes")
    assert done.returncode == 2 and "invalid choice" in done.stderr and "Traceback" not in done.stderr


def test_synthetic_cli_help_and_errors(tmp_path):
    done = _cli("perface.train.synthetic", "--help")
    seed = " ".join(done.stdout.split("  --seed ", 1)[1].split("\n  -", 1)[0].split())
    assert done.returncode == 0 and "--quiet" in done.stdout and "(default: 0)" in seed
    (tmp_path / "faces").mkdir()
    done = _cli("perface.train.synthetic", "--faces", str(tmp_path / "faces"), "--out", str(tmp_path / "o"), "-q")
    assert done.returncode == 1 and "at least 4 people" in done.stderr and "Traceback" not in done.stderr
