"""``perface rank`` / ``perface matrix`` / ``perface.rank`` on the real photos of ../shared/data/faces."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import default_sigint, reference_similarity, sface_signature
from perface import cli

OBAMA = {"obama.jpg", "obama2.jpg", "obama3.jpg", "obama2_rgba.png", "obama_partial_face.jpg"}
LABELS = {
    "obama.jpg": "m",
    "obama2.jpg": "m",
    "obama3.jpg": "m",
    "obama2_rgba.png": "m",
    "obama_partial_face.jpg": "m",
    "biden.jpg": "m",
    "grace_hopper.jpg": "f",
    "astronaut.png": "f",
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small detector/backbone passes on one thread: on a shared 2-core machine, two OpenMP
    threads per pass were measured ~40x slower (3 s vs 0.07 s per detection) under load."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def pool(faces_dir, tmp_path_factory):
    """A copy of the test photos plus a photo without a face, a file that is no image, an
    unreadable HEIC, a text file, and a byte copy of and a link to the target obama.jpg."""
    root = tmp_path_factory.mktemp("pool")
    for name in LABELS:
        shutil.copy(faces_dir / name, root / name)
    ramp = np.linspace(0, 255, 256, dtype=np.uint8)
    Image.fromarray(np.stack([np.tile(ramp, (256, 1))] * 3, axis=2)).save(root / "blank_wall.png")
    (root / "broken.jpg").write_bytes(b"this is not a jpeg")
    (root / "IMG_0001.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic truncated iPhone photo")
    (root / "notes.txt").write_text("photographer: unknown")
    (root / "copies").mkdir()
    shutil.copy(faces_dir / "obama.jpg", root / "copies" / "obama_copy.jpg")
    (root / "copies" / "obama_link.jpg").symlink_to(root / "obama.jpg")
    return root


@pytest.fixture(scope="module")
def ranked(pool, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    cache = tmp_path_factory.mktemp("cache")
    status = cli.main(
        ["rank", str(pool / "obama.jpg"), str(pool), "--out", str(out), "--cache", str(cache), "--top", "20", "-q"]
    )
    assert status == 1  # the pool's four unusable files (failures.csv); the rest is ranked
    return out, cache


def test_same_person_ranks_first_and_csv_is_ordered(ranked):
    out, _ = ranked
    rows = read_csv(out / "ranking.csv")
    files = [r["file"] for r in rows]
    assert "obama.jpg" not in files  # the target's own file is never a candidate
    assert [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
    scores = [float(r["similarity"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    n_same = sum(f in OBAMA for f in files)
    assert {"obama2.jpg", "obama3.jpg", "obama2_rgba.png"} <= set(files[:n_same])
    assert set(files[:n_same]) <= OBAMA and not set(files[n_same:]) & OBAMA
    assert min(scores[:n_same]) > max(scores[n_same:]) + 0.3  # a wide gap between people
    for r in rows:  # every chosen face has its box inside a plausible photo frame
        x1, y1, x2, y2 = (float(r[k]) for k in ("x1", "y1", "x2", "y2"))
        assert x2 - x1 > 50 and y2 - y1 > 50


def test_failures_are_reported_not_dropped(ranked):
    out, _ = ranked
    failures = {r["file"]: r["reason"] for r in read_csv(out / "failures.csv")}
    assert set(failures) == {"blank_wall.png", "broken.jpg", "IMG_0001.HEIC", "notes.txt"}
    assert "IMG_0001.HEIC" in failures["IMG_0001.HEIC"] or "pillow-heif" in failures["IMG_0001.HEIC"]
    assert "not an image file" in failures["notes.txt"]
    assert "NoFaceError" in failures["blank_wall.png"] and "blank_wall.png" in failures["blank_wall.png"]
    assert "ImageReadError" in failures["broken.jpg"]
    assert not {"blank_wall.png", "broken.jpg"} & {r["file"] for r in read_csv(out / "ranking.csv")}


def test_pictures_open_with_sensible_sizes(ranked):
    out, _ = ranked
    with Image.open(out / "contact_sheet.png") as sheet:
        sheet.load()
        w, h = sheet.size
        assert w > 4 * 160 and 160 < h < w  # target + 7 candidates in a 6-wide grid: two rows
        assert len(set(np.asarray(sheet.convert("L")).ravel().tolist())) > 50  # photos, not a blank page
    with Image.open(out / "histogram.png") as hist:
        hist.load()
        assert hist.size[0] >= 400 and hist.size[1] >= 250


def test_band_and_identity_exclusion_use_the_cache(ranked, pool, tmp_path, capsys):
    _, cache = ranked
    status = cli.main(
        [
            "rank",
            str(pool / "obama.jpg"),
            str(pool),
            "--out",
            str(tmp_path),
            "--cache",
            str(cache),
            "--band",
            "-0.5",
            "0.5",
            "--exclude-identity",
            "0.6",
            "-q",
        ]
    )
    assert status == 1  # the four unusable pool files, as in `ranked`
    assert " 0 embedded now" in capsys.readouterr().out  # every pool photo came from the cache
    files = [r["file"] for r in read_csv(tmp_path / "ranking.csv")]
    assert sorted(files) == ["astronaut.png", "biden.jpg", "grace_hopper.jpg"]


def test_groups_from_labels(ranked, pool, tmp_path):
    _, cache = ranked
    labels = tmp_path / "labels.csv"
    labels.write_text("file,gender\n" + "".join(f"{k},{v}\n" for k, v in LABELS.items()))
    import perface

    same = perface.rank(
        pool / "obama.jpg", pool, labels=labels, group="gender", exclude_identity=0.6, cache=cache, progress=False
    )
    assert same.files == ["biden.jpg"]  # the only other man once Obama's photos are excluded
    women = perface.rank(
        pool / "obama.jpg", pool, labels=labels, group=["gender=f"], top=5, cache=cache, progress=False
    )
    assert sorted(women.files) == ["astronaut.png", "grace_hopper.jpg"] and women.pool.embedded == 0


def test_bad_target_is_an_error_message(pool, tmp_path, capsys):
    status = cli.main(["rank", str(pool / "blank_wall.png"), str(pool), "--out", str(tmp_path), "--no-cache", "-q"])
    assert status == 1
    assert "blank_wall.png" in capsys.readouterr().err


def test_matrix_heatmap(faces_dir, tmp_path):
    out, table = tmp_path / "m.png", tmp_path / "m.csv"
    names = ["obama.jpg", "obama2.jpg", "biden.jpg"]
    status = cli.main(["matrix", *(str(faces_dir / n) for n in names), "--out", str(out), "--csv", str(table)])
    assert status == 0
    with Image.open(out) as im:
        im.load()
        assert im.size[0] >= 300 and im.size[1] >= 300
    rows = read_csv(table)
    m = np.array([[float(r[str(faces_dir / n)]) for n in names] for r in rows])
    assert np.allclose(np.diag(m), 1.0, atol=1e-5) and np.allclose(m, m.T, atol=1e-6)
    assert m[0, 1] > m[0, 2] + 0.3 and m[0, 1] > m[1, 2] + 0.3


def test_embed_pool_by_shards_then_merge(faces_dir, tmp_path, capsys):
    pool, cache = tmp_path / "pool", tmp_path / "cache"
    pool.mkdir()
    for name in ("obama2.jpg", "biden.jpg", "grace_hopper.jpg"):
        shutil.copy(faces_dir / name, pool / name)
    for shard in ("0/2", "1/2"):  # what `torchrun ... perface embed-pool --shard auto` runs per rank
        assert cli.main(["embed-pool", str(pool), "--cache", str(cache), "--shard", shard, "-q"]) == 0
    assert len(list(cache.glob("*.shard-*.safetensors"))) == 2
    assert cli.main(["embed-pool", str(pool), "--cache", str(cache), "--merge"]) == 0
    out = capsys.readouterr().out
    assert "3 files, 3 faces, 0 without an embedding; 0 embedded now, 3 from the cache" in out  # nothing new
    assert not list(cache.glob("*.shard-*"))
    status = cli.main(
        [
            "rank",
            str(faces_dir / "obama.jpg"),
            str(pool),
            "--out",
            str(tmp_path / "out"),
            "--cache",
            str(cache),
            "--top",
            "1",
            "-q",
        ]
    )
    assert status == 0 and " 0 embedded now" in capsys.readouterr().out
    assert [r["file"] for r in read_csv(tmp_path / "out" / "ranking.csv")] == ["obama2.jpg"]


def test_dataloader_workers_give_the_cached_rows(ranked, pool):
    from perface.ranking.pool import PhotoEmbedder, cache_path, read_cache

    _, cache = ranked
    cached = read_cache(cache_path(cache, "sface"), pool)
    names = ["biden.jpg", "blank_wall.png", "obama3.jpg"]
    batch = PhotoEmbedder("sface", batch_size=1, num_workers=2, progress=False)([str(pool / n) for n in names])
    rows = [cached.files.index(n) for n in names]
    assert set(batch.errors) == {1} and "NoFaceError" in batch.errors[1]
    assert torch.allclose(batch.embeddings[[0, 2]], cached.embeddings[[rows[0], rows[2]]], atol=1e-5)
    assert torch.allclose(batch.boxes[[0, 2]], cached.boxes[[rows[0], rows[2]]], atol=1e-3)
    biden_obama3 = float(batch.embeddings[0] @ batch.embeddings[2])
    assert biden_obama3 == pytest.approx(reference_similarity("biden.jpg", "obama3.jpg"), abs=0.005)


def test_copies_and_links_of_the_target_are_left_out_unless_kept(ranked, pool, tmp_path, capsys):
    out, cache = ranked
    files = [r["file"] for r in read_csv(out / "ranking.csv")]
    assert not {"obama.jpg", "copies/obama_copy.jpg", "copies/obama_link.jpg"} & set(files)
    assert json.loads((out / "summary.json").read_text())["excluded_copies"] == [
        "copies/obama_copy.jpg",
        "copies/obama_link.jpg",
        "obama.jpg",
    ]
    status = cli.main(
        [
            "rank",
            str(pool / "obama.jpg"),
            str(pool),
            "--out",
            str(tmp_path),
            "--cache",
            str(cache),
            "--top",
            "2",
            "--keep-copies",
            "-q",
        ]
    )
    assert status == 1 and "left out 1 file(s) as the target or a copy of it: obama.jpg" in capsys.readouterr().out
    rows = read_csv(tmp_path / "ranking.csv")
    assert sorted(r["file"] for r in rows) == ["copies/obama_copy.jpg", "copies/obama_link.jpg"]
    assert all(float(r["similarity"]) > 0.9999 for r in rows)


def test_every_output_carries_the_metric_signature(ranked, pool, tmp_path, capsys):
    out, cache = ranked
    expected = sface_signature("detect")
    assert {r["signature"] for r in read_csv(out / "ranking.csv")} == {expected}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["signature"] == expected
    assert summary["files"] == 14 and summary["faces"] == 10 and summary["failed"] == 4
    status = cli.main(
        ["rank", str(pool / "biden.jpg"), str(pool), "--out", str(tmp_path), "--cache", str(cache), "--top", "3", "-q"]
    )
    printed = capsys.readouterr().out
    assert status == 1 and f"signature: {expected}" in printed.splitlines()
    assert (
        "pool " in printed
        and "14 files, 10 faces, 4 without an embedding; 0 embedded now, 13 from the cache" in printed
    )


def test_interrupted_output_leaves_the_out_folder_as_it_was(ranked, pool, tmp_path, monkeypatch, capsys):
    from perface.ranking.rank import RankResult

    _, cache = ranked
    out = tmp_path / "out"
    out.mkdir()
    (out / "ranking.csv").write_text("an earlier ranking\n")

    def interrupted(self, path):
        raise KeyboardInterrupt

    monkeypatch.setattr(RankResult, "histogram", interrupted)
    status = cli.main(["rank", str(pool / "obama.jpg"), str(pool), "--out", str(out), "--cache", str(cache), "-q"])
    assert status == 130
    assert capsys.readouterr().err.strip().splitlines() == ["perface rank: interrupted"]
    assert sorted(p.name for p in out.iterdir()) == ["ranking.csv"]
    assert (out / "ranking.csv").read_text() == "an earlier ranking\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left behind


def perface_cli(*args: str) -> list:
    return [sys.executable, "-m", "perface", *args]


@pytest.mark.slow  # two processes load the model
def test_ctrl_c_while_embedding_keeps_progress_and_exits_130(faces_dir, tmp_path):
    pool, cache = tmp_path / "pool", tmp_path / "cache"
    pool.mkdir()
    photos = sorted(p for p in faces_dir.iterdir() if p.suffix in (".jpg", ".png"))
    # 6 distinct versions of each photo (k px cut off the left edge), so the run outlasts the
    # moment this process notices the first saved chunk even when it is starved of CPU
    for p in photos:
        with Image.open(p) as im:
            for k in range(6):
                im.crop((k, 0, im.width, im.height)).save(pool / f"{p.stem}_{k}{p.suffix}")
    total = len(photos) * 6
    proc = subprocess.Popen(
        perface_cli("embed-pool", str(pool), "--cache", str(cache), "--save-every", "2", "-q"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        preexec_fn=default_sigint,
    )
    deadline = time.monotonic() + 300
    while not list(cache.glob("sface.part-*.safetensors")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)  # what Ctrl-C does
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["perface embed-pool: interrupted"]  # one line, no traceback
    from perface.ranking.pool import read_cache

    saved = sum(len(read_cache(p)) for p in cache.glob("sface.part-*.safetensors"))
    assert 2 <= saved < total  # stopped midway, with the finished chunks on disk

    again = subprocess.run(
        perface_cli("embed-pool", str(pool), "--cache", str(cache), "-q"),
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert again.returncode == 0, again.stderr
    assert f"{total - saved} embedded now, {saved} from the cache" in again.stdout  # nothing embedded twice


@pytest.mark.slow  # a process loads the model
def test_read_only_cache_warns_once_and_ranks_without_it(faces_dir, tmp_path):
    if os.geteuid() == 0:  # root ignores permission bits: run the command without that power
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv to drop CAP_DAC_OVERRIDE")
        prefix = [
            "setpriv",
            "--bounding-set",
            "-dac_override,-dac_read_search",
            "--inh-caps",
            "-dac_override,-dac_read_search",
            "--",
        ]
    else:
        prefix = []
    pool, cache, out = tmp_path / "pool", tmp_path / "cache", tmp_path / "out"
    pool.mkdir()
    for name in ("obama.jpg", "obama2.jpg", "biden.jpg"):
        shutil.copy(faces_dir / name, pool / name)
    cache.mkdir()
    cache.chmod(0o555)
    try:
        env = dict(os.environ, PERFACE_CACHE=str(cache), MPLCONFIGDIR=tempfile.mkdtemp(dir=tmp_path))
        proc = subprocess.run(
            prefix + perface_cli("rank", str(pool / "obama.jpg"), str(pool), "--out", str(out), "--top", "1", "-q"),
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )
    finally:
        cache.chmod(0o755)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("perface rank: warning: pool cache folder")
    assert all(word in lines[0] for word in ("--cache", "--no-cache", "PERFACE_CACHE"))
    assert [r["file"] for r in read_csv(out / "ranking.csv")] == ["obama2.jpg"]
    assert not list(cache.iterdir())


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda_names_the_fix(pool, tmp_path, capsys):
    """A device this machine lacks is a usage error (exit 2), found before any work."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(
            ["rank", str(pool / "obama.jpg"), str(pool), "--out", str(tmp_path), "--no-cache", "--device", "cuda", "-q"]
        )
    assert exit_info.value.code == 2 and "--device cpu" in capsys.readouterr().err
