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
    # same order as a dense stable sort of the scores it computed
    assert torch.equal(got.indices, dense_order(got.all_scores)[:100])
    assert torch.equal(got.indices, dense_order(ref)[:100])  # no near-ties at this size/seed


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
        self.key = {"model": name, "template": "arcface", "fingerprint": hashlib.sha256(name.encode()).hexdigest(),
                    "signature": f"perface:test|model:{name}@00000000|det:none|align:none|tpl:arcface|size:112|prec:fp32"}
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
    assert not torch.equal(updated.embeddings[updated.files.index("p03.jpg")],
                           pool.embeddings[pool.files.index("p03.jpg")])
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
