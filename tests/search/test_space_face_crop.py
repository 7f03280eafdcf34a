"""The face crop as a search parameter: the task spaces search it, and bad values name what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from automl.data.face_crop import FaceCrop
from automl.errors import AutomlError
from automl.search.space import SPACES_DIR, load_space

QUICK = SPACES_DIR / "quick.yaml"


@pytest.mark.parametrize("name", ["mask", "gender", "age", "all", "generic"])
def test_task_spaces_search_the_face_crop(name: str) -> None:
    spec = load_space(SPACES_DIR / f"{name}.yaml").params["face_crop"]
    assert spec.values == ("none", "center", "face", "aligned")


def test_pinned_face_crop_reaches_the_params() -> None:
    overrides = ("face_crop=center", "face_crop_margin=0.3", "face_crop_box=[0.2, 0.1, 0.8, 0.7]")
    params = load_space(QUICK, overrides).fixed_params()
    assert (params.face_crop, params.face_crop_margin, params.face_crop_box) == ("center", 0.3, (0.2, 0.1, 0.8, 0.7))
    assert params.image_crop.key() == "center-m0.3000-b0.2000,0.1000,0.8000,0.7000"


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("face_crop=oval", "one of: none, center, face, aligned, haar"),
        ("face_crop_threshold=0", "within (0, 1]"),
        ("face_crop_pick=first", "one of: central, largest"),
        ("face_crop_margin=1.5", "within [0, 1]"),
        ("face_crop_box=[0.8, 0.1, 0.2, 0.7]", "x0 < x1"),
        ("face_crop_box=[0.1, 0.2]", "x0 < x1"),
    ],
)
def test_bad_face_crop_values_are_refused(override: str, words: str) -> None:
    with pytest.raises(AutomlError, match="face_crop") as raised:
        load_space(QUICK, (override,))
    assert words in str(raised.value)


def test_the_space_lists_every_crop_it_can_draw_and_whether_it_detects_faces() -> None:
    space = load_space(SPACES_DIR / "mask.yaml")
    assert {c.mode for c in space.face_crops()} == {"none", "center", "face", "aligned"}
    assert space.needs_face_detector()
    overrides = ("face_crop=aligned", "face_crop_margin=0.1", "face_crop_pick=largest", "face_crop_threshold=0.3")
    assert load_space(QUICK, overrides).face_crops() == [FaceCrop("aligned", 0.1, None, 0.3, "largest")]
    assert not load_space(QUICK).needs_face_detector()  # no face crop
    pinned = ("face_crop=center", "face_crop_box=[0.2, 0.1, 0.8, 0.7]")
    assert not load_space(QUICK, pinned).needs_face_detector()  # a pinned prior: nothing to detect
    assert load_space(QUICK, ("face_crop=center",)).needs_face_detector()  # a prior to learn


def test_a_searched_threshold_is_cached_when_a_trial_draws_it(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(QUICK.read_text() + "  face_crop: aligned\n  face_crop_threshold: {low: 0.1, high: 0.5}\n")
    searched = load_space(space)
    assert searched.needs_face_detector() and searched.face_crops() == []
