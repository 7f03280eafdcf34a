"""`automl demo-data --label-noise`: exactly the recorded people get a wrong label; the photos show the truth."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from automl.cli import app
from automl.data.dataset import DataSource, load_dataset
from automl.data.demo import sample_people, write_demo_data
from automl.data.label_noise import NOISE_FILE, read_label_noise


def digest(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("noise")
    clean = write_demo_data(root / "clean", people=20, seed=4, eval_people=0)
    noisy = write_demo_data(root / "noisy", people=20, seed=4, eval_people=0, label_noise=0.15)
    return clean, noisy


def test_exactly_the_recorded_people_are_mislabelled(pair: tuple[Path, Path]) -> None:
    clean, noisy = pair
    planted = read_label_noise(noisy / NOISE_FILE)
    assert planted["person"].nunique() == 3 and set(planted["field"]) == {"gender", "age", "mask"}  # 15% of 20
    truth = load_dataset(DataSource(clean)).train
    given = load_dataset(DataSource(noisy)).train
    assert len(truth) == len(given)
    # Rows line up person by person and photo by photo (same order of people, photos in layout order).
    for field in ("gender", "age"):
        differs = set(given.loc[truth[field].to_numpy() != given[field].to_numpy(), "group"])
        assert differs == set(planted.loc[planted["field"] == field, "person"])
    # The photos show the truth: the files whose content differs from the clean set's are exactly the swapped
    # ones, and each holds the clean set's photo of the other mask status.
    mask = planted[planted["field"] == "mask"]
    moved = {}
    for clean_path, noisy_path, image_id in zip(truth["path"], given["path"], given["image_id"], strict=True):
        if digest(Path(clean_path)) != digest(Path(noisy_path)):
            moved[image_id] = Path(noisy_path)
    assert set(moved) == set(mask["image"])
    for path in moved.values():
        other = "normal" if path.stem == "incorrect_mask" else "incorrect_mask"
        assert digest(path) == digest(clean / path.relative_to(noisy).with_stem(other))
    # The recorded true values are the clean set's labels.
    people = sample_people(20, seed=4).set_index("id")
    for row in planted[planted["field"] != "mask"].itertuples():
        assert str(people.loc[row.id, row.field]) == row.true != row.given


def test_noise_is_deterministic_and_checked(pair: tuple[Path, Path], tmp_path: Path) -> None:
    again = write_demo_data(tmp_path / "again", people=20, seed=4, eval_people=0, label_noise=0.15)
    assert (again / NOISE_FILE).read_bytes() == (pair[1] / NOISE_FILE).read_bytes()
    assert not (pair[0] / NOISE_FILE).exists()
    result = CliRunner().invoke(app, ["demo-data", str(tmp_path / "bad"), "--people", "3", "--label-noise", "1.5"])
    assert result.exit_code == 2 and "between 0 and 1" in result.output
    result = CliRunner().invoke(
        app, ["demo-data", str(tmp_path / "bad"), "--people", "3", "--label-noise", "0.5", "--noise-fields", "race"]
    )
    assert result.exit_code == 2 and "choose among gender, age, mask" in result.output
    assert not (tmp_path / "bad").exists()


def test_cli_reports_the_planted_people(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["demo-data", str(tmp_path / "d"), "--people", "4", "--label-noise", "0.5", "--noise-fields", "gender"]
    )
    assert result.exit_code == 0, result.output
    assert "Planted 2 people's wrong labels (gender)" in result.output
    assert set(pd.read_csv(tmp_path / "d" / NOISE_FILE)["field"]) == {"gender"}
