"""A study whose trials differ in face crop (YuNet's aligned and box crops, none), exported: each member crops
exactly as its trial trained, and `automl predict` crops the same way; without the detector it stops at once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from typer.testing import CliRunner

from automl.cli import app
from automl.data.cache import ImageSets
from automl.data.dataset import DataSource, load_dataset
from automl.data.demo import write_demo_data
from automl.data.face_model import ENV_VAR
from automl.export.bundle import read_export
from automl.export.predict import load_images
from automl.search.objective import FACE_PRIOR
from automl.search.storage import default_storage_url
from automl.train.params import TrainParams
from tests.conftest import YUNET
from tests.hub_server import point_hub_at

REPO = Path(__file__).resolve().parents[2]
QUICK = REPO / "search_spaces" / "quick.yaml"
pytestmark = pytest.mark.skipif(not YUNET.is_file(), reason=f"no copy of the face detector at {YUNET}")
FAST = ("--set", "folds=2", "--set", "max_epochs=1", "--set", "backbone=test_resnet", "--set", "pruner=none")


def automl(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output + (result.stderr or "")


CROPS = ("aligned", "face", "none")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Three trials of one study, face crop `aligned`, `face` and `none`, exported as members of one ensemble."""
    root = tmp_path_factory.mktemp("face-export")
    demo = write_demo_data(root / "demo", people=12, seed=5, eval_people=2)
    home = root / "home"
    home.mkdir()
    space = root / "space.yaml"
    space.write_text(QUICK.read_text() + f"  face_crop: {{choices: [{', '.join(CROPS)}]}}\n")
    study = optuna.create_study(study_name="mask", storage=default_storage_url(home), direction="maximize")
    for crop in CROPS:
        study.enqueue_trial({"face_crop": crop})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ENV_VAR, str(YUNET))
        code, out = automl(
            "search", "--task", "mask", "--trials", "3", "--space", space, *FAST, "--data", demo, "--home", home
        )
        assert code == 0, out
        code, out = automl(
            "export-best", "--task", "mask", "--method", "top_k_vote", "--top-k", "3", "--budget", "1h", "--data", demo,
            "--home", home,
        )  # fmt: skip
        assert code == 0, out
    study = optuna.load_study(study_name="mask", storage=default_storage_url(home))
    return {"demo": demo, "home": home, "export": home / "exports" / "mask", "study": study}


def test_members_keep_their_trials_face_crop(mixed: dict) -> None:
    info = json.loads((mixed["export"] / "export.json").read_text())
    configs = {m["config"]["face_crop"]: m["config"] for m in info["members"]}
    assert set(configs) == set(CROPS)
    prior = mixed["study"].user_attrs[FACE_PRIOR]
    assert configs["aligned"]["face_crop_box"] == prior and prior != [0.0, 0.0, 1.0, 1.0]  # learned from the faces
    for member in info["members"]:
        trial = mixed["study"].trials[member["trial"]]
        for key in ("face_crop", "face_crop_margin", "face_crop_box", "face_crop_threshold", "face_crop_pick"):
            assert member["config"][key] == trial.user_attrs["config"][key]
        saved = json.loads((mixed["export"] / "members" / member["name"] / "config.json").read_text())
        assert saved["face_crop"] == member["config"]["face_crop"]
    assert "aligned (margin 0.2, prior box" in (mixed["export"] / "model_card.md").read_text()


@pytest.mark.parametrize("mode", ["aligned", "face"])
def test_training_export_and_predict_see_the_same_pixels(mixed: dict, mode: str, yunet: Path) -> None:
    dataset = load_dataset(DataSource(mixed["demo"]))
    export = read_export(mixed["export"])
    member = next(m for m in export.members if m.config["face_crop"] == mode)
    trained = TrainParams.from_dict(mixed["study"].trials[member.trial].user_attrs["config"])
    paths = list(dataset.train["path"])[::6]
    # Training read the cache through ImageSets with the trial's crop; predict decodes and crops afresh.
    cached = ImageSets(mixed["home"], export.image_size, paths).get(trained.image_crop)
    predicted = load_images(paths, export.image_size, member.params.image_crop)
    assert all(np.array_equal(a, b) for a, b in zip(cached, predicted, strict=True))
    whole = load_images(paths, export.image_size, TrainParams().image_crop)
    assert all(a.shape != b.shape for a, b in zip(predicted, whole, strict=True))  # the crop did happen


def test_predict_matches_the_exports_eval_predictions(mixed: dict, tmp_path: Path, yunet: Path) -> None:
    out_csv = tmp_path / "predicted.csv"
    code, out = automl("predict", "--export", mixed["export"], mixed["demo"] / "eval" / "images", "--out", out_csv)
    assert code == 0, out
    predicted = pd.read_csv(out_csv)
    predicted["image_id"] = predicted["path"].map(lambda p: Path(p).name)
    own = pd.read_csv(mixed["export"] / "predictions.csv", dtype={"image_id": str})
    merged = own.merge(predicted, on="image_id", suffixes=("_export", "_predict"))
    assert len(merged) == len(own) == 14
    assert (merged["class_export"] == merged["class_predict"]).all()
    for column in [c for c in own.columns if c.startswith("prob_")]:
        assert np.allclose(merged[f"{column}_export"], merged[f"{column}_predict"], atol=1e-5)


def test_predict_without_the_detector_stops_before_reading_any_image(
    mixed: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    point_hub_at(monkeypatch, "http://127.0.0.1:9", tmp_path / "empty-cache", offline=True)
    monkeypatch.setenv(ENV_VAR, "")
    out_csv = tmp_path / "predicted.csv"
    code, out = automl("predict", "--export", mixed["export"], mixed["demo"] / "eval" / "images", "--out", out_csv)
    assert code == 2 and "the face detector is missing, so nothing was started" in " ".join(out.split()), out
    assert not out_csv.exists()
    code, out = automl(
        "predict", "--export", mixed["export"], mixed["demo"] / "eval" / "images", "--face-detector", YUNET
    )
    assert code == 0, out
