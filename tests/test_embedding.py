"""The one photo pipeline (perface.embedding) and the faults of issue 10, each on real photos
against an independent reference: per-input face choice, small faces in large photos, rotated
photos, fixed-template conversions, per-input alignment modes, tensor edges, HEIC."""

from __future__ import annotations

import gc
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import perface
from conftest import sface_signature
from perface.alignment import FixedAlign, choose_faces, similarity_transform, warp_affine
from perface.detection import Face, Faces, find_faces, get_detector, implausible
from perface.embedding import FAILURES, embed
from perface.errors import ImageReadError, InputRangeError, NoFaceError
from perface.imageio import IMAGE_SUFFIXES, Photo
from perface.templates import DEFAULT_SIZES, TEMPLATES, template_points


@pytest.fixture(scope="module")
def hopper(faces_dir):
    return perface.load_image(faces_dir / "grace_hopper.jpg")


@pytest.fixture(scope="module")
def astronaut(faces_dir):
    return perface.load_image(faces_dir / "astronaut.png")


def _eye_distance(landmarks) -> float:
    return float(np.linalg.norm(np.asarray(landmarks)[1] - np.asarray(landmarks)[0]))


# ---------------------------------------------------------------- the result type


def test_embed_result_rows_boxes_landmarks_and_signature(faces_dir, tmp_path, metric):
    paths = [faces_dir / "obama.jpg", tmp_path / "missing.jpg", faces_dir / "biden.jpg"]
    result = embed(paths, metric, progress=False)
    assert result.embeddings.shape == (3, 128) and result.embeddings.dtype == torch.float32
    assert result.boxes.shape == (3, 4) and result.landmarks.shape == (3, 5, 2)
    assert result.detection_scores.shape == (3,) and result.source.tolist() == [0, 1, 2]
    assert result.ok.tolist() == [True, False, True] and list(result.errors) == [1]
    assert "ImageReadError" in result.errors[1] and "missing.jpg" in result.errors[1]
    assert torch.isnan(result.boxes[1]).all() and torch.isnan(result.embeddings[1]).all()
    assert torch.allclose(result.embeddings[[0, 2]].norm(dim=1), torch.ones(2), atol=1e-5)
    assert result.signature == sface_signature("detect") and result.model == "sface"
    # the landmarks are the detector's, in photo pixels (reference: the detector run on the full photo)
    full = get_detector().detect(perface.load_image(paths[0]).unsqueeze(0))[0][0]
    assert np.abs(result.landmarks[0].numpy() - full.landmarks).max() < 0.02 * _eye_distance(full.landmarks)
    assert np.abs(result.boxes[0].numpy() - full.box).max() < 0.05 * _eye_distance(full.landmarks)
    assert abs(float(result.detection_scores[0]) - full.score) < 0.01


def test_every_failure_kind_is_one_row(tmp_path, faces_dir):
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    sources = [np.full((64, 64, 3), 128, np.uint8), text, torch.full((3, 8, 8), 2.0), tmp_path]
    result = embed(sources, progress=False)
    assert result.ok.tolist() == [False] * 4 and set(result.errors) == {0, 1, 2, 3}
    assert "NoFaceError" in result.errors[0] and "InputRangeError" in result.errors[2]
    assert all(issubclass(t, Exception) for t in FAILURES)
    with pytest.raises(NoFaceError):
        embed([np.full((64, 64, 3), 128, np.uint8)], on_error="raise", progress=False)


def test_pre_aligned_crops_take_the_same_path(hopper, metric):
    """--aligned / align='arcface': no detection, NaN boxes, the crop-format signature."""
    crop = perface.align_faces(hopper, template="arcface", size=112)
    result = embed([crop[0]], metric, align="arcface", progress=False)
    assert torch.isnan(result.boxes).all() and result.ok.all()
    assert result.signature == sface_signature("arcface")
    with torch.no_grad():
        direct = metric.embed(crop)
    assert float(result.embeddings[0] @ direct[0]) > 0.999


def test_align_crops_matches_align_faces(faces_dir, tmp_path):
    from perface.embedding import align_crops

    crops, errors = align_crops([faces_dir / "obama.jpg", tmp_path / "gone.jpg"], "simceleba", 224, progress=False)
    assert crops[1] is None and list(errors) == [1]
    reference = perface.align_faces(faces_dir / "obama.jpg", template="simceleba", size=224)
    assert crops[0].shape == (1, 3, 224, 224) and torch.allclose(crops[0], reference, atol=1e-6)


# ---------------------------------------------------------------- fault 1: face_index per input


