"""Ranking at scale: exact chunked search time and peak memory, pool cache I/O, photo throughput.

    python benchmarks/bench_rank.py                    # 1,000,000 x 512 search, cache I/O, photos
    python benchmarks/bench_rank.py --quick --json bench-results/rank.json

Search: a target against N synthetic L2-normalized 512-d float32 embeddings (goal for N = 1e6:
under 1 s, and peak memory within 10% of the embedding matrix itself). Each measurement runs in
a fresh Python process; memory is read from /proc/self/status: VmRSS before the matrix is
built, then the peak (VmHWM, reset through /proc/self/clear_refs just before searching where
the kernel allows it). ``peak_over_matrix`` = (peak - RSS before the matrix) / matrix bytes:
1.00 means no memory beyond the matrix at all. Times are the median of ``--repeats`` searches
(first search not counted).

Cache: writing and reading a pool cache of synthetic rows. Photos: faces/s embedding the photos
of ../shared/data/faces (decode + detect + align + backbone) through the pool embedder.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT.parent / "shared" / "data" / "faces"


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_kb("VmHWM") <= _status_kb("VmRSS") + 1024


def child_search(n: int, dim: int, mode: str, repeats: int, dtype: str) -> dict:
    """One search measurement in this (fresh) process; see the module docstring."""
    import torch

    from perface.ranking.search import DEFAULT_CHUNK_ROWS, search

    torch.manual_seed(0)
    store = getattr(torch, dtype)
    rss0 = _status_kb("VmRSS")
    emb = torch.empty(n, dim, dtype=store)
    block = torch.empty(min(n, 65536), dim)
    for start in range(0, n, block.shape[0]):  # bounded temporaries while building
        b = block[: min(block.shape[0], n - start)]
        b.normal_()
        b.div_(b.norm(dim=1, keepdim=True))
        emb[start:start + b.shape[0]] = b
    del block, b
    target = torch.randn(dim)
    matrix_bytes = emb.numel() * emb.element_size()
    kwargs = {"top": dict(top=100), "band": dict(band=(0.05, 0.15)),
              "bottom": dict(bottom=100), "band_top": dict(band=(0.05, 0.15), top=100)}[mode]
    rss_matrix = _status_kb("VmRSS")
    peak_reset = _reset_peak()
    times, chosen = [], 0
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        sel = search(target, emb, **kwargs)
        if i:
            times.append(time.perf_counter() - t0)
        chosen = len(sel)
        del sel
    peak = _status_kb("VmHWM")
    return {"n": n, "dim": dim, "dtype": dtype, "mode": mode, "chosen": chosen,
            "seconds_median": statistics.median(times), "seconds_min": min(times),
            "matrix_mib": matrix_bytes / 2**20, "rss_before_matrix_mib": rss0 / 1024,
            "rss_with_matrix_mib": rss_matrix / 1024, "peak_mib": peak / 1024,
            "search_overhead_mib": (peak - rss_matrix) / 1024,
            "peak_over_matrix": (peak - rss0) * 1024 / matrix_bytes,
            "peak_measured_from": "search start" if peak_reset else "process start",
            "chunk_rows": DEFAULT_CHUNK_ROWS, "torch_threads": torch.get_num_threads()}


def bench_search(n: int, repeats: int, modes=("top", "band", "bottom"), dtypes=("float32",)) -> list:
    rows = []
    for dtype in dtypes:
        for mode in modes:
            cmd = [sys.executable, __file__, "--child", mode, "--n", str(n), "--repeats", str(repeats),
                   "--dtype", dtype]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if proc.returncode != 0:
                rows.append({"mode": mode, "dtype": dtype, "error": proc.stderr.strip().splitlines()[-1:]})
                continue
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return rows


def bench_cache(n: int, dim: int = 512) -> dict:
    import torch

    from perface.ranking.pool import Pool, read_cache, write_cache

    torch.manual_seed(0)
    pool = Pool(root=Path("/pool"), files=[f"person_{i // 20:06d}/photo_{i:08d}.jpg" for i in range(n)],
                embeddings=torch.nn.functional.normalize(torch.randn(n, dim), dim=1),
                boxes=torch.rand(n, 4) * 500, sizes=torch.randint(10_000, 500_000, (n,)),
                mtimes_ns=torch.randint(0, 2**62, (n,)), errors={}, model={"model": "bench", "template": "arcface",
                                                                         "fingerprint": "0" * 64})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.safetensors"
        t0 = time.perf_counter()
        write_cache(path, pool)
        t_write = time.perf_counter() - t0
        size = path.stat().st_size + path.with_name("bench.files.json").stat().st_size
        t0 = time.perf_counter()
        back = read_cache(path, "/pool")
        t_read = time.perf_counter() - t0
        assert back is not None and len(back) == n
    return {"rows": n, "dim": dim, "disk_mib": size / 2**20, "write_s": t_write, "read_s": t_read}


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
        rows.append({"photos": len(sources), "failed": len(batch.errors), "num_workers": workers,
                     "torch_threads": torch.get_num_threads(), "seconds": seconds,
                     "faces_per_s": (len(sources) - len(batch.errors)) / seconds})
    torch.set_num_threads(default_threads)
    return rows


def run(quick: bool = False) -> dict:
    """All measurements; ``quick``: 100,000 embeddings, fewer repeats, one photo round."""
    n = 100_000 if quick else 1_000_000
    search_rows = bench_search(n, repeats=3 if quick else 5,
                               dtypes=("float32",) if quick else ("float32", "float16"))
    cache = bench_cache(20_000 if quick else 200_000)
    photos = bench_photos(rounds=1 if quick else 3,
                          settings=[(None, 0), (1, 0)] + ([] if quick else [(1, 2)]))
    rows = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()
             if k in ("n", "dim", "dtype", "mode", "chosen", "seconds_median", "seconds_min", "matrix_mib",
                      "search_overhead_mib", "peak_over_matrix", "peak_measured_from", "error")}
            for r in search_rows]
    return {"title": "Ranking: exact chunked search, pool cache, photo throughput", "rows": rows,
            "search": search_rows, "cache": cache, "photos": photos,
            "notes": ["goal for 1,000,000 x 512 float32: under 1 s and peak_over_matrix <= 1.10",
                      f"cache: {cache['rows']} rows x {cache['dim']}: write {cache['write_s']:.2f} s, "
                      f"read {cache['read_s']:.2f} s, {cache['disk_mib']:.0f} MiB on disk",
                      *[f"photos: {p.get('faces_per_s', 0):.2f} faces/s with {p.get('torch_threads')} torch "
                        f"thread(s), num_workers={p.get('num_workers')} ({p.get('photos')} photos, "
                        "decode+detect+align+embed; batch 8)" for p in photos]]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100,000 embeddings, fewer repeats")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--child", choices=("top", "band", "bottom", "band_top"), help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=1_000_000, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=5, help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child_search(args.n, 512, args.child, args.repeats, args.dtype)))
        return 0
    result = run(quick=args.quick)
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
