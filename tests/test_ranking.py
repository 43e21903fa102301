"""Search, selection, pool cache and sharding on synthetic embeddings (no photos, no model)."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from perface.ranking.pool import (
    EmbedBatch,
    cache_path,
    merge_shards,
    parse_shard,
    read_cache,
    scan_pool,
    shard_path,
    update_pool,
)
from perface.ranking.rank import group_mask
from perface.ranking.search import cosine_scores, search


def exact_pool(n: int, d: int = 64, seed: int = 0):
    """Embeddings whose dot products are exact in float32 whatever the summation order
    (multiples of 1/16, target entries +-1/2 with unit norm), with many ties."""
    g = torch.Generator().manual_seed(seed)
    emb = torch.randint(-8, 9, (n, d), generator=g).float() / 16
    target = torch.zeros(d)
    target[torch.randperm(d, generator=g)[:4]] = torch.tensor([0.5, -0.5, 0.5, 0.5])
    return emb, target


def dense_order(scores: torch.Tensor, largest: bool = True) -> torch.Tensor:
    return torch.sort(scores, descending=largest, stable=True).indices


@pytest.mark.parametrize("chunk", [1, 7, 100, 999, 5000, 100000])
def test_chunked_search_equals_dense_reference(chunk):
    emb, target = exact_pool(5000)
    ref = emb @ target
    assert ref.unique().numel() < 200  # plenty of ties: the tie-break is exercised
    assert torch.equal(cosine_scores(target, emb, chunk_size=chunk), ref)
    top = search(target, emb, top=50, chunk_size=chunk)
    assert torch.equal(top.indices, dense_order(ref)[:50])
    assert torch.equal(top.scores, ref[top.indices])
    assert torch.equal(top.all_scores, ref)
    bottom = search(target, emb, bottom=50, chunk_size=chunk)
    assert torch.equal(bottom.indices, dense_order(ref, largest=False)[:50])
    everything = search(target, emb, chunk_size=chunk)
    assert torch.equal(everything.indices, dense_order(ref))


@pytest.mark.parametrize("chunk", [13, 4096])
def test_chunked_search_on_random_unit_embeddings(chunk):
    g = torch.Generator().manual_seed(1)
    emb = F.normalize(torch.randn(3000, 128, generator=g), dim=1)
    target = torch.randn(128, generator=g)
    ref = emb @ F.normalize(target, dim=0)
    got = search(target, emb, top=100, chunk_size=chunk)
    assert torch.allclose(got.all_scores, ref, atol=1e-6)
    # The order is ref's when no two of its first 101 scores lie closer than the rounding of a
    # float32 dot product (checked here, so no CPU's summation order can swap two rows).
    assert (ref.sort(descending=True).values[:101].diff().abs() > 1e-5).all()
    assert torch.equal(got.indices, dense_order(ref)[:100])
    assert torch.equal(got.scores, got.all_scores[got.indices])


def test_band_top_bottom_exclude_and_mask():
    emb, target = exact_pool(2000, seed=3)
    s = emb @ target
    lo, hi = -0.25, 0.25
    band = search(target, emb, band=(lo, hi), chunk_size=300)
    inside = ((s >= lo) & (s <= hi)).nonzero().flatten()
    assert set(band.indices.tolist()) == set(inside.tolist())
    assert (band.scores[:-1] >= band.scores[1:]).all()  # most similar first
    band_top = search(target, emb, band=(lo, hi), top=10, chunk_size=300)
    assert torch.equal(band_top.indices, band.indices[:10])
    band_bottom = search(target, emb, band=(lo, hi), bottom=10, chunk_size=300)
    in_band = (s >= lo) & (s <= hi)
    assert torch.equal(band_bottom.indices, dense_order(torch.where(in_band, s, torch.tensor(9.0)), largest=False)[:10])
    assert band_bottom.scores[0] == s[inside].min()

    excluded = search(target, emb, top=20, exclude_above=0.5, chunk_size=300)
    assert (excluded.scores <= 0.5).all()
    allowed = s <= 0.5
    assert torch.equal(excluded.indices, dense_order(torch.where(allowed, s, torch.tensor(-9.0)))[:20])

    mask = torch.arange(2000) % 3 == 0
    masked = search(target, emb, top=15, mask=mask, chunk_size=128)
    assert (masked.indices % 3 == 0).all()
    assert torch.equal(masked.indices, dense_order(torch.where(mask, s, torch.tensor(-9.0)))[:15])


def test_nan_rows_never_chosen_and_float16_pool():
    emb, target = exact_pool(500, seed=4)
    emb[::7] = float("nan")
    for pool in (emb, emb.half()):
        got = search(target, pool, bottom=500, chunk_size=64)
        assert len(got) == 500 - len(range(0, 500, 7))
        assert not (got.indices % 7 == 0).any()
        assert torch.isnan(got.all_scores[::7]).all()
    ref = emb.half().float() @ target
    assert torch.equal(search(target, emb.half(), top=5).indices, dense_order(torch.nan_to_num(ref, nan=-9))[:5])


def test_bad_arguments_are_explained():
    emb, target = exact_pool(10)
    with pytest.raises(ValueError, match="at most one"):
        search(target, emb, top=1, bottom=1)
    with pytest.raises(ValueError, match="band"):
        search(target, emb, band=(0.5, 0.2))
    with pytest.raises(ValueError, match="shape"):
        search(target[:5], emb)
    with pytest.raises(ValueError, match="positive integer"):
        search(target, emb, top=0)


def test_group_mask_by_value_and_by_target(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("file,gender,age\na.jpg,f,young\nsub/b.jpg,m,old\nc.jpg,f,old\nt.jpg,m,young\n")
    files = ["a.jpg", "c.jpg", "d.jpg", "sub/b.jpg", "t.jpg"]
    mask, groups = group_mask(files, labels, ["gender=f"])
    assert mask.tolist() == [True, True, False, False, False] and groups == ["gender=f"]
    mask, groups = group_mask(files, labels, ["gender", "age"], target_name="t.jpg")
    assert mask.tolist() == [False, False, False, False, True] and groups == ["gender=m", "age=young"]
    with pytest.raises(ValueError, match="no column"):
        group_mask(files, labels, ["hair=red"])
    with pytest.raises(ValueError, match="no row"):
        group_mask(files, labels, ["gender"], target_name="unknown.jpg")


class FakeEmbedder:
    """Embeds a file as a unit vector seeded by its bytes; files whose bytes start with
    b"noface" fail. Records every call."""

    def __init__(self, name: str = "fake", dim: int = 16):
        self.key = {
            "model": name,
            "template": "arcface",
            "fingerprint": hashlib.sha256(name.encode()).hexdigest(),
            "signature": f"perface:test|model:{name}@00000000|det:none|align:none|tpl:arcface|size:112|prec:fp32",
        }
        self.dim = dim
        self.calls = []

    def __call__(self, paths):
        self.calls.append([Path(p).name for p in paths])
        emb = torch.full((len(paths), self.dim), float("nan"))
        boxes = torch.full((len(paths), 4), float("nan"))
        errors = {}
        for i, p in enumerate(paths):
            data = Path(p).read_bytes()
            if data.startswith(b"noface"):
                errors[i] = f"image {p!r}: no face found"
                continue
            g = torch.Generator().manual_seed(int(hashlib.sha256(data).hexdigest()[:8], 16))
            emb[i] = F.normalize(torch.randn(self.dim, generator=g), dim=0)
            boxes[i] = torch.tensor([1.0, 2.0, 30.0, 40.0]) + i
        return EmbedBatch(emb, boxes, errors)


def make_pool(root: Path, n: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"p{i:02d}.jpg").write_bytes(f"face {i}".encode())
    (root / "notes.txt").write_text("not an image")


def test_cache_reuse_invalidation_and_incremental_extension(tmp_path):
    root, cache = tmp_path / "pool", tmp_path / "cache"
    make_pool(root, 6)
    (root / "zz_blank.png").write_bytes(b"noface")
    emb = FakeEmbedder()
    pool = update_pool(root, emb, cache_dir=cache)
    assert pool.files == scan_pool(root)[0] and "notes.txt" not in pool.files
    assert emb.calls == [pool.files] and pool.embedded == 7
    assert pool.errors == {"zz_blank.png": f"image {str(root / 'zz_blank.png')!r}: no face found"}
    assert pool.ok.tolist() == [True] * 6 + [False]
    assert cache_path(cache, "fake").is_file()

    again = update_pool(root, emb, cache_dir=cache)  # nothing changed: no embedding at all
    assert len(emb.calls) == 1 and again.embedded == 0
    assert torch.equal(again.embeddings.nan_to_num(9), pool.embeddings.nan_to_num(9))
    assert torch.equal(again.boxes.nan_to_num(9), pool.boxes.nan_to_num(9))
    assert again.errors == pool.errors  # the failure is remembered, not retried

    (root / "p03.jpg").write_bytes(b"face 3, edited")  # modified content
    st = os.stat(root / "p01.jpg")
    os.utime(root / "p01.jpg", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched
    (root / "p10.jpg").write_bytes(b"face 10")  # added
    (root / "p05.jpg").unlink()  # removed
    updated = update_pool(root, emb, cache_dir=cache)
    assert emb.calls[-1] == ["p01.jpg", "p03.jpg", "p10.jpg"]
    assert "p05.jpg" not in updated.files and len(updated) == 7
    row = updated.files.index("p00.jpg")
    assert torch.equal(updated.embeddings[row], pool.embeddings[pool.files.index("p00.jpg")])
    assert not torch.equal(
        updated.embeddings[updated.files.index("p03.jpg")], pool.embeddings[pool.files.index("p03.jpg")]
    )
    stored = read_cache(cache_path(cache, "fake"), root)
    assert stored.files == updated.files and stored.errors == updated.errors

    with pytest.warns(UserWarning, match="another metric"):  # same cache file, another model
        other = FakeEmbedder()
        other.key = dict(other.key, fingerprint="0" * 64)
        update_pool(root, other, cache_dir=cache)
    assert other.calls == [updated.files]
    renamed = FakeEmbedder("other-model")  # another model name: its own cache file
    update_pool(root, renamed, cache_dir=cache)
    assert renamed.calls == [updated.files] and cache_path(cache, "other-model").is_file()


def test_corrupt_cache_is_rebuilt(tmp_path):
    root, cache = tmp_path / "pool", tmp_path / "cache"
    make_pool(root, 3)
    emb = FakeEmbedder()
    update_pool(root, emb, cache_dir=cache)
    path = cache_path(cache, "fake")
    path.write_bytes(path.read_bytes()[:-7])  # cut short, as by a crash of a writer without atomic writes
    with pytest.warns(UserWarning, match="unusable"):
        pool = update_pool(root, emb, cache_dir=cache)
    assert pool.embedded == 3 and len(emb.calls) == 2


def test_shards_split_and_merge_in_process(tmp_path):
    root, cache = tmp_path / "pool", tmp_path / "cache"
    make_pool(root, 9)
    (root / "bad.png").write_bytes(b"noface here")
    whole = update_pool(root, FakeEmbedder(), cache_dir=False)

    shard_embedders = [FakeEmbedder(), FakeEmbedder()]
    for i, emb in enumerate(shard_embedders):
        part = update_pool(root, emb, cache_dir=cache, shard=(i, 2))
        assert part.files == whole.files[i::2]
        assert shard_path(cache, "fake", (i, 2)).is_file()
    assert sorted(shard_embedders[0].calls[0] + shard_embedders[1].calls[0]) == sorted(whole.files)

    (root / "late.jpg").write_bytes(b"face late")  # added after the shards ran
    merger = FakeEmbedder()
    merged = merge_shards(root, merger, cache_dir=cache)
    assert merger.calls == [["late.jpg"]]  # only what no shard covered
    assert not list(cache.glob("*.shard-*"))
    rows = [merged.files.index(f) for f in whole.files]
    assert torch.equal(merged.embeddings[rows].nan_to_num(9), whole.embeddings.nan_to_num(9))
    assert merged.errors == whole.errors and "bad.png" in merged.errors
    again = FakeEmbedder()
    update_pool(root, again, cache_dir=cache)
    assert again.calls == []  # the merged cache is the main cache


def test_parse_shard(monkeypatch):
    assert parse_shard("1/4") == (1, 4)
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert parse_shard("auto") == (2, 3)
    for bad in ("4/4", "x", "1-2"):
        with pytest.raises(ValueError):
            parse_shard(bad)


def test_rank_on_synthetic_pool_excludes_target_file_and_writes_csv(tmp_path):
    import perface

    root = tmp_path / "pool"
    make_pool(root, 8)
    emb = FakeEmbedder()
    pool = update_pool(root, emb, cache_dir=False)
    target = pool.embeddings[2]
    result = perface.rank(target, pool, top=3, model="sface")
    ref = dense_order(pool.embeddings @ target)
    assert result.files == [pool.files[i] for i in ref[:3].tolist()]
    assert result.files[0] == "p02.jpg"  # an embedding target is not a pool file
    result = perface.rank(target, pool, top=3, exclude_identity=0.99, model="sface")
    assert "p02.jpg" not in result.files
    path = result.write_csv(tmp_path / "r.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == "rank,file,similarity,x1,y1,x2,y2,signature"
    assert [line.split(",")[1] for line in lines[1:]] == result.files
    assert {line.split(",")[-1] for line in lines[1:]} == {emb.key["signature"]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(perface.rank(target, pool, band=(-1.0, 1.0), model="sface")) == 8


# --------------------------------------------------------------------------- issue 11 faults


def rows_rounding_above_one():
    """A stored 16-d float32 embedding whose norm is 8 ulps above 1 (0.25 + 2**-22 in every
    entry) and itself as the target. Every product and partial sum below is exact in float32,
    so the score is 1 + 2**-20 on any IEEE-754 machine, whatever the summation order: the
    target normalizes to 0.25 everywhere and 16 * (0.25 + 2**-22) * 0.25 = 1 + 2**-20."""
    row = torch.full((16,), 0.25 + 2.0**-22, dtype=torch.float32)
    assert float(row @ F.normalize(row, dim=0)) == 1.0 + 2.0**-20
    others = F.normalize(torch.randn(5, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    return row, torch.cat([row[None], others])


def test_band_edges_hold_for_scores_that_round_above_one():
    target, pool = rows_rounding_above_one()
    everything = search(target, pool, band=(-1.0, 1.0))
    assert sorted(everything.indices.tolist()) == list(range(6))  # the self-match is not dropped
    assert everything.indices[0] == 0 and everything.scores[0] == 1.0  # clamped, never above 1
    assert float(cosine_scores(target, pool).max()) == 1.0
    assert search(target, pool, band=(0.999, 1.0)).indices.tolist() == [0]
    assert 0 in search(target, pool, exclude_above=1.0).indices.tolist()  # not "above 1"
    reversed_pool = -pool  # and the same at the lower edge
    assert search(target, reversed_pool, band=(-1.0, -0.999)).indices.tolist() == [0]


def test_rank_keeps_every_face_in_the_full_band(tmp_path):
    import perface

    target, rows = rows_rounding_above_one()
    root = tmp_path / "pool"
    make_pool(root, 6)
    emb = FakeEmbedder()
    pool = update_pool(root, emb, cache_dir=False)
    pool.embeddings = rows.clone()
    assert len(perface.rank(target, pool, band=(-1.0, 1.0))) == 6


def test_every_file_is_ranked_or_listed_with_a_reason(tmp_path, monkeypatch):
    import perface.ranking.scan as scan_module

    root = tmp_path / "pool"
    make_pool(root, 3)  # p00..p02.jpg and notes.txt
    (root / "sub").mkdir()
    (root / "sub" / "IMG_0001.HEIC").write_bytes(b"noface: stands in for an iPhone photo")
    (root / "sub" / "dangling.jpg").symlink_to(root / "missing.jpg")
    (root / ".DS_Store").write_bytes(b"hidden")
    monkeypatch.setattr(scan_module, "_heif_reader_installed", lambda: False, raising=False)
    pool = update_pool(root, FakeEmbedder(), cache_dir=False)
    assert pool.files == ["p00.jpg", "p01.jpg", "p02.jpg"]
    assert set(pool.failures) == {"notes.txt", "sub/IMG_0001.HEIC", "sub/dangling.jpg"}
    assert "pillow-heif" in pool.failures["sub/IMG_0001.HEIC"]
    assert "not an image file (.txt)" in pool.failures["notes.txt"]
    assert "broken symbolic link" in pool.failures["sub/dangling.jpg"]

    monkeypatch.setattr(scan_module, "_heif_reader_installed", lambda: True, raising=False)
    emb = FakeEmbedder()
    pool = update_pool(root, emb, cache_dir=False)  # with the reader the HEIC goes to the embedder
    assert "IMG_0001.HEIC" in emb.calls[0] and "no face found" in pool.failures["sub/IMG_0001.HEIC"]


def test_cache_root_is_one_folder_honouring_perface_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from perface.hub import perface_cache_dir
    from perface.ranking.pool import default_cache_dir

    monkeypatch.setenv("PERFACE_CACHE", str(tmp_path / "pc"))
    assert perface_cache_dir() == tmp_path / "pc"
    assert default_cache_dir(tmp_path / "photos").parent == tmp_path / "pc" / "pools"
    monkeypatch.delenv("PERFACE_CACHE")
    monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "hf"))
    assert perface_cache_dir() == tmp_path / "hf" / "perface"
    assert default_cache_dir(tmp_path / "photos").parent == tmp_path / "hf" / "perface" / "pools"


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o027])
def test_cache_files_follow_the_umask(tmp_path, umask):
    root, cache = tmp_path / "pool", tmp_path / "cache"
    make_pool(root, 3)
    old = os.umask(umask)
    try:
        update_pool(root, FakeEmbedder(), cache_dir=cache)
    finally:
        os.umask(old)
    assert cache_path(cache, "fake").stat().st_mode & 0o777 == 0o666 & ~umask


class Clock:
    """A fake monotonic clock; the embedder below spends one second per file on it."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class SlowEmbedder(FakeEmbedder):
    def __init__(self, clock, stop_after_calls=None):
        super().__init__()
        self.clock, self.stop_after_calls = clock, stop_after_calls

    def __call__(self, paths):
        if self.stop_after_calls is not None and len(self.calls) == self.stop_after_calls:
            raise KeyboardInterrupt  # Ctrl-C during the next chunk
        self.clock.now += len(paths)
        return super().__call__(paths)


