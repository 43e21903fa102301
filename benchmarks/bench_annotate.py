"""Answer latency of ``perface annotate serve``: what an annotator waits for after each click.

A real server process on 127.0.0.1 serves a study of 200 triplets (+ 20 catch trials); 1 and
then 4 annotators (threads, each with its own connection) answer every question as fast as
they can. Each request is ``POST /api/answer``: validate, commit the answer to SQLite with an
fsync, choose the next question, reply. Also timed: ``AnswerStore.record`` alone (the durable
commit), and ``GET`` of one image. The browser then loads three images; the browser test
prints that whole round trip (answer to next question on screen).

    python benchmarks/bench_annotate.py [--quick]
"""

from __future__ import annotations

import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def _study(root: Path, n: int) -> Path:
    import numpy as np
    from PIL import Image

    from perface.annotate.study import write_study
    from perface.annotate.triplets import catch_trials, random_triplets

    rng = np.random.default_rng(0)
    images = []
    for k in range(12):
        path = root / "faces" / f"face{k:02d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)).save(path, quality=90)
        images.append(path)
    write_study(
        root / "study", random_triplets(images, n, 0), catch_trials(images, n // 10, 0), [root / "faces"], "random", 0
    )
    return root / "study"


def _percentiles(ms: list[float]) -> dict[str, float]:
    ms = sorted(ms)
    return {
        "p50_ms": round(statistics.median(ms), 2),
        "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 2),
        "max_ms": round(ms[-1], 2),
    }


def _annotate(port: int, who: str, out: list[float]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", f"/api/next?annotator={who}")
    reply = json.loads(conn.getresponse().read())
    while not reply["done"]:
        body = json.dumps({"annotator": who, "item": reply["item"], "answer": "a", "ms": 1000})
        start = time.perf_counter()
        conn.request("POST", "/api/answer", body, {"Content-Type": "application/json"})
        data = conn.getresponse().read()
        out.append(1000 * (time.perf_counter() - start))
        reply = json.loads(data)["next"]
    conn.close()


def run(quick: bool = False) -> dict:
    from perface.annotate.store import AnswerStore

    n = 40 if quick else 200
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with AnswerStore(root / "alone.sqlite", "bench") as store:  # the durable commit alone
            times = []
            for k in range(n):
                start = time.perf_counter()
                store.record("r1", f"q{k}", "a", 1000)
                times.append(1000 * (time.perf_counter() - start))
        rows.append(
            {
                "what": "AnswerStore.record (SQLite commit + fsync)",
                "annotators": 1,
                "requests": n,
                **_percentiles(times),
                "per_s": round(n / (sum(times) / 1000), 1),
            }
        )
        study = _study(root, n)
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        proc = subprocess.Popen(
            [sys.executable, "-m", "perface", "annotate", "serve", str(study), "--port", "0", "-q"],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            port = None
            for line in proc.stdout:
                match = re.search(r"open http://127\.0\.0\.1:(\d+)/", line)
                if match:
                    port = int(match.group(1))
                    break
            assert port, "server did not start"
            for count in (1, 4):
                lat: list[list[float]] = [[] for _ in range(count)]
                threads = [
                    threading.Thread(target=_annotate, args=(port, f"bench{count}x{k}", lat[k])) for k in range(count)
                ]
                start = time.perf_counter()
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                wall = time.perf_counter() - start
                flat = [x for part in lat for x in part]
                rows.append(
                    {
                        "what": "POST /api/answer (store + next question)",
                        "annotators": count,
                        "requests": len(flat),
                        **_percentiles(flat),
                        "per_s": round(len(flat) / wall, 1),
                    }
                )
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("GET", "/api/next?annotator=imgs")
            token = json.loads(conn.getresponse().read())["item"]
            times = []
            for _ in range(n):
                start = time.perf_counter()
                conn.request("GET", f"/api/image/{token}/reference")
                conn.getresponse().read()
                times.append(1000 * (time.perf_counter() - start))
            conn.close()
            rows.append(
                {
                    "what": "GET /api/image (224 px JPEG)",
                    "annotators": 1,
                    "requests": n,
                    **_percentiles(times),
                    "per_s": round(n / (sum(times) / 1000), 1),
                }
            )
        finally:
            proc.terminate()
            proc.wait(30)
    return {
        "title": "annotation server: answer latency",
        "rows": rows,
        "notes": [f"{n} triplets + {n // 10} catch trials; one uvicorn process; client and server on one machine"],
    }


if __name__ == "__main__":
    result = run(quick="--quick" in sys.argv)
    for row in result["rows"]:
        print(json.dumps(row))
