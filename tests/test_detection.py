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
    code = (
        "import sys, perface; bad = [m for m in ('facexlib', 'cv2', 'matplotlib') if m in sys.modules]; "
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
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
            worst["landmarks"] = max(
                worst["landmarks"], float(np.abs(ours.landmarks - np.array(ref["landmarks"])).max())
            )
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


# ---------------------------------------------------------------- the coarse levels alone


def _network_input(detector, path):
    image = (perface.load_image(path) * 255).round().to(torch.uint8)
    return detector.prepare(image.unsqueeze(0))[0]


def test_coarse_levels_are_the_whole_networks(faces_dir, detector):
    """RetinaFaceMobile.coarse gives the whole network's outputs for its two levels (the pyramid
    runs top-down), and anchors() of those levels are the whole list's tail, on every photo."""
    from perface.retinaface import anchors

    for path in sorted(faces_dir.glob("*.[jp][pn]g")):
        batch = _network_input(detector, path)
        with torch.no_grad():
            whole = detector.net(batch)
            coarse, c1, p2 = detector.net.coarse(batch)
            fine = detector.net.fine(c1, p2)
        h, w = batch.shape[-2:]
        finest = fine[0].shape[1]
        assert finest == len(anchors(h, w, (0,))) == 2 * -(-h // 8) * -(-w // 8)
        for part, ours, full in zip(("boxes", "scores", "landmarks"), coarse, whole):
            assert torch.allclose(ours, full[:, finest:], atol=1e-5), (path.name, part)
        assert torch.equal(anchors(h, w, (1, 2)), anchors(h, w)[finest:])


@pytest.mark.slow
def test_prominent_detection_skips_the_finest_level_and_keeps_the_face(faces_dir, detector, monkeypatch):
    """With a face of >= PROMINENT_SIDE px the finest level is not run, and the most prominent
    face is the whole network's (box, score, landmarks) on every shared photo."""
    from perface.retinaface import RetinaFaceMobile

    expected = {}
    for path in sorted(faces_dir.glob("*.[jp][pn]g")):
        expected[path.name] = detector.detect(perface.load_image(path).unsqueeze(0))[0][0]

    def not_run(*args):
        raise AssertionError("the finest level ran")

    monkeypatch.setattr(RetinaFaceMobile, "fine", not_run)
    for path in sorted(faces_dir.glob("*.[jp][pn]g")):
        ours = detector.detect(perface.load_image(path).unsqueeze(0), prominent=True)[0][0]
        ref = expected[path.name]
        assert np.abs(ours.landmarks - ref.landmarks).max() < 1e-3, path.name
        assert np.abs(ours.box - ref.box).max() < 1e-3 and abs(ours.score - ref.score) < 1e-6


def _pasted(hopper, sides, canvas=(480, 640)):
    """Grace Hopper's photo scaled so that her face is each of ``sides`` px wide, pasted left to
    right on a grey canvas (uint8 (3, H, W)), and where each face went (x offsets)."""
    face = get_detector().detect(hopper.unsqueeze(0))[0][0]
    image = torch.full((3, *canvas), 120, dtype=torch.uint8)
    x, offsets = 10, []
    for side in sides:
        scale = side / float(face.box[2] - face.box[0])
        small = torch.nn.functional.interpolate(hopper[None], scale_factor=scale, mode="area")[0]
        small = (small * 255).round().to(torch.uint8)
        image[:, 20 : 20 + small.shape[1], x : x + small.shape[2]] = small
        offsets.append(x)
        x += small.shape[2] + 10
    return image, offsets


def test_prominent_detection_still_finds_small_faces(faces_dir, detector):
    """A 30 px face alone (only the finest level sees it) is found with prominent=True too, as
    the whole network finds it; beside a 150 px face it is left out only when prominent=True."""
    hopper = perface.load_image(faces_dir / "grace_hopper.jpg")
    alone, _ = _pasted(hopper, [30])
    whole = detector.detect(alone.unsqueeze(0), 1.0)[0]
    ours = detector.detect(alone.unsqueeze(0), 1.0, prominent=True)[0]
    assert len(whole) == len(ours) == 1
    assert np.abs(ours[0].landmarks - whole[0].landmarks).max() < 1e-3
    both, offsets = _pasted(hopper, [150, 30])
    every = detector.detect(both.unsqueeze(0), 1.0)[0]
    first = detector.detect(both.unsqueeze(0), 1.0, prominent=True)[0]
    assert len(every) == 2 and every[1].box[0] > offsets[1] - 5  # the small face, where it was pasted
    assert len(first) == 1 and np.abs(first[0].landmarks - every[0].landmarks).max() < 1e-3
