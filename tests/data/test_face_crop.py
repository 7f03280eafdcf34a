"""Face crop: the box rules, the fallback, the cache key, and `automl check --show-crops`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from automl.cli import app
from automl.data import face_crop
from automl.data.cache import ImageSets
from automl.data.face_crop import WHOLE_IMAGE, FaceCrop, choose_face, learn_prior, locate, prepare_image
from automl.errors import AutomlError
from tests.conftest import write_image

PRIOR = (0.25, 0.2, 0.75, 0.7)


def automl(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output + (result.stderr or "")


@pytest.mark.parametrize("kind", ["noise", "blank"])
def test_no_face_falls_back_to_the_prior_box(kind: str) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (200, 160, 3), dtype=np.uint8) if kind == "noise" else np.full((200, 160, 3), 128)
    result = locate(image.astype(np.uint8), FaceCrop("face", 0.1, PRIOR))
    assert result.detected is None and result.fell_back
    # The prior in pixels (40, 40, 120, 140), widened by 10% of its 80 x 100 size on each side.
    assert result.box == (32, 30, 128, 150)
    assert locate(image.astype(np.uint8), FaceCrop("center", 0.1, PRIOR)) == face_crop.CropResult((32, 30, 128, 150))


def test_margin_is_clamped_to_the_photo_and_none_keeps_it_whole() -> None:
    image = np.zeros((100, 80, 3), dtype=np.uint8)
    assert locate(image, FaceCrop("center", 1.0, PRIOR)).box == (0, 0, 80, 100)
    assert locate(image, FaceCrop("none", 0.5, PRIOR)).box == (0, 0, 80, 100)


def test_a_detected_face_is_used_and_widened(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(face_crop, "detect_faces", lambda image: [(50, 40, 110, 100)])
    result = locate(np.zeros((200, 160, 3), dtype=np.uint8), FaceCrop("face", 0.5, PRIOR))
    assert result.detected == (50, 40, 110, 100) and not result.fell_back
    assert result.box == (20, 10, 140, 130)


def test_the_choice_prefers_the_face_near_the_prior_and_rejects_tiny_or_far_ones() -> None:
    width, height = 200, 200  # prior in pixels: (50, 40, 150, 140), centre (100, 90)
    near, off_centre = (55, 45, 145, 135), (0, 0, 90, 90)
    assert choose_face([off_centre, near], PRIOR, width, height) == near
    assert choose_face([(95, 85, 105, 95)], PRIOR, width, height) is None  # tiny: 10 px next to a 100 px prior
    assert choose_face([(110, 100, 200, 200)], PRIOR, width, height) is None  # far: its centre is off the prior
    assert choose_face([], PRIOR, width, height) is None


def test_bad_settings_are_clear_errors() -> None:
    with pytest.raises(AutomlError, match="unknown face_crop 'oval'; allowed: none, center, face"):
        FaceCrop("oval")
    with pytest.raises(AutomlError, match="margin 1.5 is out of range"):
        FaceCrop("face", 1.5)
    with pytest.raises(AutomlError, match="x0 < x1"):
        FaceCrop("center", 0.2, (0.8, 0.1, 0.2, 0.9))


def test_cache_key_changes_with_mode_margin_and_box(tmp_path: Path) -> None:
    image = write_image(tmp_path / "a.png", size=(64, 80))
    crops = [
        FaceCrop(),
        FaceCrop("center", 0.2, PRIOR),
        FaceCrop("face", 0.2, PRIOR),
        FaceCrop("face", 0.3, PRIOR),
        FaceCrop("face", 0.3, (0.2, 0.2, 0.8, 0.8)),
    ]
    sets = ImageSets(tmp_path / "home", 32, [image])
    assert len({sets.set_path(crop) for crop in crops}) == len(crops)
    # `none` is the whole photo, whatever its margin says.
    assert sets.set_path(FaceCrop("none", 0.7)) == sets.set_path(FaceCrop())


def test_cache_holds_exactly_what_prepare_image_computes(tmp_path: Path) -> None:
    paths = [write_image(tmp_path / f"{k}.jpg", seed=k, size=(90, 120)) for k in range(3)]
    crop = FaceCrop("face", 0.25, PRIOR)
    arrays = ImageSets(tmp_path / "home", 32, paths).get(crop)
    again = ImageSets(tmp_path / "home", 32, paths).get(crop)
    for path, cached, reread in zip(paths, arrays, again, strict=True):
        fresh = prepare_image(path, 32, crop)
        assert np.array_equal(cached, fresh) and np.array_equal(reread, fresh)
        assert fresh.shape[:2] == (42, 32)  # the 45 x 60 px prior, widened by 25% a side: 68 x 90, short side 32
    sets = ImageSets(tmp_path / "home", 32, paths)
    assert sets.get(crop)[0] is sets.get(crop)[0]  # memoised
    assert sets.get(FaceCrop())[0].shape[:2] == (43, 32)


def test_prior_of_faceless_images_is_the_whole_image(tmp_path: Path) -> None:
    paths = [write_image(tmp_path / f"{k}.png", seed=k, size=(64, 80)) for k in range(5)]
    prior = learn_prior(paths)
    assert (prior.box, prior.faces, prior.sampled, prior.learned) == (WHOLE_IMAGE, 0, 5, False)


def test_learned_prior_is_the_median_detected_box(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = [write_image(tmp_path / f"{k}.png", seed=k, size=(100, 100)) for k in range(3)]
    boxes = iter([[(10, 10, 50, 50)], [(20, 30, 60, 70), (0, 0, 5, 5)], [(30, 20, 90, 80)]])
    monkeypatch.setattr(face_crop, "detect_faces", lambda image: next(boxes))
    prior = learn_prior(paths)
    assert prior.box == (0.2, 0.2, 0.6, 0.7) and prior.faces == 3 and prior.learned


def test_show_crops_writes_a_contact_sheet(competition: Path, tmp_path: Path) -> None:
    out = tmp_path / "sheet.png"
    code, text = automl("check", "--data", competition, "--home", tmp_path / "home", "--show-crops", "5", "--out", out)
    assert code == 0, text
    flat = " ".join(text.split())
    assert "so 'face' keeps the prior box" in flat  # noise photos: no prior learned, so no detector crops
    assert "the whole image: only 0 faces in 42 sampled" in flat
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
    ],
)
def test_show_crops_bad_values_exit_2(competition: Path, tmp_path: Path, option: str, value: str, words: str) -> None:
    out = tmp_path / "sheet.png"
    code, text = automl(
        "check", "--data", competition, "--home", tmp_path / "home", "--show-crops", "2", option, value, "--out", out
    )
    assert code == 2 and words in " ".join(text.split()), text
    assert not out.exists()


def test_detection_is_the_same_on_threads_as_in_sequence(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from automl.data.demo import write_demo_data
    from automl.data.face_crop import detect_faces
    from automl.data.images import decode_image, is_image_file

    demo = write_demo_data(tmp_path / "demo", people=3, seed=1, eval_people=0)
    photos = [decode_image(p) for p in sorted((demo / "train" / "images").rglob("*")) if is_image_file(p)]
    alone = [detect_faces(photo) for photo in photos]
    assert any(alone)  # the cascade finds some synthetic faces, so a mix-up between threads would show
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(detect_faces, photos)) == alone


def test_face_keeps_the_prior_when_the_photos_are_already_face_crops(monkeypatch: pytest.MonkeyPatch) -> None:
    # A prior covering most of the photo (real face crops: about 0.93 x 0.81) means the photos are tight already;
    # the detector's box there is often a masked face's upper half, so `face` keeps the prior.
    monkeypatch.setattr(face_crop, "detect_faces", lambda image: [(30, 30, 70, 70)])
    tight = (0.05, 0.0, 0.95, 0.8)
    result = locate(np.zeros((100, 100, 3), dtype=np.uint8), FaceCrop("face", 0.0, tight))
    assert result.detected is None and result.fell_back and result.box == (5, 0, 95, 80)
    assert locate(np.zeros((100, 100, 3), dtype=np.uint8), FaceCrop("face", 0.0, PRIOR)).detected == (30, 30, 70, 70)