def test_face_index_applies_to_its_own_side(hopper, astronaut, faces_dir):
    """similarity(group, one-face photo, face_index_a=1) picks the second face of the group and
    leaves the one-face photo alone (it used to raise NoFaceError for it)."""
    group = torch.cat([hopper, astronaut], dim=-1)  # Grace Hopper (more prominent) and the astronaut
    second = perface.similarity(group, faces_dir / "astronaut.png", face_index_a=1)
    first = perface.similarity(group, faces_dir / "astronaut.png", face_index_a=0)
    # reference: the astronaut photo against itself is 1; Grace Hopper against the astronaut is low
    assert second > 0.95 and first < 0.5
    assert perface.similarity(faces_dir / "astronaut.png", group, face_index_b=1) == pytest.approx(second, abs=1e-5)
    lists = perface.similarity([group, group], faces_dir / "astronaut.png", face_index_a=[1, 0])
    assert lists.scores[0] > 0.95 and lists.scores[1] < 0.5
    beyond = perface.similarity([group], faces_dir / "astronaut.png", face_index_a=[5])
    assert "face_index_a[0]=5 but only 2 face(s)" in beyond.errors[0]
    with pytest.raises(NoFaceError, match="face_index_b=1"):
        perface.similarity(group, faces_dir / "astronaut.png", face_index_b=1)


def test_multi_face_warning_names_the_right_argument(hopper, faces_dir):
    both = torch.cat([hopper, hopper.flip(-1)], dim=-1)
    with pytest.warns(UserWarning, match="face_index_b=N"):
        perface.similarity(faces_dir / "grace_hopper.jpg", both)
    with pytest.warns(UserWarning, match="face_index_a=N"):
        perface.similarity(both, faces_dir / "grace_hopper.jpg")


# ---------------------------------------------------------------- fault 2: small faces, large photos


