"""Similarity transforms, the torch warp vs cv2.warpAffine, templates and the aligner modes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import perface
from perface import alignment
from perface.alignment import (
    DetectAlign,
    FixedAlign,
    ResizeTo,
    build_aligner,
    choose_faces,
    similarity_transform,
    warp_affine,
)
from perface.detection import Face
from perface.errors import NoFaceError
from perface.templates import get_template, template_points


@pytest.fixture(scope="module")
def obama(faces_dir):
    return perface.load_image(faces_dir / "obama.jpg")


@pytest.fixture(scope="module")
def obama_face(obama):
    return perface.detect_faces(obama)[0]


def _similarity(angle, scale, tx, ty):
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[c, -s, tx], [s, c, ty]])


def test_similarity_transform_recovers_exact_transform():
    src = template_points("arcface", 112) * 3 + 40
    m = _similarity(0.3, 0.7, 12.0, -5.0)
    dst = src @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(similarity_transform(src, dst), m, atol=1e-9)
    batch = similarity_transform(np.stack([src, src]), dst)
    assert batch.shape == (2, 2, 3)


def test_similarity_transform_never_reflects():
    src = template_points("arcface", 112)
    mirrored = src * [-1, 1]
    m = similarity_transform(src, mirrored)
    assert np.linalg.det(m[:, :2]) > 0


def test_torch_warp_matches_cv2(obama, obama_face):
    """Same matrix, same pixel-centre convention: the torch warp equals cv2.warpAffine up to
    cv2's rounding of uint8 output (0.5 grey levels) and float error."""
    cv2 = pytest.importorskip("cv2")
    img = (obama.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    worst = {}
    for size in (112, 224):
        m = similarity_transform(obama_face.landmarks, template_points("arcface", size))
        ref = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        out = warp_affine(x, m, size, antialias=False)[0].permute(1, 2, 0).numpy()
        worst[f"photo uint8 {size}"] = float(np.abs(out - ref).max())
    rng = np.random.default_rng(0)
    img_f = rng.random((90, 130, 3)).astype(np.float32)
    worst["random float"] = 0.0
    for _ in range(10):
        m = _similarity(rng.uniform(-1, 1), rng.uniform(0.4, 2.5), rng.uniform(-30, 30), rng.uniform(-30, 30))
        ref = cv2.warpAffine(img_f, m, (70, 60), flags=cv2.INTER_LINEAR)  # includes the zero border
        out = warp_affine(torch.from_numpy(img_f).permute(2, 0, 1)[None], m, (60, 70), antialias=False)
        worst["random float"] = max(worst["random float"], float(np.abs(out[0].permute(1, 2, 0).numpy() - ref).max()))
    print("max |torch warp - cv2.warpAffine|:", worst)
    assert worst["photo uint8 112"] <= 0.51 and worst["photo uint8 224"] <= 0.51  # grey levels of 255
    assert worst["random float"] < 1e-3


def test_antialias_spreads_gradient_to_every_source_pixel(obama, obama_face):
    """Bilinear sampling at ~4 source px per output px leaves most face pixels without
    gradient; area-averaging first reaches all of them."""
    m = similarity_transform(obama_face.landmarks, template_points("arcface", 112))
    assert 1 / np.sqrt(np.linalg.det(m[:, :2])) > 2  # the face is downscaled more than 2x
    region = (slice(None), slice(200, 320), slice(420, 560))  # cheeks, eyes and nose of obama.jpg
    coverage = {}
    for antialias in (False, True):
        x = obama.clone().requires_grad_(True)
        warp_affine(x[None], m, 112, antialias=antialias).sum().backward()
        coverage[antialias] = float((x.grad[region].abs().sum(0) > 0).float().mean())
    assert coverage[True] == 1.0
    assert coverage[False] < 0.6


def test_antialias_close_to_plain_warp_on_smooth_content(obama, obama_face):
    m = similarity_transform(obama_face.landmarks, template_points("arcface", 112))
    a = warp_affine(obama[None], m, 112, antialias=True)
    b = warp_affine(obama[None], m, 112, antialias=False)
    assert float((a - b).abs().mean()) < 0.03


def test_templates():
    arc = template_points("arcface", 112)
    np.testing.assert_allclose(arc[0], [38.2946, 51.6963])
    sim = template_points("simceleba", 224)
    assert abs(sim[3:, 1].mean() - 174) < 1.0  # mouth row ~174 of 224
    assert get_template("ffhq").size == 512
    np.testing.assert_allclose(template_points("ffhq", 1024), (template_points("ffhq", 512) + 0.5) * 2 - 0.5)
    with pytest.raises(ValueError, match="arcface"):
        get_template("nope")


def test_ffhq_template_agrees_with_the_ffhq_crop_rule():
    """The FFHQ crop rule (eyes and mouth centre -> oriented square) applied to the ArcFace
    template puts the eyes where the 'ffhq' template has them (within 1% of 512)."""
    p = template_points("arcface", 112)
    eye_avg, mouth = (p[0] + p[1]) / 2, (p[3] + p[4]) / 2
    e2e, e2m = p[1] - p[0], mouth - eye_avg
    x = e2e - np.flipud(e2m) * [-1, 1]
    x = x / np.hypot(*x) * max(np.hypot(*e2e) * 2.0, np.hypot(*e2m) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + e2m * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    corners = np.array([[-0.5, -0.5], [-0.5, 511.5], [511.5, 511.5], [511.5, -0.5]])
    m = similarity_transform(quad, corners)
    eyes = p[:2] @ m[:, :2].T + m[:, 2]
    assert np.abs(eyes - template_points("ffhq", 512)[:2]).max() < 5.12


def test_fixed_align_converts_ffhq_crop_without_detection(obama, obama_face, metric, monkeypatch):
    """An FFHQ-aligned 512 crop converted by align='ffhq' equals aligning the photo to the
    ArcFace template directly, and no detector is touched."""
    ffhq = warp_affine(obama[None], similarity_transform(obama_face.landmarks, template_points("ffhq", 512)), 512)
    direct = warp_affine(obama[None], similarity_transform(obama_face.landmarks, template_points("arcface", 112)), 112)

    def no_detection(*args, **kwargs):
        raise AssertionError("fixed-template mode must not detect")

    monkeypatch.setattr("perface.detection.get_detector", no_detection)
    aligner = build_aligner("ffhq", template="arcface", size=112)
    assert isinstance(aligner, FixedAlign)
    x = ffhq.clone().requires_grad_(True)
    converted = aligner(x)
    assert converted.shape == (1, 3, 112, 112)
    assert float((converted.detach() - direct).abs().mean()) < 0.02
    converted.sum().backward()
    assert torch.isfinite(x.grad).all() and float(x.grad.abs().sum()) > 0
    # and through the metric
    with torch.no_grad():
        assert float((perface.PerFace(align="ffhq").embed(ffhq) * metric.embed(direct)).sum()) > 0.98


def test_fixed_align_any_crop_size():
    aligner = FixedAlign("simceleba", "arcface", 112)
    for size in (224, 448):
        assert aligner(torch.rand(2, 3, size, size)).shape == (2, 3, 112, 112)
    with pytest.raises(ValueError, match="square"):
        aligner(torch.rand(1, 3, 224, 200))


def test_detect_mode_gradient_reaches_photo_pixels(faces_dir):
    """PerFace(align='detect') on a photo tensor: landmarks without gradient, warp with it;
    the gradient is finite, non-zero on the face and zero outside the crop's footprint."""
    photo = perface.load_image(faces_dir / "grace_hopper.jpg")[None]  # face box ~ (178..355, 100..312)
    metric = perface.PerFace(align="detect")
    assert isinstance(metric.aligner, DetectAlign)
    with torch.no_grad():
        ref = metric.embed(photo.flip(-1))
    x = photo.clone().requires_grad_(True)
    loss = 1 - (metric.embed(x) * ref).sum()
    loss.backward()
    g = x.grad[0].abs().sum(0)
    assert torch.isfinite(x.grad).all() and float(loss.detach()) > 0
    assert float(g[150:300, 200:330].sum()) > 0 and float((g[150:300, 200:330] > 0).float().mean()) > 0.9
    assert float(g[:, :100].sum()) == 0 and float(g[430:].sum()) == 0


def test_detect_mode_raises_no_face_with_batch_index():
    aligner = build_aligner("detect", template="arcface", size=112)
    with pytest.raises(NoFaceError, match="batch item 0"):
        aligner(torch.full((1, 3, 120, 160), 0.5))


def test_build_aligner_modes():
    assert isinstance(build_aligner("none", "arcface", 112), ResizeTo)
    with pytest.raises(ValueError, match="detect"):
        build_aligner("dlib", "arcface", 112)


def _face(x, size, score=0.99):
    box = np.array([x, 0, x + size, size], dtype=np.float32)
    return Face(box, score, np.zeros((5, 2), dtype=np.float32))


def test_choose_faces():
    faces = [_face(0, 100), _face(200, 90), _face(400, 20)]
    with pytest.warns(UserWarning, match="3 faces"):
        assert choose_faces(faces, None, "photo")[0] is faces[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert choose_faces([faces[0], faces[2]], None, "photo") == [faces[0]]
    assert choose_faces(faces, 1, "photo") == [faces[1]]
    assert choose_faces(faces, "all", "photo") == faces
    with pytest.raises(NoFaceError, match="only 3"):
        choose_faces(faces, 5, "photo")
    with pytest.raises(NoFaceError, match="no face"):
        choose_faces([], None, "photo")


@pytest.mark.slow
def test_align_faces_two_people(faces_dir, metric):
    """A photo with two faces: a warning by default, both with face_index='all'."""
    a = perface.load_image(faces_dir / "grace_hopper.jpg")
    both = torch.cat([a, a.flip(-1)], dim=-1)  # 512 x 1024, two equally prominent faces
    with pytest.warns(UserWarning, match="2 faces"):
        one = perface.align_faces(both)
    assert one.shape == (1, 3, 112, 112)
    everyone = perface.align_faces(both, face_index="all")
    assert everyone.shape == (2, 3, 112, 112)
    assert torch.equal(perface.align_faces(both, face_index=1), everyone[1:])
    # the second crop is (up to detector noise) the mirror image of the first
    with torch.no_grad():
        assert float(metric.similarity(everyone[:1], everyone[1:].flip(-1))) > 0.9


def test_no_warning_when_one_face_dominates(faces_dir):
    a = perface.load_image(faces_dir / "grace_hopper.jpg")
    b = perface.load_image(faces_dir / "astronaut.png")  # its face has ~1/4 of Grace Hopper's area
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        faces = perface.detect_faces(torch.cat([a, b], dim=-1))
        assert len(faces) == 2 and faces[1].prominence < alignment.COMPETE_RATIO * faces[0].prominence
        assert perface.align_faces(torch.cat([a, b], dim=-1)).shape == (1, 3, 112, 112)
