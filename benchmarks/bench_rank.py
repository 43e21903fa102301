"""Ranking at scale: exact search in memory, ranking a memory-mapped pool cache (one file or shards),
cache I/O, photo throughput.

    python benchmarks/bench_rank.py                    # 1M x 512 search, 10M x 128 float16 cache, photos
    python benchmarks/bench_rank.py --quick --json bench-results/rank.json

Search: a target against N synthetic L2-normalized 512-d float32 embeddings held in memory (goal
for N = 1e6: about 0.1 s, memory beyond the matrix under 10% of it).

Cache: ``perface.rank(target_embedding, read_cache(file), top=100)`` and the names of the 100
chosen files, timed from opening the cache, for a 10,000,000 x 128 float16 pool (2.4 GiB of
embeddings; goal: under 3 s, peak anonymous memory under 10% of the matrix), as one cache file
and as 4 shard caches ranked together (``open_pool``), warm (file in the page cache) and cold
(its pages dropped first with ``posix_fadvise(DONTNEED)``, so they come from the disk).

Memory: each measurement runs in a fresh Python process that samples ``RssAnon`` (anonymous
memory: heap, torch tensors; not the file-backed pages of a memory map, which the kernel can drop
and re-read) from /proc/self/status every millisecond in a thread; ``anon_over_matrix`` = (peak
RssAnon - RssAnon before the matrix was built or mapped) / matrix bytes. For the in-memory
search the matrix itself is anonymous, so 1.00 means nothing beyond the matrix.

Photos: faces/s embedding the photos of ../shared/data/faces (decode + detect + align + backbone)
through the pool embedder.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT.parent / "shared" / "data" / "faces"
CACHE_ROWS, CACHE_DIM, CACHE_SHARDS = 10_000_000, 128, 4


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class PeakAnon:
    """Samples this process's RssAnon (KiB) every ``interval`` seconds in a thread; ``peak`` is
    the largest value seen (torch releases the GIL in its kernels, so sampling goes on during
    them)."""

    def __init__(self, interval: float = 0.001) -> None:
        self.interval, self.peak = interval, _status_kb("RssAnon")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _status_kb("RssAnon"))
            time.sleep(self.interval)

    def __enter__(self) -> PeakAnon:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _status_kb("RssAnon"))


def child_search(n: int, dim: int, mode: str, repeats: int, dtype: str) -> dict:
    """One in-memory search measurement in this (fresh) process; see the module docstring."""
    import torch

    from perface.ranking.search import DEFAULT_CHUNK_ROWS, search

    torch.manual_seed(0)
    store = getattr(torch, dtype)
    anon0 = _status_kb("RssAnon")
    emb = torch.empty(n, dim, dtype=store)
    block = torch.empty(min(n, 65536), dim)
    for start in range(0, n, block.shape[0]):  # bounded temporaries while building
        b = block[: min(block.shape[0], n - start)]
        b.normal_()
        b.div_(b.norm(dim=1, keepdim=True))
        emb[start : start + b.shape[0]] = b
    del block, b
    target = torch.randn(dim)
    matrix_bytes = emb.numel() * emb.element_size()
    kwargs = {
        "top": dict(top=100),
        "band": dict(band=(0.05, 0.15)),
        "bottom": dict(bottom=100),
        "band_top": dict(band=(0.05, 0.15), top=100),
    }[mode]
    anon_matrix = _status_kb("RssAnon")
    times, chosen = [], 0
    with PeakAnon() as peak:
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            sel = search(target, emb, **kwargs)
            if i:
                times.append(time.perf_counter() - t0)
            chosen = len(sel)
            del sel
    return {
        "what": "search in memory",
        "n": n,
        "dim": dim,
        "dtype": dtype,
        "mode": mode,
        "chosen": chosen,
        "seconds_median": statistics.median(times),
        "seconds_min": min(times),
        "matrix_mib": matrix_bytes / 2**20,
        "search_overhead_mib": (peak.peak - anon_matrix) / 1024,
        "anon_over_matrix": (peak.peak - anon0) * 1024 / matrix_bytes,
        "chunk_rows": DEFAULT_CHUNK_ROWS,
        "torch_threads": torch.get_num_threads(),
    }


def child_make_cache(folder: Path, n: int, dim: int, shards: int) -> dict:
    """Write a synthetic float16 pool of ``n`` rows as one cache file and as ``shards`` shard
    files into ``folder`` (names ``p00000000.jpg`` ...; every row a face)."""
    import numpy as np
    import torch

    from perface.ranking.cache import Pool, Strings, write_cache
    from perface.ranking.pool import cache_path, shard_path

    model = {
        "model": "bench",
        "template": "arcface",
        "fingerprint": "0" * 64,
        "signature": "perface:bench|model:bench@00000000|det:none|align:none|tpl:arcface|size:112|prec:fp16",
    }
    gen = torch.Generator().manual_seed(0)

    def pool(first: int, count: int) -> Pool:
        idx = np.arange(first, first + count, dtype=np.int64)
        digits = (idx[:, None] // 10 ** np.arange(7, -1, -1)) % 10 + ord("0")
        chars = np.concatenate(
            [np.full((count, 1), ord("p")), digits, np.tile(np.frombuffer(b".jpg", dtype=np.uint8), (count, 1))], axis=1
        )
        names = Strings(
            torch.from_numpy(chars.astype(np.uint8).ravel().copy()),
            torch.arange(count + 1, dtype=torch.int64) * chars.shape[1],
        )
        emb = torch.empty(count, dim, dtype=torch.float16)
        for s in range(0, count, 1 << 18):
            b = torch.randn(min(1 << 18, count - s), dim, generator=gen)
            emb[s : s + b.shape[0]] = torch.nn.functional.normalize(b, dim=1)
        zeros = torch.zeros(count, dtype=torch.int64)
        return Pool(
            root=Path("/pool"),
            files=names,
            embeddings=emb,
            boxes=torch.zeros(count, 4),
            sizes=zeros,
            mtimes_ns=zeros,
            digests=zeros,
            errors={},
            model=model,
        )

    t0 = time.perf_counter()
    write_cache(cache_path(folder, "bench"), pool(0, n))
    t_one = time.perf_counter() - t0
    step = -(-n // shards)
    for i in range(shards):
        write_cache(shard_path(folder / "shards", "bench", (i, shards)), pool(i * step, min(step, n - i * step)))
    return {"write_one_file_s": t_one, "file_gib": cache_path(folder, "bench").stat().st_size / 2**30}


def _drop_from_page_cache(paths) -> None:
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def child_cache_rank(folder: Path, sharded: bool, cold: bool) -> dict:
    """Open the cache (one file, or the shard set), rank a target, read the 100 chosen names."""
    import torch

    import perface
    from perface.ranking.pool import cache_path, open_pool, read_cache

    files = sorted((folder / "shards").glob("*.safetensors")) if sharded else [cache_path(folder, "bench")]
    if cold:
        _drop_from_page_cache(files)
    torch.manual_seed(1)
    target = torch.randn(CACHE_DIM)
    anon0 = _status_kb("RssAnon")
    with PeakAnon() as peak:
        t0 = time.perf_counter()
        pool = open_pool("/pool", "bench", folder / "shards") if sharded else read_cache(files[0], "/pool")
        result = perface.rank(target, pool, top=100)
        names = result.files
        seconds = time.perf_counter() - t0
    parts = pool.parts if sharded else [pool]
    n = sum(len(p) for p in parts)
    matrix_bytes = sum(p.embeddings.numel() * p.embeddings.element_size() for p in parts)
    return {
        "what": f"rank from cache, {'4 shards' if sharded else 'one file'}, {'cold' if cold else 'warm'}",
        "n": n,
        "dim": CACHE_DIM,
        "dtype": "float16",
        "chosen": len(names),
        "seconds": seconds,
        "matrix_mib": matrix_bytes / 2**20,
        "peak_anon_increase_mib": (peak.peak - anon0) / 1024,
        "anon_over_matrix": (peak.peak - anon0) * 1024 / matrix_bytes,
        "torch_threads": torch.get_num_threads(),
    }


def _child(*args: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1], "args": list(args)}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_search(n: int, repeats: int, modes=("top", "band", "bottom"), dtypes=("float32",)) -> list:
    return [
        _child("--child", mode, "--n", str(n), "--repeats", str(repeats), "--dtype", dtype)
        for dtype in dtypes
        for mode in modes
    ]


def bench_cache_rank(n: int, dim: int) -> dict:
    """Make the synthetic cache (one file and shards) in a temporary folder beside the repository,
    rank it warm and cold, delete it."""
    folder = Path(tempfile.mkdtemp(prefix="perface-bench-rank-"))
    need = 2.3 * n * (dim * 2 + 60)  # both copies, with boxes, hashes and names
    free = shutil.disk_usage(folder).free
    if free < need + 5 * 2**30:
        shutil.rmtree(folder)
        return {"error": f"needs {need / 2**30:.1f} GiB of disk, {free / 2**30:.1f} GiB free"}
    try:
        made = _child("--make-cache", str(folder), "--n", str(n), "--dim", str(dim))
        if "error" in made:
            return {"made": made, "rows": []}
        rows = []
        for sharded in (False, True):
            _child("--rank-cache", str(folder), *(["--sharded"] if sharded else []))  # warm the page cache
            for cold in (False, True):
                rows.append(
                    _child(
                        "--rank-cache", str(folder), *(["--sharded"] if sharded else []), *(["--cold"] if cold else [])
                    )
                )
        return {"made": made, "rows": rows}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def bench_cache_io(n: int, dim: int = 512) -> dict:
    import torch

    from perface.ranking.cache import Pool, read_cache, write_cache

    torch.manual_seed(0)
    zeros = torch.zeros(n, dtype=torch.int64)
    pool = Pool(
        root=Path("/pool"),
        files=[f"person_{i // 20:06d}/photo_{i:08d}.jpg" for i in range(n)],
        embeddings=torch.nn.functional.normalize(torch.randn(n, dim), dim=1),
        boxes=torch.rand(n, 4) * 500,
        sizes=torch.randint(10_000, 500_000, (n,)),
        mtimes_ns=torch.randint(0, 2**62, (n,)),
        digests=zeros,
        errors={},
        model={"model": "bench", "template": "arcface", "fingerprint": "0" * 64, "signature": "x"},
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.safetensors"
        t0 = time.perf_counter()
        write_cache(path, pool)
        t_write = time.perf_counter() - t0
        size = path.stat().st_size
        t0 = time.perf_counter()
        back = read_cache(path, "/pool")
        t_open = time.perf_counter() - t0
        t0 = time.perf_counter()
        names = list(back.files)
        t_names = time.perf_counter() - t0
        assert len(names) == n
    return {
        "rows": n,
        "dim": dim,
        "disk_mib": size / 2**20,
        "write_s": t_write,
        "open_s": t_open,
        "decode_all_names_s": t_names,
    }


def bench_photos(rounds: int, settings) -> list:
    """faces/s through the pool embedder for each (torch threads, DataLoader workers) setting;
    threads None = torch's default."""
    import torch

    from perface.ranking.pool import PhotoEmbedder

    photos = sorted(p for p in FACES.glob("*") if p.suffix.lower() in (".jpg", ".png"))
    if not photos:
        return [{"error": f"no photos in {FACES}"}]
    default_threads = torch.get_num_threads()
    embedder = PhotoEmbedder("sface", progress=False, batch_size=8)
    embedder([str(photos[0])])  # warm up: detector and backbone weights
    rows = []
    for threads, workers in settings:
        torch.set_num_threads(threads or default_threads)
        embedder.num_workers = workers
        sources = [str(p) for p in photos] * rounds
        t0 = time.perf_counter()
        batch = embedder(sources)
        seconds = time.perf_counter() - t0
        rows.append(
            {
                "photos": len(sources),
                "failed": len(batch.errors),
                "num_workers": workers,
                "torch_threads": torch.get_num_threads(),
                "seconds": seconds,
                "faces_per_s": (len(sources) - len(batch.errors)) / seconds,
            }
        )
    torch.set_num_threads(default_threads)
    return rows


