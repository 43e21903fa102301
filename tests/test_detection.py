"""RetinaFace detection: shipped weights vs onnxruntime's outputs, coordinates, no-face cases."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import perface
from perface.detection import Face, get_detector

FIXTURE = Path(__file__).resolve().parent / "data" / "retinaface_onnx_fixture.json"


@pytest.fixture(scope="module")
def detector():
    return get_detector("cpu")


def test_import_perface_does_not_import_facexlib_or_cv2():
    code = ("import sys, perface; bad = [m for m in ('facexlib', 'cv2', 'matplotlib') if m in sys.modules]; "
            "print(','.join(bad)); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, f"import perface pulled in {proc.stdout.strip()} {proc.stderr[-500:]}"


def test_detector_is_cached_per_device(detector):
    assert get_detector(torch.device("cpu")) is detector
    assert get_detector() is detector


def test_matches_onnxruntime_fixture(faces_dir, detector):
    """The converted weights reproduce onnxruntime's detections of the original ONNX model
    (fixture written by tools/convert_retinaface.py --fixture; values rounded to 1e-3 px)."""
    fixture = json.loads(FIXTURE.read_text())
    worst = {"box": 0.0, "landmarks": 0.0, "score": 0.0}
    for photo in fixture["photos"]:
        image = perface.load_image(faces_dir / photo["file"])
        assert list(image.shape[-2:]) == photo["size"]
        faces = detector.detect(image.unsqueeze(0))[0]
        assert len(faces) == len(photo["faces"]), photo["file"]
        for ours, ref in zip(faces, photo["faces"]):
            worst["box"] = max(worst["box"], float(np.abs(ours.box - np.array(ref["box"])).max()))
            worst["landmarks"] = max(worst["landmarks"], float(np.abs(ours.landmarks - np.array(ref["landmarks"])).max()))
            worst["score"] = max(worst["score"], abs(ours.score - ref["score"]))
    print("max |torch - onnxruntime|:", worst)
    assert worst["box"] < 0.05 and worst["landmarks"] < 0.05 and worst["score"] < 1e-3


def test_face_fields_and_order(faces_dir):
    faces = perface.detect_faces(faces_dir / "obama.jpg")
    assert len(faces) == 1
    face = faces[0]
    assert isinstance(face, Face) and face.box.shape == (4,) and face.landmarks.shape == (5, 2)
    assert 0.8 < face.score <= 1.0
    x0, y0, x1, y1 = face.box
    assert (face.landmarks[:, 0] > x0).all() and (face.landmarks[:, 0] < x1).all()
    assert (face.landmarks[:, 1] > y0).all() and (face.landmarks[:, 1] < y1).all()
    left_eye, right_eye, nose, mouth_l, mouth_r = face.landmarks
    assert left_eye[0] < right_eye[0] and mouth_l[0] < mouth_r[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_l[1], mouth_r[1])


def test_landmarks_in_input_pixels_under_flip(faces_dir, detector):
    """A mirrored photo gives mirrored landmarks (x -> W - 1 - x, left/right swapped): the
    downscale-and-map-back keeps input pixel coordinates (obama3 is detected at 0.27x)."""
    image = perface.load_image(faces_dir / "obama3.jpg")
    width = image.shape[-1]
    a = detector.detect(image.unsqueeze(0))[0][0].landmarks
    b = detector.detect(image.flip(-1).unsqueeze(0))[0][0].landmarks
    mirrored = np.stack([width - 1 - b[:, 0], b[:, 1]], axis=1)[[1, 0, 2, 4, 3]]
    eye_distance = float(np.linalg.norm(a[1] - a[0]))
    # the network itself is not exactly mirror-symmetric (eyes move ~6% of their distance);
    # a wrong scale or offset in the mapping would move every point the same way, far more
    assert np.abs((mirrored - a).mean(axis=0)).max() < 0.04 * eye_distance
    assert np.abs(mirrored - a).max() < 0.1 * eye_distance


def test_padding_retry_maps_back(faces_dir, detector):
    """Detection on a padded copy (the retry for tight crops) returns coordinates of the
    unpadded image (320 px + padding stays under the 640 px detection size: same scale)."""
    image = perface.load_image(faces_dir / "grace_hopper.jpg")
    image = torch.nn.functional.interpolate(image[None], size=(320, 320), mode="area")[0]
    plain = detector.detect(image.unsqueeze(0))[0][0]
    padded = detector.detect_with_padding(image, 0.5)[0]
    eye_distance = float(np.linalg.norm(plain.landmarks[1] - plain.landmarks[0]))
    assert np.abs(padded.landmarks - plain.landmarks).max() < 0.05 * eye_distance


@pytest.mark.parametrize("kind", ["blank", "noise"])
def test_no_face(kind):
    gen = torch.Generator().manual_seed(0)
    image = torch.full((3, 240, 320), 0.5) if kind == "blank" else torch.rand(3, 240, 320, generator=gen)
    assert perface.detect_faces(image) == []


def test_batch_in_batch_out(faces_dir):
    out = perface.detect_faces([faces_dir / "grace_hopper.jpg", torch.full((3, 64, 64), 0.5)])
    assert isinstance(out, list) and len(out) == 2
    assert len(out[0]) == 1 and out[1] == []
