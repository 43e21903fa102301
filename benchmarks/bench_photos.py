"""Photo-to-embedding throughput, where the time goes, and how the warp's gradient behaves.

    python benchmarks/bench_photos.py                 # all photos in ../shared/data/faces, 3 rounds
    python benchmarks/bench_photos.py --quick --json bench-results/photos.json
    python benchmarks/bench_photos.py --gradient      # also the antialias (area-downsample) study

Per face: decoding (``load_image`` from the file), detection (RetinaFace on a copy with long side
<= 640, incl. pre/post-processing), warping (similarity warp to the model's template) and the
backbone (``PerFace.embed`` on one aligned crop). The goal: detection + warping cost no more
than the backbone per face. ``--threads`` sets torch's CPU threads (default: torch's choice);
report it with the numbers.

``--gradient`` compares the warp with and without area-downsampling on obama3.jpg (2333 x 1434):
the share of source pixels in the face region that receive gradient, how much the similarity
jitters when the landmarks move by quarter source pixels (0..0.75 px in x and y: detector
noise), and how an attack of 10 signed-gradient steps (2/255 each) transfers to the other warp.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT.parent / "shared" / "data" / "faces"


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def bench_pipeline(photos, metric, rounds: int) -> dict:
    from perface.alignment import _landmark_matrices, warp_affine
    from perface.detection import get_detector
    from perface.imageio import load_image

    detector = get_detector("cpu")
    with torch.no_grad():  # warm up: weights, priors, allocator
        detector.detect(torch.rand(1, 3, 480, 640))
        metric.embed(torch.rand(1, 3, metric.input_size, metric.input_size))
    times = {"decode": [], "detect": [], "warp": [], "backbone": []}
    faces = 0
    for _ in range(rounds):
        for path in photos:
            image, t_dec = _timed(lambda: load_image(path))
            found, t_det = _timed(lambda: detector.detect_padded(image))
            if not found:
                continue
            matrices = _landmark_matrices(found[:1], metric.template, metric.input_size)
            crop, t_warp = _timed(lambda: warp_affine(image.unsqueeze(0), matrices, metric.input_size))
            with torch.no_grad():
                _, t_net = _timed(lambda: metric.embed(crop))
            for key, t in zip(times, (t_dec, t_det, t_warp, t_net)):
                times[key].append(t)
            faces += 1
    total = sum(sum(v) for v in times.values())
    per_face = {k: 1000 * sum(v) / faces for k, v in times.items()}
    return {
        "faces": faces,
        "faces_per_s": faces / total,
        "ms_per_face": per_face,
        "share": {k: sum(v) / total for k, v in times.items()},
        "detect_plus_warp_over_backbone": (per_face["detect"] + per_face["warp"]) / per_face["backbone"],
        "median_photo_megapixels": statistics.median(
            float(np.prod(load_image(p).shape[-2:])) / 1e6 for p in photos),
    }


def bench_gradient(path: Path, metric, reference: Path) -> dict:
    """Gradient coverage, shift jitter and attack transfer, with and without antialiasing."""
    from perface.alignment import _landmark_matrices, warp_affine
    from perface.detection import get_detector
    from perface.imageio import load_image

    image = load_image(path)
    face = get_detector("cpu").detect_padded(image)[0]
    size, template = metric.input_size, metric.template
    with torch.no_grad():
        ref = metric.embed(warp_affine(load_image(reference).unsqueeze(0), _landmark_matrices(
            get_detector("cpu").detect_padded(load_image(reference))[:1], template, size), size))

    def sim(x, shift=(0, 0), antialias=True):
        moved = type(face)(face.box, face.score, face.landmarks + np.asarray(shift, dtype=np.float32))
        m = _landmark_matrices([moved], template, size)
        return (metric.embed(warp_affine(x.unsqueeze(0), m, size, antialias)) * ref).sum()

    m = _landmark_matrices([face], template, size)[0]
    scale = float(1.0 / np.sqrt(abs(np.linalg.det(m[:, :2]))))
    out = {"photo": path.name, "source_px_per_output_px": scale}
    # the face region: source pixels the crop's inner 80% covers
    ys, xs = np.mgrid[0:image.shape[1], 0:image.shape[2]]
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
            grad, = torch.autograd.grad(sim(x, antialias=antialias), x)
            x = (x.detach() - 2 / 255 * grad.sign()).clamp(0, 1)
        with torch.no_grad():
            before = {a: float(sim(image, antialias=a)) for a in (False, True)}
            after = {a: float(sim(x, antialias=a)) for a in (False, True)}
        out[key] = {
            "face_region_pixels_with_gradient": covered,
            "similarity_under_subpixel_landmark_shifts": {"min": min(jitter), "max": max(jitter),
                                                    "std": statistics.pstdev(jitter)},
            "attack_drop_seen_by_bilinear_only": before[False] - after[False],
            "attack_drop_seen_by_antialias": before[True] - after[True],
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=Path, default=FACES, help="folder of photos (default ../shared/data/faces)")
    parser.add_argument("--model", default="sface")
    parser.add_argument("--quick", action="store_true", help="3 photos, 1 round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--gradient", action="store_true", help="also run the antialias/gradient study")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write the results as JSON")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    import perface

    if args.threads:
        torch.set_num_threads(args.threads)
    photos = sorted(p for p in args.faces.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if args.quick:
        photos = photos[:3]
    metric = perface.PerFace(args.model)
    result = {"model": metric.name, "torch_threads": torch.get_num_threads(), "photos": [p.name for p in photos],
              "pipeline": bench_pipeline(photos, metric, 1 if args.quick else args.rounds)}
    pipe = result["pipeline"]
    print(f"{pipe['faces']} faces, {pipe['faces_per_s']:.2f} faces/s ({metric.name}, {result['torch_threads']} threads, "
          f"median {pipe['median_photo_megapixels']:.2f} MP)")
    for key in pipe["ms_per_face"]:
        print(f"  {key:9s} {pipe['ms_per_face'][key]:8.1f} ms/face  {100 * pipe['share'][key]:5.1f} %")
    print(f"  detection + warp = {pipe['detect_plus_warp_over_backbone']:.2f} x backbone (goal <= 1)")
    if args.gradient:
        result["gradient"] = bench_gradient(args.faces / "obama3.jpg", metric, args.faces / "obama.jpg")
        print(json.dumps(result["gradient"], indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
