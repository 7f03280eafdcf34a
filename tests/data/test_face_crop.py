"""Face crop: the box rules, the fallback, the aligned crop, the cache key, and `automl check --show-crops`."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from automl.cli import app
from automl.data import face_crop
from automl.data.cache import ImageSets
from automl.data.face_crop import (
    WHOLE_IMAGE,
    FaceCrop,
    aligned_corners,
    choose_face,
    crop_image,
    learn_prior,
    locate,
    prepare_image,
)
from automl.data.face_detector import Face
from automl.errors import AutomlError
from tests.conftest import write_image

PRIOR = (0.25, 0.2, 0.75, 0.7)


def automl(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output + (result.stderr or "")


def faces(*boxes: tuple[int, int, int, int]) -> list[Face]:
    return [Face(box, 0.9) for box in boxes]


@pytest.mark.parametrize("mode", ["face", "aligned"])
def test_no_face_falls_back_to_the_prior_box(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(face_crop, "detect_faces", lambda image, side, threshold: [])
    image = np.random.default_rng(0).integers(0, 255, (200, 160, 3), dtype=np.uint8)
    result = locate(image, FaceCrop(mode, 0.1, PRIOR))
    assert result.face is None and result.fell_back and result.corners is None
    # The prior in pixels (40, 40, 120, 140), widened by 10% of its 80 x 100 size on each side.
    assert result.box == (32, 30, 128, 150)
    assert locate(image, FaceCrop("center", 0.1, PRIOR)) == face_crop.CropResult((32, 30, 128, 150))


def test_margin_is_clamped_to_the_photo_and_none_keeps_it_whole() -> None:
    image = np.zeros((100, 80, 3), dtype=np.uint8)
    assert locate(image, FaceCrop("center", 1.0, PRIOR)).box == (0, 0, 80, 100)
    assert locate(image, FaceCrop("none", 0.5, PRIOR)).box == (0, 0, 80, 100)


def test_a_detected_face_is_used_and_widened(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = []

    def detect(image: np.ndarray, side: float, threshold: float) -> list[Face]:
        asked.append((side, threshold))
        return faces((50, 40, 110, 100))

    monkeypatch.setattr(face_crop, "detect_faces", detect)
    result = locate(np.zeros((200, 160, 3), dtype=np.uint8), FaceCrop("face", 0.5, PRIOR, threshold=0.3))
    assert result.face == Face((50, 40, 110, 100), 0.9) and not result.fell_back
    assert result.box == (20, 10, 140, 130)
    assert asked == [(100, 0.3)]  # YuNet looks for a face the prior's size (80 x 100 px), at the crop's threshold


def test_the_pick_chooses_among_faces_and_tiny_or_far_ones_are_rejected() -> None:
    width, height = 200, 200  # prior in pixels: (50, 40, 150, 140), centre (100, 90)
    near, large_off_centre = Face((60, 50, 140, 130), 0.9), Face((20, 10, 140, 130), 0.8)
    assert choose_face([large_off_centre, near], PRIOR, width, height, "central") == near
    assert choose_face([near, large_off_centre], PRIOR, width, height, "largest") == large_off_centre
    assert choose_face(faces((95, 85, 105, 95)), PRIOR, width, height) is None  # tiny: 10 px next to a 100 px prior
    assert choose_face(faces((110, 100, 200, 200)), PRIOR, width, height) is None  # far: its centre is off the prior
    assert choose_face([], PRIOR, width, height) is None


def test_aligned_corners_follow_the_eye_line_and_scale_with_the_eye_distance() -> None:
    level = Face((0, 0, 100, 100), 0.9, ((40.0, 50.0), (60.0, 50.0)))  # eyes 20 px apart, level
    top_left, top_right, bottom_right, bottom_left = aligned_corners(level, 0.0)
    width, height = 20 * face_crop.ALIGNED_WIDTH, 20 * face_crop.ALIGNED_HEIGHT
    assert top_left == pytest.approx((50 - width / 2, 50 - 20 * face_crop.EYES_BELOW_TOP))
    assert top_right == pytest.approx((50 + width / 2, top_left[1]))
    assert bottom_right == pytest.approx((top_right[0], top_left[1] + height))
    assert bottom_left == pytest.approx((top_left[0], top_left[1] + height))
    wider = aligned_corners(level, 0.5)
    assert math.dist(wider[0], wider[1]) == pytest.approx(2 * width)  # the margin widens it like a box
    tilted = Face((0, 0, 100, 100), 0.9, ((40.0, 40.0), (60.0, 60.0)))  # the eye line at 45 degrees
    corners = aligned_corners(tilted, 0.0)
    edge = np.subtract(corners[1], corners[0])
    assert math.degrees(math.atan2(edge[1], edge[0])) == pytest.approx(45)
    assert math.dist(corners[0], corners[1]) == pytest.approx(math.hypot(20, 20) * face_crop.ALIGNED_WIDTH)
    assert aligned_corners(Face((0, 0, 10, 10), 0.9), 0.2) is None  # no landmarks (Haar)


def test_aligned_crop_turns_the_face_upright(monkeypatch: pytest.MonkeyPatch) -> None:
    image = np.zeros((200, 200, 3), dtype=np.uint8)
    image[90:110, 60:140] = 255  # a bar along the eye line, tilted below by a rotation of the whole photo
    tilted = np.asarray(Image.fromarray(image).rotate(30, center=(100, 100)))
    eyes = [(100 + 20 * math.cos(a), 100 + 20 * math.sin(a)) for a in (math.radians(150), math.radians(-30))]
    face = Face((60, 60, 140, 140), 0.9, tuple(eyes))  # rotate(30) turns counter-clockwise: the right eye is low
    monkeypatch.setattr(face_crop, "detect_faces", lambda image, side, threshold: [face])
    cropped, result = crop_image(tilted, FaceCrop("aligned", 0.0, PRIOR))
    assert result.corners is not None and result.face == face
    assert cropped.shape[:2] == (round(40 * face_crop.ALIGNED_HEIGHT), round(40 * face_crop.ALIGNED_WIDTH))
    rows = np.flatnonzero(cropped[..., 0].mean(axis=1) > 127)  # the bar is level again: whole rows of white
    assert 10 <= len(rows) <= 24 and rows.max() - rows.min() == len(rows) - 1


def test_bad_settings_are_clear_errors() -> None:
    with pytest.raises(AutomlError, match="unknown face_crop 'oval'; allowed: none, center, face, aligned, haar"):
        FaceCrop("oval")
    with pytest.raises(AutomlError, match="margin 1.5 is out of range"):
        FaceCrop("face", 1.5)
    with pytest.raises(AutomlError, match="x0 < x1"):
        FaceCrop("center", 0.2, (0.8, 0.1, 0.2, 0.9))
    with pytest.raises(AutomlError, match="threshold 0 is out of range"):
        FaceCrop("face", threshold=0.0)
    with pytest.raises(AutomlError, match="unknown face_crop_pick 'biggest'; allowed: central, largest"):
        FaceCrop("face", pick="biggest")


def test_cache_key_changes_with_what_the_mode_reads(tmp_path: Path) -> None:
    image = write_image(tmp_path / "a.png", size=(64, 80))
    crops = [
        FaceCrop(),
        FaceCrop("center", 0.2, PRIOR),
        FaceCrop("face", 0.2, PRIOR),
        FaceCrop("face", 0.3, PRIOR),
        FaceCrop("face", 0.3, (0.2, 0.2, 0.8, 0.8)),
        FaceCrop("face", 0.3, PRIOR, threshold=0.5),
        FaceCrop("face", 0.3, PRIOR, pick="largest"),
        FaceCrop("aligned", 0.3, PRIOR),
        FaceCrop("haar", 0.3, PRIOR),
    ]
    sets = ImageSets(tmp_path / "home", 32, [image])
    assert len({sets.set_path(crop) for crop in crops}) == len(crops)
    assert FaceCrop("center", 0.2, PRIOR, threshold=0.5, pick="largest").key() == FaceCrop("center", 0.2, PRIOR).key()
    assert "yunet_2026may" in FaceCrop("aligned", 0.3, PRIOR).key()  # another detector model: other sets
    # `none` is the whole photo, whatever its margin says.
    assert sets.set_path(FaceCrop("none", 0.7)) == sets.set_path(FaceCrop())


def test_which_crops_need_the_detector() -> None:
    assert not FaceCrop().needs_detector and not FaceCrop("center", 0.2, PRIOR).needs_detector
    assert FaceCrop("center").needs_detector  # the prior box is learned with it
    assert FaceCrop("face", 0.2, PRIOR).needs_detector and FaceCrop("aligned", 0.2, PRIOR).needs_detector
    assert not FaceCrop("haar", 0.2, PRIOR).needs_detector


def test_cache_holds_exactly_what_prepare_image_computes(tmp_path: Path, yunet: Path) -> None:
    paths = [write_image(tmp_path / f"{k}.jpg", seed=k, size=(90, 120)) for k in range(3)]
    crop = FaceCrop("aligned", 0.25, PRIOR)
    arrays = ImageSets(tmp_path / "home", 32, paths).get(crop)
    again = ImageSets(tmp_path / "home", 32, paths).get(crop)
    for path, cached, reread in zip(paths, arrays, again, strict=True):
        fresh = prepare_image(path, 32, crop)
        assert np.array_equal(cached, fresh) and np.array_equal(reread, fresh)
        assert fresh.shape[:2] == (42, 32)  # noise, no face: the 45 x 60 px prior widened by 25% a side, 68 x 90
    sets = ImageSets(tmp_path / "home", 32, paths)
    assert sets.get(crop)[0] is sets.get(crop)[0]  # memoised
    assert sets.get(FaceCrop())[0].shape[:2] == (43, 32)


def test_prior_of_faceless_images_is_the_whole_image(tmp_path: Path, yunet: Path) -> None:
    paths = [write_image(tmp_path / f"{k}.png", seed=k, size=(64, 80)) for k in range(5)]
    prior = learn_prior(paths)
    assert (prior.box, prior.faces, prior.sampled, prior.learned) == (WHOLE_IMAGE, 0, 5, False)


def test_learned_prior_is_the_median_of_the_best_faces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = [write_image(tmp_path / f"{k}.png", seed=k, size=(100, 100)) for k in range(3)]
    found = iter([faces((10, 10, 50, 50)), faces((20, 30, 60, 70), (0, 0, 5, 5)), faces((30, 20, 90, 80))])
    monkeypatch.setattr(face_crop, "detect_faces", lambda image, side, threshold: next(found))
    prior = learn_prior(paths)
    assert prior.box == (0.2, 0.2, 0.6, 0.7) and prior.faces == 3 and prior.learned


def test_show_crops_writes_a_contact_sheet(competition: Path, tmp_path: Path, yunet: Path) -> None:
    out = tmp_path / "sheet.png"
    code, text = automl(
        "check", "--data", competition, "--home", tmp_path / "home", "--show-crops", "5", "--out", out,
        "--face-crop", "aligned",
    )  # fmt: skip
    assert code == 0, text
    flat = " ".join(text.split())
    assert re.search(r"the whole image: only \d faces in 42 sampled", flat)  # noise photos: no prior to learn
    assert "face detected and used in 0 of 5 images" in flat
    with Image.open(out) as sheet:
        assert sheet.format == "PNG" and sheet.width > sheet.height > 0
    code, text = automl(
        "check", "--data", competition, "--home", tmp_path / "home", "--show-crops", "3",
        "--face-crop", "center", "--face-crop-box", "0.1,0.1,0.9,0.9",
    )  # fmt: skip
    assert code == 0, text
    assert (tmp_path / "home" / "crops" / "data-center.png").is_file()


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("--face-crop", "oval", "unknown face_crop 'oval'"),
        ("--face-crop-margin", "1.5", "margin 1.5 is out of range"),
        ("--face-crop-margin", "-0.1", "out of range"),
        ("--face-crop-box", "0.1,0.2", "four shares"),
        ("--face-crop-box", "0.9,0.1,0.2,0.8", "x0 < x1"),
        ("--face-crop-threshold", "1.5", "threshold 1.5 is out of range"),
        ("--face-crop-pick", "first", "unknown face_crop_pick 'first'"),
    ],
)
def test_show_crops_bad_values_exit_2(competition: Path, tmp_path: Path, option: str, value: str, words: str) -> None:
    out = tmp_path / "sheet.png"
    code, text = automl(
        "check", "--data", competition, "--home", tmp_path / "home", "--show-crops", "2", option, value, "--out", out
    )
    assert code == 2 and words in " ".join(text.split()), text
    assert not out.exists()


def test_detection_is_the_same_on_threads_as_in_sequence(tmp_path: Path, yunet: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from automl.data.demo import write_demo_data
    from automl.data.face_detector import detect_faces
    from automl.data.images import decode_image, is_image_file

    demo = write_demo_data(tmp_path / "demo", people=2, seed=1, eval_people=0)
    photos = [decode_image(p) for p in sorted((demo / "train" / "images").rglob("*")) if is_image_file(p)]
    alone = [detect_faces(photo, 230, 0.1) for photo in photos]
    assert sum(map(bool, alone)) >= len(photos) - 2  # YuNet finds the drawn faces, so a mix-up would show
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda photo: detect_faces(photo, 230, 0.1), photos)) == alone


def test_haar_keeps_the_prior_when_the_photos_are_already_face_crops(monkeypatch: pytest.MonkeyPatch) -> None:
    # A prior covering most of the photo (real face crops: about 0.93 x 0.81) means the photos are tight already;
    # the cascade's box there is often a masked face's upper half, so `haar` keeps the prior.
    monkeypatch.setattr(face_crop, "haar_faces", lambda image: faces((30, 30, 70, 70)))
    tight = (0.05, 0.0, 0.95, 0.8)
    result = locate(np.zeros((100, 100, 3), dtype=np.uint8), FaceCrop("haar", 0.0, tight))
    assert result.face is None and result.fell_back and result.box == (5, 0, 95, 80)
    assert locate(np.zeros((100, 100, 3), dtype=np.uint8), FaceCrop("haar", 0.0, PRIOR)).face.box == (30, 30, 70, 70)