def test_progress_is_saved_every_chunk_and_an_interrupted_run_resumes(tmp_path, monkeypatch):
    import perface.ranking.pool as pool_module

    root, cache = tmp_path / "pool", tmp_path / "cache"
    make_pool(root, 90)
    clock = Clock()
    monkeypatch.setattr(pool_module, "_clock", clock)
    first = SlowEmbedder(clock, stop_after_calls=3)
    with pytest.raises(KeyboardInterrupt):
        update_pool(root, first, cache_dir=cache, save_every=500, save_seconds=30)
    sizes = [len(c) for c in first.calls]
    assert sizes[0] <= 16 and all(s <= 30 for s in sizes)  # at most 30 s of work per chunk
    parts = sorted(cache.glob("fake.part-*.safetensors"))
    assert len(parts) == 3 and sum(len(read_cache(p)) for p in parts) == sum(sizes)

    again = SlowEmbedder(clock)
    pool = update_pool(root, again, cache_dir=cache, save_every=20)
    assert pool.embedded == 90 - sum(sizes) == sum(len(c) for c in again.calls)  # nothing embedded twice
    assert all(len(c) <= 20 for c in again.calls)
    assert not list(cache.glob("fake.part-*"))  # folded into the cache
    whole = update_pool(root, FakeEmbedder(), cache_dir=False)
    assert torch.equal(read_cache(cache_path(cache, "fake")).embeddings, whole.embeddings)