def _small_face_photo(hopper, path, canvas=(4500, 6000), face_px=100, at=(3100, 1900)):
    """``hopper`` scaled so that its face is ~``face_px`` wide, pasted on a grey canvas; the
    pasted pixels are returned as the reference photo."""
    face = perface.detect_faces(hopper)[0]
    scale = face_px / float(face.box[2] - face.box[0])
    small = F.interpolate(hopper[None], scale_factor=scale, mode="area")[0]
    small = (small.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    image = np.full(canvas + (3,), 120, np.uint8)
    y, x = at
    image[y : y + small.shape[0], x : x + small.shape[1]] = small
    Image.fromarray(image).save(path, quality=92)
    return small


@pytest.mark.slow
def test_small_face_in_a_large_photo_is_found(hopper, faces_dir, tmp_path):
    """A 100 px face in a 6000x4500 photo (10 px at the coarse 640 px pass) is found by the finer
    tiled pass and scores like the same pixels on their own."""
    small = _small_face_photo(hopper, tmp_path / "big.jpg")
    found = perface.detect_faces(tmp_path / "big.jpg")
    assert len(found) == 1 and 3100 < found[0].box[1] < 3100 + small.shape[0]
    big_score = perface.similarity(tmp_path / "big.jpg", faces_dir / "grace_hopper.jpg")
    alone = perface.similarity(small, faces_dir / "grace_hopper.jpg")
    assert big_score > 0.7 and abs(big_score - alone) < 0.05


@pytest.mark.slow
def test_tiled_detection_maps_back_to_input_pixels(faces_dir):
    """Tiles smaller than the photo: landmarks in input pixels, as the one-pass detection finds them."""
    detector = get_detector()
    image = perface.load_image(faces_dir / "obama.jpg")
    whole = detector.detect(image.unsqueeze(0), 0.5)[0][0]
    tiled = detector.detect_tiled(image, 0.5, tile=320, overlap=200)
    best = max(tiled, key=lambda f: f.prominence)
    assert np.abs(best.landmarks - whole.landmarks).max() < 0.05 * _eye_distance(whole.landmarks)


@pytest.mark.slow
def test_jpeg_decoded_at_reduced_scale_keeps_landmarks(faces_dir):
    """The draft decode of the coarse pass moves landmarks by < 2% of the eye distance against
    detection on the fully decoded photo (the previous pipeline), for every shared JPEG."""
    detector = get_detector()
    for name in ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg", "obama_partial_face.jpg"):
        photo = Photo(faces_dir / name)
        ours = find_faces(photo)[0]
        full = detector.detect(perface.load_image(faces_dir / name).unsqueeze(0))[0][0]
        assert np.abs(ours.landmarks - full.landmarks).max() < 0.02 * _eye_distance(full.landmarks), name


def test_photo_decodes_at_the_asked_scale(faces_dir):
    photo = Photo(faces_dir / "obama3.jpg")  # 1434 x 2333
    pixels, scale = photo.pixels(0.2)
    assert scale == 0.25 and pixels.dtype == torch.uint8 and tuple(pixels.shape) == (3, 584, 359)
    full = perface.load_image(faces_dir / "obama3.jpg")
    reference = F.avg_pool2d(F.pad(full[None], (0, 2, 0, 3), mode="replicate"), 4)[0]  # area resize by 4
    assert float((pixels.float() / 255 - reference).abs().mean()) < 2 / 255
    assert Photo(faces_dir / "obama3.jpg").pixels(1.0)[1] == 1.0


# ---------------------------------------------------------------- fault 3: rotated photos


@pytest.mark.parametrize(
    "quarter_turns", [1, pytest.param(2, marks=pytest.mark.slow), pytest.param(3, marks=pytest.mark.slow)]
)
def test_rotated_photo_scores_like_the_upright_one(faces_dir, quarter_turns):
    """obama.jpg turned by 90/180/270 degrees (no EXIF tag) scores against obama2.jpg as the
    upright photo does; upside down used to give collapsed landmarks and 0.17-0.32."""
    upright = perface.load_image(faces_dir / "obama.jpg")
    turned = torch.rot90(upright, quarter_turns, dims=(1, 2))
    reference = perface.similarity(upright, faces_dir / "obama2.jpg")
    score = perface.similarity(turned, faces_dir / "obama2.jpg")
    assert abs(score - reference) < 0.05, (score, reference)
    # and the landmarks are the upright ones, mapped into the turned photo
    back = perface.detect_faces(turned)[0]
    face = perface.detect_faces(upright)[0]
    h, w = upright.shape[-2:]
    x, y = face.landmarks[:, 0], face.landmarks[:, 1]
    expected = {1: np.stack([y, w - 1 - x], 1), 2: np.stack([w - 1 - x, h - 1 - y], 1), 3: np.stack([h - 1 - y, x], 1)}[
        quarter_turns
    ]
    assert np.abs(back.landmarks - expected).max() < 0.1 * _eye_distance(face.landmarks)


def test_collapsed_landmarks_are_named():
    """What RetinaFace returned for upside-down obama.jpg: eyes 15 px apart in a 240 px box."""
    box = np.array([100, 100, 340, 340], np.float32)
    collapsed = np.array([[215, 200], [230, 201], [222, 210], [214, 230], [229, 231]], np.float32)
    assert "apart" in implausible(Face(box, 0.88, collapsed))
    upright = template_points("arcface", 112) * 2 + 110
    assert implausible(Face(box, 0.99, upright.astype(np.float32))) is None
    with pytest.raises(NoFaceError, match="plausible landmarks"):
        choose_faces(Faces([], [(Face(box, 0.88, collapsed), implausible(Face(box, 0.88, collapsed)))]), None, "x")


# ---------------------------------------------------------------- fault 4: fixed-template conversions


def _scale_of(template: str, size: int) -> float:
    p = template_points(template, size)
    return float(np.linalg.norm(p[1] - p[0]))


@pytest.mark.parametrize("source", sorted(TEMPLATES))
@pytest.mark.parametrize("target", sorted(TEMPLATES))
def test_conversion_keeps_white_white(source, target):
    """An all-white crop stays white everywhere (>= 0.99) at 2x and 4x: the pooling grid lies on
    the crop's edges and the crop's own edge continues beyond it (analytic reference: 1)."""
    size = DEFAULT_SIZES[target] // (2 if target == "ffhq" else 1)
    for factor in (2, 4):
        side = round(factor * _scale_of(target, size) / _scale_of(source, 1))
        out = FixedAlign(source, target, size)(torch.ones(1, 3, side, side))
        assert float(out.min()) >= 0.99, (source, target, factor, float(out.min()))


def test_same_template_2x_and_4x_equal_a_plain_area_resize(faces_dir):
    """arcface 224 -> arcface 112 is an exact 2x area downscale (and 448 an exact 4x)."""
    crop = perface.align_faces(faces_dir / "obama.jpg", template="arcface", size=448)
    convert = FixedAlign("arcface", "arcface", 112)
    for side in (224, 448):
        x = F.interpolate(crop, size=(side, side), mode="area") if side != 448 else crop
        reference = F.avg_pool2d(x, side // 112)
        assert float((convert(x) - reference).abs().max()) < 1e-5


@pytest.mark.parametrize(
    "source, target",
    [  # the quick subset keeps the common case (FFHQ crops -> the ArcFace template); CI runs all
        pytest.param(s, t, marks=() if (s, t) == ("ffhq", "arcface") else pytest.mark.slow, id=f"{s}-{t}")
        for s in sorted(TEMPLATES)
        for t in sorted(TEMPLATES)
    ],
)
def test_conversion_matches_the_native_crop(source, target, faces_dir, metric):
    """Photo -> ``source`` crop (face 2x and 4x the target's scale) -> ``target`` by the fixed
    warp embeds like the photo aligned to ``target`` directly (cos >= 0.99)."""
    photo = perface.load_image(faces_dir / "obama.jpg")
    face = perface.detect_faces(photo)[0]
    size = DEFAULT_SIZES[target] // (2 if target == "ffhq" else 1)
    native = warp_affine(photo[None], similarity_transform(face.landmarks, template_points(target, size)), size)
    judge = perface.PerFace(align=target)
    for factor in (2, 4):
        side = round(factor * _scale_of(target, size) / _scale_of(source, 1))
        crop = warp_affine(photo[None], similarity_transform(face.landmarks, template_points(source, side)), side)
        converted = FixedAlign(source, target, size)(crop)
        with torch.no_grad():
            cos = float(judge.embed(converted)[0] @ judge.embed(native)[0])
        assert cos >= 0.99, (source, target, factor, cos)


# ---------------------------------------------------------------- fault 5: alignment per input


@pytest.mark.slow
def test_align_pair_converts_each_input_by_its_own_format(faces_dir):
    """The FAQ setup: an FFHQ crop against an ArcFace crop of the same face. One mode for both
    converted the ArcFace crop as if it were FFHQ (distance 0.45); the pair gets ~0."""
    photo = perface.load_image(faces_dir / "obama.jpg")
    face = perface.detect_faces(photo)[0]
    ffhq = warp_affine(photo[None], similarity_transform(face.landmarks, template_points("ffhq", 256)), 256)
    arcface = warp_affine(photo[None], similarity_transform(face.landmarks, template_points("arcface", 112)), 112)
    pair = perface.PerFace(align=("ffhq", "arcface"))
    assert pair.align_modes == ("ffhq", "arcface")
    assert "|align:ffhq,arcface|" in pair.signature
    with torch.no_grad():
        distance = float(pair(ffhq, arcface))
        reference = 1 - float(perface.PerFace(align="ffhq").embed(ffhq)[0] @ perface.PerFace().embed(arcface)[0])
        per_call = pair.embed(arcface, align="arcface")
    assert distance == pytest.approx(reference, abs=1e-5) and distance < 0.05
    assert torch.allclose(per_call, perface.PerFace().embed(arcface), atol=1e-6)
    with pytest.raises(ValueError, match="pair"):
        perface.PerFace(align=("ffhq", "arcface", "none"))
    with pytest.raises(ValueError, match="unknown align mode"):
        perface.PerFace(align=("ffhq", "dlib"))


# ---------------------------------------------------------------- fault 6: tensor edges


def test_empty_batch_gives_an_empty_result(metric):
    empty = torch.rand(0, 3, 112, 112)
    assert metric(empty, empty).shape == (0,)
    assert metric(empty, torch.rand(1, 3, 112, 112)).shape == (0,)
    assert metric.embed(empty).shape == (0, 128)


def test_mismatched_batches_fail_before_any_work(metric, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("the network ran before the batch sizes were checked")

    monkeypatch.setattr(metric.net, "forward", no_work)
    with pytest.raises(ValueError, match="2 images and y has 3"):
        metric(torch.rand(2, 3, 112, 112), torch.rand(3, 3, 112, 112))


@pytest.mark.parametrize("bad, word", [(float("nan"), "NaN"), (float("inf"), "infinite")])
def test_nan_and_inf_are_named(metric, bad, word):
    x = torch.rand(1, 3, 112, 112)
    x[0, 0, 5, 5] = bad
    with pytest.raises(InputRangeError, match=f"1 {word}"):
        metric(x, torch.rand(1, 3, 112, 112))


def test_no_file_handle_left_open(faces_dir, tmp_path):
    data = (faces_dir / "grace_hopper.jpg").read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 3])
    gif = tmp_path / "two.gif"
    frames = [Image.open(faces_dir / "grace_hopper.jpg").convert("P"), Image.new("P", (512, 512))]
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ImageReadError):
            perface.load_image(truncated)
        perface.load_image(gif)
        embed([truncated, gif], progress=False)
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