def run(quick: bool = False) -> dict:
    """All measurements; ``quick``: 100,000 in-memory and 1,000,000 cached embeddings, one photo round."""
    search_rows = bench_search(
        100_000 if quick else 1_000_000,
        repeats=3 if quick else 5,
        dtypes=("float32",) if quick else ("float32", "float16"),
    )
    cache_rank = bench_cache_rank(1_000_000 if quick else CACHE_ROWS, CACHE_DIM)
    cache_io = bench_cache_io(20_000 if quick else 200_000)
    photos = bench_photos(rounds=1 if quick else 3, settings=[(None, 0), (1, 0)] + ([] if quick else [(1, 2)]))
    keep = (
        "what",
        "n",
        "dim",
        "dtype",
        "mode",
        "chosen",
        "seconds_median",
        "seconds",
        "matrix_mib",
        "anon_over_matrix",
        "error",
    )
    rows = [
        {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items() if k in keep}
        for r in search_rows + cache_rank.get("rows", [])
    ]
    return {
        "title": "Ranking: exact search in memory and from a memory-mapped cache, cache I/O, photo throughput",
        "rows": rows,
        "search": search_rows,
        "cache_rank": cache_rank,
        "cache_io": cache_io,
        "photos": photos,
        "notes": [
            "goals: 1,000,000 x 512 float32 in memory about 0.1 s; 10,000,000 x 128 float16 from its cache "
            "under 3 s with peak anonymous memory under 10% of the matrix (anon_over_matrix < 0.10)",
            f"cache I/O: {cache_io['rows']} rows x {cache_io['dim']}: write {cache_io['write_s']:.2f} s, "
            f"open {cache_io['open_s']:.3f} s, decode all names {cache_io['decode_all_names_s']:.2f} s",
            *[
                f"photos: {p.get('faces_per_s', 0):.2f} faces/s with {p.get('torch_threads')} torch "
                f"thread(s), num_workers={p.get('num_workers')} ({p.get('photos')} photos, "
                "decode+detect+align+embed; batch 8)"
                for p in photos
            ],
        ],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller pools, fewer repeats")
    parser.add_argument("--only", choices=("search", "cache"), help="run only this part")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--child", choices=("top", "band", "bottom", "band_top"), help=argparse.SUPPRESS)
    parser.add_argument("--make-cache", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--rank-cache", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--sharded", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cold", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=1_000_000, help=argparse.SUPPRESS)
    parser.add_argument("--dim", type=int, default=CACHE_DIM, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=5, help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child_search(args.n, 512, args.child, args.repeats, args.dtype)))
        return 0
    if args.make_cache:
        print(json.dumps(child_make_cache(args.make_cache, args.n, args.dim, CACHE_SHARDS)))
        return 0
    if args.rank_cache:
        print(json.dumps(child_cache_rank(args.rank_cache, args.sharded, args.cold)))
        return 0
    if args.only == "search":
        result = {"search": bench_search(100_000 if args.quick else 1_000_000, repeats=3 if args.quick else 5)}
    elif args.only == "cache":
        result = {"cache_rank": bench_cache_rank(1_000_000 if args.quick else CACHE_ROWS, CACHE_DIM)}
    else:
        result = run(quick=args.quick)
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
