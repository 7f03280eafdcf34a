"""Reading each layout into the one table, tasks, label fixes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from automl.data.dataset import DataSource, load_dataset
from automl.data.tasks import AgeTask, age_class_names, age_groups, parse_age_bins
from automl.errors import AutomlError, DataError
from tests.conftest import person, write_competition, write_image

CROPS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "face-mask-crops" / "labels.csv"


def test_competition_layout_reads_one_row_per_photo(competition: Path) -> None:
    (competition / "train" / "images" / "000000_male_Asian_20" / "._mask1.jpg").write_bytes(b"\0" * 64)
    dataset = load_dataset(DataSource(competition))
    train = dataset.train
    assert dataset.layout == "competition"
    assert len(train) == 42 and dataset.num_groups == 6
    assert list(train.columns[:3]) == ["image_id", "path", "group"]
    assert set(dataset.tasks) == {"mask", "gender", "age", "all"}
    one = train[train["group"] == "000000_male_Asian_20"].set_index("image_id")
    assert one.loc["000000_male_Asian_20/incorrect_mask", "mask"] == "incorrect"
    assert one.loc["000000_male_Asian_20/normal", "mask"] == "not_wear"
    assert (one["mask"] == "wear").sum() == 5 and (one["gender"] == "male").all() and (one["age"] == 20).all()
    assert list(dataset.eval["image_id"]) == ["e0.png", "e1.png", "e2.png"]


def test_eval_keeps_info_csv_order(competition: Path) -> None:
    (competition / "eval" / "info.csv").write_text("ImageID,ans\ne2.png,0\ne0.png,0\ne1.png,0\n")
    assert list(load_dataset(DataSource(competition)).eval["image_id"]) == ["e2.png", "e0.png", "e1.png"]


def test_all_task_is_mask_gender_age_code(competition: Path) -> None:
    dataset = load_dataset(DataSource(competition))
    train = dataset.train
    expected = (
        dataset.task("mask").labels(train) * 6
        + dataset.task("gender").labels(train) * 3
        + dataset.task("age").labels(train)
    )
    assert np.array_equal(dataset.task("all").labels(train), expected)
    assert dataset.task("all").num_classes == 18
    assert dataset.task("all").classes[17] == "not_wear/female/>=60"


def test_age_bins_are_a_setting() -> None:
    assert age_class_names((30, 60)) == ("<30", "30-59", ">=60")
    assert list(age_groups(np.array([18, 29, 30, 59, 60]), (30, 60))) == [0, 0, 1, 1, 2]
    assert list(age_groups(np.array([24, 25, 39, 40]), (25, 40))) == [0, 1, 1, 2]
    assert AgeTask(bins=(25, 40)).classes == ("<25", "25-39", ">=40")
    assert parse_age_bins("25,40") == (25, 40)
    for bad in ("30;60", "60,30", ""):
        with pytest.raises(AutomlError, match="age-bins"):
            parse_age_bins(bad)


def test_unknown_task_names_the_choices(competition: Path) -> None:
    with pytest.raises(AutomlError, match="choose one of: mask, gender, age, all"):
        load_dataset(DataSource(competition)).task("race")


def test_real_face_crops_csv() -> None:
    if not CROPS.exists():
        pytest.skip("shared face-mask-crops data not present")
    dataset = load_dataset(DataSource(CROPS, label_columns=("mask",), group_column="group"))
    assert len(dataset.train) == 1783
    assert dataset.task("mask").classes == ("wear", "incorrect", "not_wear")
    assert list(np.bincount(dataset.task("mask").labels(dataset.train))) == [1468, 69, 246]
    assert dataset.num_groups < 1783


def test_csv_defaults_label_columns_to_text_columns(tmp_path: Path) -> None:
    for k in range(4):
        write_image(tmp_path / "img" / f"{k}.png", seed=k)
    (tmp_path / "labels.csv").write_text(
        "path,kind,width,group\nimg/0.png,a,12,g0\nimg/1.png,b,12,g0\nimg/2.png,a,12,g1\nimg/3.png,b,12,g2\n"
    )
    dataset = load_dataset(DataSource(tmp_path / "labels.csv"))
    assert dataset.label_columns == ("kind",)
    assert list(dataset.train["group"]) == ["g0", "g0", "g1", "g2"]
    assert dataset.task("kind").classes == ("a", "b")


def test_image_folder_layout(tmp_path: Path) -> None:
    for cls, n in (("cat", 3), ("dog", 2)):
        for k in range(n):
            write_image(tmp_path / "pets" / cls / f"{k}.jpg", seed=k)
    (tmp_path / "pets" / "cat" / "._0.jpg").write_bytes(b"junk")
    dataset = load_dataset(DataSource(tmp_path / "pets"))
    assert dataset.layout == "folder"
    assert len(dataset.train) == 5 and dataset.num_groups == 5
    assert list(np.bincount(dataset.task("label").labels(dataset.train))) == [3, 2]


def test_label_fixes_apply_and_summarise(competition: Path, tmp_path: Path) -> None:
    fixes = tmp_path / "fixes.csv"
    fixes.write_text(
        "id,field,value\n"
        "000001,gender,male\n"  # a person by id: 7 photos change
        "000002_female_Asian_60/normal,mask,incorrect\n"  # one photo by image id
        "000004,age,45\n"  # already 45: changes nothing
        "999999,gender,male\n"  # not in the data
    )
    dataset = load_dataset(DataSource(competition, label_fixes=fixes))
    train = dataset.train
    assert (train.loc[train["id"] == "000001", "gender"] == "male").all()
    assert train.set_index("image_id").loc["000002_female_Asian_60/normal", "mask"] == "incorrect"
    summary = dataset.fixes
    assert summary.changed == {"gender": 7, "mask": 1}
    assert summary.unchanged == 1 and summary.not_found == ["999999"]
    assert "gender: 7 image(s) of 1 group(s)" in summary.lines()[0]


def test_bad_label_fix_applies_nothing(competition: Path, tmp_path: Path) -> None:
    fixes = tmp_path / "fixes.csv"
    fixes.write_text("id,field,value\n000001,gender,male\n000002,gender,robot\n000003,colour,red\n")
    with pytest.raises(DataError) as error:
        load_dataset(DataSource(competition, label_fixes=fixes))
    assert "line 3: gender value 'robot' is not one of male, female" in str(error.value)
    assert "line 4: unknown field 'colour'" in str(error.value)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    root = write_competition(tmp_path / "d", [person(0), person(1)])
    csv = root / "train" / "train.csv"
    csv.write_text(csv.read_text().replace("female,Asian,25,000001", "femal,Asian,2x,000001"))
    with pytest.raises(DataError) as error:
        load_dataset(DataSource(root))
    assert len(error.value.problems) == 2