# ---------------------------------------------------------------- HEIC


def test_heic_photos_read_through_pillow_heif(faces_dir, tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    assert {".heic", ".heif"} <= IMAGE_SUFFIXES
    path = tmp_path / "hopper.heic"
    Image.open(faces_dir / "grace_hopper.jpg").save(path, quality=95)
    reference = perface.load_image(faces_dir / "grace_hopper.jpg")
    assert float((perface.load_image(path) - reference).abs().mean()) < 0.02
    assert perface.similarity(path, faces_dir / "grace_hopper.jpg") > 0.97


def test_heic_without_pillow_heif_names_the_extra(faces_dir, tmp_path, monkeypatch):
    import sys

    path = tmp_path / "photo.heic"
    path.write_bytes(b"\x00\x00\x00\x1cftypheic" + bytes(64))
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # import fails as if not installed
    with pytest.raises(ImageReadError, match=r'pip install "perface\[heic\]"'):
        perface.load_image(path)


# ---------------------------------------------------------------- speed paths give the same numbers


@pytest.mark.slow
def test_photo_threads_give_the_one_at_a_time_result(faces_dir, tmp_path, metric):
    """With 2 torch threads, photos are read, detected and aligned one per thread: the rows,
    failures and order are those of embedding each photo on its own (the plain path), and the
    caller's thread count is kept."""
    paths = [
        faces_dir / "obama.jpg",
        tmp_path / "missing.jpg",
        faces_dir / "astronaut.png",
        faces_dir / "biden.jpg",
        faces_dir / "obama2_rgba.png",
    ]
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        result = embed(paths, metric, progress=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert result.source.tolist() == [0, 1, 2, 3, 4] and list(result.errors) == [1]
    for i, path in enumerate(paths):
        if i == 1:
            continue
        alone = embed([path], metric, progress=False)  # one input: no threads
        assert float(result.embeddings[i] @ alone.embeddings[0]) > 0.99999, path.name
        assert torch.allclose(result.landmarks[i], alone.landmarks[0], atol=1e-3)


def test_frozen_network_follows_the_metric(metric):
    """The embedding stage's frozen copy of the network (BatchNorm folded, oneDNN) gives
    metric.embed's embeddings, and is remade when the weights change in place."""
    from perface.embedding import _embed_crops
    from perface.model import PerFace

    crops = torch.rand(3, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(_embed_crops(metric, crops), metric.embed(crops), atol=1e-5)
    tuned = PerFace()
    with torch.no_grad():
        before = _embed_crops(tuned, crops)
        tuned.net.fc.weight.mul_(-1.0)  # in place, as a training step would
        after = _embed_crops(tuned, crops)
        assert torch.allclose(after, tuned.embed(crops), atol=1e-5)
    assert float((before * after).sum(1).max()) < 0.5


def test_face_index_all_lists_a_small_face_beside_a_large_one(hopper):
    """face_index=None may skip RetinaFace's finest level; "all" and ranks >= 1 must not: a
    30 px face beside a 150 px one is listed (reference: where each face was pasted)."""
    face = get_detector().detect(hopper.unsqueeze(0))[0][0]
    canvas = torch.full((3, 480, 640), 0.47)
    x = 10
    for side in (150, 30):
        scale = side / float(face.box[2] - face.box[0])
        small = F.interpolate(hopper[None], scale_factor=scale, mode="area")[0]
        canvas[:, 20 : 20 + small.shape[1], x : x + small.shape[2]] = small
        small_at, x = x, x + small.shape[2] + 10
    every = embed([canvas], face_index="all", progress=False)
    assert len(every) == 2 and every.boxes[1, 0] > small_at - 5
    second = embed([canvas], face_index=1, progress=False)
    assert torch.allclose(second.boxes[0], every.boxes[1])
    first = embed([canvas], progress=False)
    assert torch.allclose(first.embeddings[0], every.embeddings[0], atol=1e-5)


def test_opaque_rgba_photo_reads_as_its_rgb(faces_dir, tmp_path):
    """An RGBA PNG whose alpha is 255 everywhere skips compositing and gives the RGB pixels;
    a transparent pixel is still composited on white."""
    rgb = Image.open(faces_dir / "grace_hopper.jpg").convert("RGB")
    rgba = rgb.convert("RGBA")
    rgba.save(tmp_path / "opaque.png")
    reference = torch.from_numpy(np.array(rgb)).permute(2, 0, 1)
    pixels, _ = Photo(tmp_path / "opaque.png").pixels()
    assert torch.equal(pixels, reference)
    rgba.putpixel((0, 0), (0, 0, 0, 0))
    rgba.save(tmp_path / "hole.png")
    pixels, _ = Photo(tmp_path / "hole.png").pixels()
    assert pixels[:, 0, 0].tolist() == [255, 255, 255] and torch.equal(pixels[:, 1:, 1:], reference[:, 1:, 1:])