WRITER = r"""
import hashlib, sys, time
from pathlib import Path
import torch, torch.nn.functional as F
from perface.ranking.pool import EmbedBatch, update_pool

class Embedder:
    key = {"model": "fake", "template": "arcface", "fingerprint": "f" * 64, "signature": "sig"}
    def __call__(self, paths):
        emb = torch.stack([F.normalize(torch.randn(16, generator=torch.Generator().manual_seed(
            int(hashlib.sha256(Path(p).read_bytes()).hexdigest()[:8], 16))), dim=0) for p in paths])
        return EmbedBatch(emb, torch.zeros(len(paths), 4), {})

root, cache, prefix = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
mine = sorted(p.name for p in root.glob(prefix + "*.jpg"))
for round in range(8):
    for name in mine:  # touch: every round embeds and saves all of them again
        p = root / name
        p.write_bytes(p.read_bytes())
    update_pool(root, Embedder(), files=mine, cache_dir=cache)
"""


@pytest.mark.slow
def test_two_processes_writing_one_cache_keep_each_others_rows(tmp_path):
    import subprocess
    import sys

    root, cache = tmp_path / "pool", tmp_path / "cache"
    root.mkdir()
    for prefix in "ab":
        for i in range(12):
            (root / f"{prefix}{i:02d}.jpg").write_bytes(f"face {prefix}{i}".encode())
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root), str(cache), prefix],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for prefix in "ab"
    ]
    for proc in procs:
        _out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        assert "Error" not in err and "unusable" not in err
    stored = read_cache(cache_path(cache, "fake"), root)
    assert stored.files == sorted(p.name for p in root.glob("*.jpg"))  # both writers' rows
    assert not list(cache.glob("fake.part-*"))
    for i, name in enumerate(stored.files):
        g = torch.Generator().manual_seed(int(hashlib.sha256((root / name).read_bytes()).hexdigest()[:8], 16))
        assert torch.equal(stored.embeddings[i], F.normalize(torch.randn(16, generator=g), dim=0))


