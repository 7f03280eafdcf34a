"""The data commands as a user runs them: `check`, `folds`, `cache`; bad input gives a clear message and exit 2."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from automl.cli import app
from tests.conftest import write_image

runner = CliRunner()


def automl(*args: str | Path) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output + (result.stderr or "")


def test_check_summarises_a_good_data_set(competition: Path, tmp_path: Path) -> None:
    code, out = automl("check", "--data", competition, "--home", tmp_path / "home")
    assert code == 0, out
    assert "people (groups): 6   images: 42   eval images: 3" in out
    assert "task all: 18 classes" in out
    assert "problems found: none" in out


def test_help_on_every_verb() -> None:
    verbs = [command.name or command.callback.__name__ for command in app.registered_commands]
    assert len(verbs) == 13 and "weights" in verbs and "params" in verbs
    for verb in verbs:
        code, out = automl(verb, "--help")
        assert code == 0 and f"Usage: root {verb}" in out, verb
    code, out = automl("search", "--help")
    assert all(option in out for option in ("--data", "--labels", "--label-fixes", "--home", "--age-bins"))


def test_cache_fills_what_the_space_draws(competition: Path, tmp_path: Path, yunet: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(
        "settings: {image_size: 16}\n"
        "params:\n  face_crop: {choices: [none, center]}\n  face_crop_margin: {value: 0.1, when: {face_crop: center}}\n"
    )
    code, out = automl("cache", "--data", competition, "--space", space, "--home", tmp_path / "home")
    assert code == 0, out
    for crop in ("none", "center"):
        assert f"16 px, face crop {crop}, 42 training image(s): decoded" in out
        assert f"16 px, face crop {crop}, 3 eval image(s): decoded" in out
    sets = sorted((tmp_path / "home" / "cache").rglob("*.set"))
    crops = out.count("training image(s): decoded")
    assert len(sets) == 2 * crops  # training and eval images, under each face crop (and margin): one file each
    code, out = automl("cache", "--data", competition, "--space", space, "--home", tmp_path / "home")
    assert "16 px, face crop center, 42 training image(s): already cached" in out
    assert sorted((tmp_path / "home" / "cache").rglob("*.set")) == sets


def _edit(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text().replace(old, new))


# Each case: how to break a good data set, and the words the error must contain.
BAD_COMPETITION = {
    "missing train.csv": (lambda r: (r / "train" / "train.csv").unlink(), ["train/train.csv not found"]),
    "missing column": (
        lambda r: _edit(r / "train" / "train.csv", "id,gender,race,age,path", "id,gender,race,years,path"),
        ["lacks the column(s) age"],
    ),
    "missing folder": (
        lambda r: _edit(r / "train" / "train.csv", "000002_female_Asian_60", "000002_gone"),
        ["train.csv line 4", "000002_gone does not exist"],
    ),
    "missing eval image": (
        lambda r: (r / "eval" / "images" / "e1.png").unlink(),
        ["info.csv line 3", "e1.png does not exist"],
    ),
    "unknown gender": (
        lambda r: _edit(r / "train" / "train.csv", "000001,female", "000001,F"),
        ["train.csv line 3", "unknown gender 'F'; expected male or female"],
    ),
    "non-integer age": (
        lambda r: _edit(r / "train" / "train.csv", "Asian,45,000001", "Asian,45.5,000001"),
        ["train.csv line 3", "age '45.5' is not a whole number"],
    ),
    "path leaves the data": (
        lambda r: _edit(r / "train" / "train.csv", ",000003_male_Asian_20", ",../../000003_male_Asian_20"),
        ["train.csv line 5", "leaves the data folder"],
    ),
    "eval path leaves the data": (
        lambda r: _edit(r / "eval" / "info.csv", "e0.png", "../../train/train.csv"),
        ["info.csv line 2", "leaves the data folder"],
    ),
    "empty data set": (lambda r: (r / "train" / "train.csv").write_text("id,gender,race,age,path\n"), ["no rows"]),
    "duplicate path": (
        lambda r: _edit(r / "train" / "train.csv", "000001_female_Asian_45\n", "000000_male_Asian_20\n"),
        ["train.csv line 3", "duplicate path '000000_male_Asian_20' (first on line 2)"],
    ),
    "unreadable image": (
        lambda r: (r / "train" / "images" / "000001_female_Asian_45" / "mask2.jpg").write_bytes(b"not a jpeg"),
        ["1 image(s) cannot be read", "000001_female_Asian_45/mask2.jpg"],
    ),
    "truncated image": (
        lambda r: _truncate(r / "train" / "images" / "000004_female_Asian_45" / "normal.jpg"),
        ["cannot be read", "000004_female_Asian_45/normal.jpg", "truncated"],
    ),
}


def _truncate(path: Path) -> None:
    write_image(path, seed=3, size=(200, 200))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("case", list(BAD_COMPETITION))
def test_bad_competition_data_exits_2_with_a_clear_message(competition: Path, tmp_path: Path, case: str) -> None:
    breaks, words = BAD_COMPETITION[case]
    breaks(competition)
    code, out = automl("check", "--data", competition, "--home", tmp_path / "home")
    assert code == 2, out
    assert "error:" in out and "Traceback" not in out
    for word in words:
        assert word in out, (case, out)


def _csv_data(root: Path, rows: list[str]) -> Path:
    for k in range(3):
        write_image(root / "img" / f"{k}.png", seed=k)
    (root / "labels.csv").write_text("path,mask,group\n" + "\n".join(rows) + "\n")
    return root / "labels.csv"


@pytest.mark.parametrize(
    ("rows", "words"),
    [
        (["img/0.png,wear,a", "img/9.png,wear,b"], ["labels.csv line 3", "img/9.png does not exist"]),
        (["img/0.png,wear,a", "img/0.png,wear,b"], ["labels.csv line 3", "duplicate image path 'img/0.png'"]),
        (["img/0.png,wear,a", "/no/such/1.png,wear,b"], ["labels.csv line 3", "/no/such/1.png does not exist"]),
        (["img/0.png,wear,a", "img/1.png,,b"], ["labels.csv line 3", "empty 'mask' label"]),
        ([], ["no rows"]),
    ],
)
def test_bad_csv_data_exits_2(tmp_path: Path, rows: list[str], words: list[str]) -> None:
    code, out = automl("check", "--data", _csv_data(tmp_path, rows), "--home", tmp_path / "home")
    assert code == 2, out
    for word in words:
        assert word in out, out


def test_csv_paths_may_be_absolute_or_outside_the_csv_folder(tmp_path: Path) -> None:
    images = tmp_path / "photos"
    for k in range(2):
        write_image(images / f"{k}.png", seed=k)
    table = tmp_path / "tables" / "labels.csv"
    table.parent.mkdir()
    table.write_text(f"path,mask,group\n{images / '0.png'},wear,a\n../photos/1.png,not_wear,b\n")
    code, out = automl("check", "--data", table, "--home", tmp_path / "home")
    assert code == 0, out
    assert "people (groups): 2   images: 2" in out


def test_bad_csv_options_exit_2(tmp_path: Path) -> None:
    csv = _csv_data(tmp_path, ["img/0.png,wear,a"])
    code, out = automl("check", "--data", csv, "--labels", "colour", "--home", tmp_path / "home")
    assert code == 2 and "lacks the column(s) colour" in out
    code, out = automl("check", "--data", tmp_path / "nowhere", "--home", tmp_path / "home")
    assert code == 2 and "data not found" in out


def test_folds_writes_nothing_on_bad_input(competition: Path, tmp_path: Path) -> None:
    _edit(competition / "train" / "train.csv", "000001,female", "000001,F")
    out_file = tmp_path / "out" / "folds.csv"
    code, out = automl("folds", "--task", "age", "--data", competition, "--out", out_file, "--folds", "3")
    assert code == 2, out
    assert not out_file.exists()


def test_folds_cli_writes_every_image_once(competition: Path, tmp_path: Path) -> None:
    out_file = tmp_path / "folds.csv"
    code, out = automl("folds", "--task", "gender", "--data", competition, "--out", out_file, "--folds", "3")
    assert code == 0, out
    folds = pd.read_csv(out_file)
    assert list(folds.columns) == ["image_id", "path", "group", "label", "fold"]
    assert len(folds) == 42 and set(folds["fold"]) == {0, 1, 2}
    assert folds.groupby("group")["fold"].nunique().max() == 1
    code, out = automl("folds", "--task", "gender", "--data", competition, "--out", out_file, "--folds", "9")
    assert code == 2 and "only 6 people (groups) for 9 folds" in out


def test_demo_data_refuses_an_existing_folder(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    code, out = automl("demo-data", tmp_path / "taken", "--people", "2")
    assert code == 2 and "taken" in out
