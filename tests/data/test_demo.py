"""The demo data set: layout, imbalance, determinism, safe creation and learnable mask cues."""

from __future__ import annotations

import hashlib
import re
import threading
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import GroupKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from automl.data import demo
from automl.data.demo import PHOTO_MASK, ensure_demo_data, sample_people, write_demo_data
from automl.errors import AutomlError

EXTENSIONS = {"jpg", "jpeg", "png"}


def visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def md5s(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo_data(tmp_path_factory.mktemp("demo") / "data", people=20, seed=3)


def test_train_layout(small: Path) -> None:
    assert (small / "train" / "train.csv").read_text().splitlines()[0] == "id,gender,race,age,path"
    people = pd.read_csv(small / "train" / "train.csv", dtype=str, keep_default_na=False)
    assert len(people) == 20 and people["path"].is_unique
    assert all(re.fullmatch(r"\d{6}(-1)?", i) for i in people["id"])
    assert set(people["gender"]) <= {"male", "female"}
    assert people["age"].astype(int).between(18, 60).all()
    assert (people["path"] == people["id"] + "_" + people["gender"] + "_" + people["race"] + "_" + people["age"]).all()
    folders = {p.name for p in (small / "train" / "images").iterdir()}
    assert folders == set(people["path"])
    extensions = set()
    for folder in people["path"]:
        photos = visible(small / "train" / "images" / folder)
        assert sorted(p.stem for p in photos) == sorted(PHOTO_MASK)
        assert len({p.suffix for p in photos}) == 1  # one extension per person
        extensions.add(photos[0].suffix[1:])
        for photo in photos:
            with Image.open(photo) as image:
                assert image.size == (384, 512) and image.mode == "RGB"
    assert extensions == EXTENSIONS


def test_junk_files_sit_beside_photos_but_not_in_csvs(small: Path) -> None:
    junk = list(small.rglob("._*"))
    assert any("train" in p.parts for p in junk) and any("eval" in p.parts for p in junk)
    assert all(p.stat().st_size == 4096 for p in junk)
    csvs = "".join(p.read_text() for p in small.rglob("*.csv"))
    assert not any(p.name in csvs for p in junk)
    with pytest.raises(OSError):
        Image.open(junk[0])


def test_eval_layout_and_truth(small: Path) -> None:
    info_text = (small / "eval" / "info.csv").read_text()
    assert info_text.splitlines()[0] == "ImageID,ans"
    info = pd.read_csv(small / "eval" / "info.csv", dtype=str)
    assert len(info) == 7 * 10  # eval people default to people // 2
    assert (info["ans"] == "0").all()
    assert all(re.fullmatch(r"[0-9a-f]{40}\.(jpg|jpeg|png)", name) for name in info["ImageID"])
    assert set(info["ImageID"]) == {p.name for p in visible(small / "eval" / "images")}
    truth = pd.read_csv(small / "eval_truth.csv", dtype=str)
    assert list(truth.columns) == ["ImageID", "mask", "gender", "age", "person"]
    assert list(truth["ImageID"]) == list(info["ImageID"])
    per_person = pd.crosstab(truth["person"], truth["mask"])
    assert len(per_person) == 10 and (per_person[["wear", "incorrect", "not_wear"]] == [5, 1, 1]).all().all()
    assert (truth.groupby("person")[["gender", "age"]].nunique() == 1).all().all()
    # Shuffled: photos of one person do not sit together.
    assert (truth["person"] != truth["person"].shift()).mean() > 0.5
    assert [p.name for p in small.parent.iterdir()] == ["data"]  # no temporary folder left


def test_people_table_has_the_real_imbalance() -> None:
    people = sample_people(2000, seed=0)
    age = people["age"]
    assert abs((people["gender"] == "female").mean() - 0.61) < 0.035
    assert abs((age == 60).mean() - 0.07) < 0.02
    assert abs((age < 30).mean() - 0.45) < 0.04
    assert age.between(18, 60).all()
    # A pile-up just below 60: each of 57-59 is more common than the average age in 30-56.
    per_age = age.value_counts(normalize=True)
    assert min(per_age[57], per_age[58], per_age[59]) > 1.3 * age.between(30, 56).mean() / 27
    assert (people["race"] == "Asian").mean() > 0.9 and people["race"].nunique() > 1
    shares = people["ext"].value_counts(normalize=True)
    assert shares["jpg"] == pytest.approx(0.8, abs=0.01) and shares["png"] == pytest.approx(0.1, abs=0.01)
    assert people["junk"].mean() == pytest.approx(0.05, abs=0.01)
    assert people["path"].is_unique and people["id"].is_unique
    suffixed = people.index[people["id"].str.endswith("-1")]
    assert len(suffixed) == 20  # ~1%
    assert all(people["id"][i - 1] == people["id"][i][:-2] for i in suffixed)


@pytest.mark.parametrize("seed", range(4))
def test_small_sets_still_get_every_oddity(seed: int) -> None:
    for count in (10, 13, 19):
        assert sample_people(count, seed)["junk"].any()
    for count in (20, 27, 41, 59):
        table = sample_people(count, seed)
        assert set(table["ext"]) == EXTENSIONS and table["junk"].any()
    for count in (50, 77, 150):
        assert sample_people(count, seed)["id"].str.endswith("-1").any()


def test_same_arguments_write_the_same_bytes(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    first = md5s(write_demo_data(tmp_path / "a", people=3, seed=0, eval_people=1, progress=lambda *c: calls.append(c)))
    assert calls == [(0, 28), (7, 28), (14, 28), (21, 28), (28, 28)]  # a person's 7 photos at a time
    assert md5s(write_demo_data(tmp_path / "b", people=3, seed=0, eval_people=1)) == first
    other = md5s(write_demo_data(tmp_path / "c", people=3, seed=1, eval_people=1))
    photos = {name: digest for name, digest in first.items() if "._" not in name and not name.endswith(".csv")}
    assert not set(photos.values()) & set(other.values())


def test_refuses_a_folder_in_use_and_bad_counts(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("keep")
    with pytest.raises(AutomlError, match="not an empty folder"):
        write_demo_data(tmp_path / "full", people=1)
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["mine.txt"]
    with pytest.raises(AutomlError):
        write_demo_data(tmp_path / "none", people=0)
    (tmp_path / "empty").mkdir()
    write_demo_data(tmp_path / "empty", people=1, eval_people=0)
    assert len(visible(tmp_path / "empty" / "train" / "images")) == 1
    assert not (tmp_path / "empty" / "eval").exists() and not (tmp_path / "empty" / "eval_truth.csv").exists()


def test_a_failure_midway_leaves_nothing(tmp_path: Path) -> None:
    def fail(done: int, total: int) -> None:
        if done == 7:
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        write_demo_data(tmp_path / "data", people=2, progress=fail)
    with pytest.raises(RuntimeError, match="interrupted"):
        ensure_demo_data(tmp_path / "home", progress=fail)
    assert [p.name for p in tmp_path.iterdir()] == ["home"]
    assert list((tmp_path / "home").iterdir()) == []


def test_ensure_demo_data_writes_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "DEMO_DEFAULT_PEOPLE", 2)
    root = ensure_demo_data(tmp_path)
    assert root == tmp_path / "demo-data"
    assert len(pd.read_csv(root / "train" / "train.csv")) == 2
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    calls: list[tuple[int, int]] = []
    assert ensure_demo_data(tmp_path, progress=lambda *c: calls.append(c)) == root
    assert calls == [] and {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before
    (tmp_path / "other" / "demo-data").mkdir(parents=True)
    (tmp_path / "other" / "demo-data" / "notes.txt").write_text("mine")
    with pytest.raises(AutomlError, match="not the demo data"):
        ensure_demo_data(tmp_path / "other")


def test_ensure_demo_data_is_safe_from_two_writers_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "DEMO_DEFAULT_PEOPLE", 2)
    both_started = threading.Barrier(2, timeout=30)
    results, errors = [], []

    def wait(done: int, total: int) -> None:
        if done == 0:
            both_started.wait()  # both are writing before either renames

    def worker() -> None:
        try:
            results.append(ensure_demo_data(tmp_path, progress=wait))
        except BaseException as error:  # reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and results == [tmp_path / "demo-data"] * 2
    assert [p.name for p in tmp_path.iterdir()] == ["demo-data"]  # the loser removed its copy
    assert len(visible(tmp_path / "demo-data" / "train" / "images")) == 2


def edges_16(path: Path) -> np.ndarray:
    """A 16 x 16 grey thumbnail of edge strength: mask status is a shape, not a brightness."""
    with Image.open(path) as image:
        grey = np.asarray(image.convert("L").resize((64, 64), Image.BILINEAR), dtype=np.float32) / 255
    strength = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
    return cv2.resize(strength, (16, 16), interpolation=cv2.INTER_AREA).ravel()


def test_mask_status_is_learnable_across_people(tmp_path: Path) -> None:
    root = write_demo_data(tmp_path / "data", people=40, seed=0, eval_people=0)
    people = pd.read_csv(root / "train" / "train.csv", dtype=str)
    features, labels, groups = [], [], []
    for folder in people["path"]:
        for photo in visible(root / "train" / "images" / folder):
            features.append(edges_16(photo))
            labels.append(PHOTO_MASK[photo.stem])
            groups.append(folder)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000, class_weight="balanced"))
    # Every photo predicted by a model that never saw its person.
    predicted = cross_val_predict(model, np.array(features), np.array(labels), groups=groups, cv=GroupKFold(5))
    assert balanced_accuracy_score(labels, predicted) > 0.6  # chance is 1/3