def test_shard_caches_rank_together_memory_mapped_without_merging(tmp_path):
    import perface
    from perface.ranking.pool import PoolSet, open_pool

    root, cache = tmp_path / "pool", tmp_path / "cache"
    make_pool(root, 20)
    (root / "zz.png").write_bytes(b"noface")
    whole = update_pool(root, FakeEmbedder(), cache_dir=False)
    for i in range(3):
        update_pool(root, FakeEmbedder(), cache_dir=cache, shard=(i, 3))
    shards = open_pool(root, "fake", cache)
    assert [len(p) for p in shards.parts] == [7, 7, 7]
    maps = Path("/proc/self/maps")
    if maps.exists():  # the shard files are mapped, not read into memory
        mapped = maps.read_text()
        assert all(str(shard_path(cache, "fake", (i, 3))) in mapped for i in range(3))
    target = whole.embeddings[4]
    ref = perface.rank(target, whole, top=10)
    got = perface.rank(target, shards, top=10)
    assert got.files == ref.files and torch.allclose(got.selection.scores, ref.selection.scores, atol=1e-6)
    band = perface.rank(target, shards, band=(-0.3, 0.3), model="fake")
    assert sorted(band.files) == sorted(perface.rank(target, whole, band=(-0.3, 0.3)).files)
    assert set(got.failures) == {"notes.txt", "zz.png"}  # as of the shards' scan (shard 0 lists notes.txt)

    shard_path(cache, "fake", (1, 3)).unlink()
    with pytest.raises(ValueError, match="incomplete"):
        open_pool(root, "fake", cache)
    other = update_pool(root, FakeEmbedder("other"), cache_dir=False)
    with pytest.raises(ValueError, match="different metrics"):
        PoolSet([whole, other])


def test_float16_cache_round_trip(tmp_path):
    root, cache = tmp_path / "pool", tmp_path / "cache"
    make_pool(root, 5)
    pool = update_pool(root, FakeEmbedder(), cache_dir=cache, dtype=torch.float16)
    stored = read_cache(cache_path(cache, "fake"), root)
    assert stored.embeddings.dtype == torch.float16 and torch.equal(stored.embeddings, pool.embeddings)
    again = update_pool(root, FakeEmbedder(), cache_dir=cache)  # the cache's dtype is kept
    assert again.embeddings.dtype == torch.float16 and again.embedded == 0


def test_saved_progress_of_another_metric_is_left_alone(tmp_path):
    root, cache = tmp_path / "pool", tmp_path / "cache"
    make_pool(root, 4)
    other = FakeEmbedder()
    other.key = dict(other.key, signature=other.key["signature"].replace("perface:test", "perface:other"))
    from perface.ranking.pool import _new_part_path, write_cache

    foreign = update_pool(root, other, cache_dir=False)
    part = write_cache(_new_part_path(cache_path(cache, "fake")), foreign)  # another version's progress
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # its rows are not ours: no warning, not used, not deleted
        pool = update_pool(root, FakeEmbedder(), cache_dir=cache)
    assert pool.embedded == 4 and part.is_file()
