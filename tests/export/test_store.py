"""The fold-model store and the repeated cross-validation behind the export's figures: on demo data after a quick
search (tiny models, 2 folds)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import automl.export.store as store
from automl.data.dataset import DataSource
from automl.data.demo import write_demo_data
from automl.export.bundle import member_dir
from automl.export.members import pick_members
from automl.export.predict import member_views
from automl.export.runner import ExportJob, load_study, prepare_data, run_export
from automl.export.store import FoldStore, mean_views, repeat_split
from automl.export.tta import combine_views
from automl.train.session import TrainSession
from tests.search.helpers import FAST, automl


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("repeats")
    demo = write_demo_data(root / "demo", people=16, seed=5, eval_people=2)
    home = root / "home"
    code, out = automl("search", "--task", "mask", "--trials", "2", *FAST, "--keep-top", "2", "--data", demo,
                       "--home", home)  # fmt: skip
    assert code == 0, out
    return {"demo": demo, "home": home}


def test_a_repeat_split_is_new_and_grouped_by_person() -> None:
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(40), 3)
    labels = rng.integers(0, 3, len(groups))
    train = pd.DataFrame({"group": groups})
    data = SimpleNamespace(
        folds=np.repeat(np.arange(40) % 4, 3), n_folds=4, true_labels=labels, dataset=SimpleNamespace(train=train)
    )
    first, second = repeat_split(data, 1, seed=0), repeat_split(data, 2, seed=0)
    for split in (first, second):
        assert sorted(np.unique(split)) == [0, 1, 2, 3]
        assert all(len(np.unique(split[groups == g])) == 1 for g in range(40))  # a person in one fold only
    assert (first != data.folds).any() and (first != second).any()
    assert (repeat_split(data, 1, seed=0) == first).all()  # the same on every run


def test_every_prediction_is_a_mean_of_models_that_never_saw_the_image(searched: dict, tmp_path: Path, monkeypatch):
    """Each model of the other split trains on people it does not predict; the export's out-of-fold
    probabilities are the mean of both splits' (its own fold models', and the other split's)."""
    calls = []
    real = store.train_fold
    monkeypatch.setattr(store, "train_fold", lambda inputs, *a, **k: calls.append(inputs) or real(inputs, *a, **k))
    job = ExportJob(source=DataSource(searched["demo"]), task="mask", home=searched["home"], out=tmp_path / "two",
                    method="best_trial", decision_rule="off", device="cpu", cv_repeats=2, budget=3600)  # fmt: skip
    result = run_export(job)
    assert result.info.ensemble.cv_repeats == 2
    assert result.repeats_trained == 2 * len(result.candidates) == len(calls) and result.repeats_cached == 0
    trained = len(calls)

    study, _ = load_study(job)
    data, _, _ = prepare_data(job, study)
    groups = data.dataset.train["group"].to_numpy()
    for inputs in calls:
        assert not set(groups[inputs.train_index]) & set(groups[inputs.val_index])
    other = repeat_split(data, 1, int(study.user_attrs["settings"]["seed"]))
    assert (other != data.folds).any()
    for fold, inputs in enumerate(calls[:2]):
        assert (inputs.val_index == np.flatnonzero(other == fold)).all()

    # The export's out-of-fold probabilities: its own fold models' and the other split's, averaged per view (both
    # read back from the store: nothing trained again).
    (member,) = result.info.members
    (plan,) = [p for p in pick_members(study, None) if p.name == member.name]
    models = FoldStore(searched["home"], data, int(study.user_attrs["settings"]["seed"]), TrainSession())
    own, other_split = models.views(plan, 0)[0], models.views(plan, 1)[0]
    assert len(calls) == trained
    expected = combine_views(mean_views([own, other_split]), result.info.tta.views)
    table = pd.read_csv(job.out / "oof_probabilities.csv")
    assert np.allclose(table[[c for c in table.columns if c.startswith("prob_")]].to_numpy(), expected, atol=1e-5)

    # A later export reads the other split back: nothing trained again, the same figures.
    again = run_export(replace(job, out=tmp_path / "again"))
    assert again.repeats_trained == 0 and again.repeats_cached == result.repeats_trained
    assert again.info.ensemble.honest_f1 == result.info.ensemble.honest_f1
    # One split only: no model of another split, the figures of single fold models.
    single = run_export(replace(job, out=tmp_path / "one", cv_repeats=1))
    assert single.repeats_trained == single.repeats_cached == 0 and single.info.ensemble.cv_repeats == 1


def test_the_export_ships_every_split_it_judged(searched: dict, tmp_path: Path) -> None:
    """A shipped member's models are its fold models of every split, and the other split's are the very models
    whose out-of-fold probabilities were judged: loaded from the export folder, each predicts its own fold's images
    as kept in the store. A store model without its weights trains again; a later single-split export to the same
    folder leaves no other split's files behind."""
    home = tmp_path / "home"
    shutil.copytree(searched["home"], home, ignore=shutil.ignore_patterns(store.STORE_DIR, "exports"))
    job = ExportJob(source=DataSource(searched["demo"]), task="mask", home=home, out=tmp_path / "out",
                    method="best_trial", decision_rule="off", device="cpu", cv_repeats=2)  # fmt: skip
    result = run_export(job)
    (member,) = result.info.members
    assert member.models == ["fold0.safetensors", "fold1.safetensors", "repeat1-fold0.safetensors",
                             "repeat1-fold1.safetensors"]  # fmt: skip
    study, _ = load_study(job)
    data, _, _ = prepare_data(job, study)
    (plan,) = [p for p in pick_members(study, None) if p.name == member.name]
    folder = FoldStore(home, data, int(study.user_attrs["settings"]["seed"]), TrainSession()).folder(plan)
    images = data.images.get(member.params.image_crop)
    for fold in (0, 1):
        with np.load(folder / f"split1-fold{fold}.npz") as stored:
            rows, kept = stored["rows"], stored["plain"]
        one = replace(member, models=[f"repeat1-fold{fold}.safetensors"])
        probs = member_views(job.out, one, data.task.num_classes, images, rows, ["plain"], TrainSession())
        assert np.allclose(probs["plain"], kept, atol=1e-5)
        # The export folder links the store's files: one copy on disk.
        assert (member_dir(job.out, member.name) / f"repeat1-fold{fold}.safetensors").samefile(
            folder / f"split1-fold{fold}.safetensors"
        )

    (folder / "split1-fold0.safetensors").unlink()
    again = run_export(job)
    assert again.repeats_trained == 1 and again.repeats_cached == 1
    single = run_export(replace(job, cv_repeats=1))
    assert single.info.members[0].models == ["fold0.safetensors", "fold1.safetensors"]
    assert sorted(p.name for p in member_dir(job.out, member.name).glob("repeat*")) == []


def test_only_the_chosen_candidates_are_shipped(searched: dict, tmp_path: Path) -> None:
    out = tmp_path / "auto"
    code, said = automl("export-best", "--task", "mask", "--out", out, "--data", searched["demo"],
                        "--home", searched["home"], "--cv-repeats", "2", "--budget", "1h")  # fmt: skip
    assert code == 0, said
    info = json.loads((out / "export.json").read_text())
    shipped = {m["name"] for m in info["members"]}
    assert {p.name for p in (out / "members").iterdir()} == shipped
    said = " ".join(said.split())
    assert (
        "candidate trial(s) judged on their own out-of-fold predictions" in said and "2 cross-validation splits" in said
    )
    assert "the mean of 2 models per image" in (out / "model_card.md").read_text()


def test_candidates_are_judged_again_without_their_models(searched: dict, tmp_path: Path) -> None:
    """A candidate that is not shipped leaves no model in the export folder; its models and out-of-fold predictions
    are kept in the store, so a later export judges it again without copying or training anything for it."""
    home = tmp_path / "home"
    shutil.copytree(searched["home"], home, ignore=shutil.ignore_patterns(store.STORE_DIR, "exports"))
    job = ExportJob(source=DataSource(searched["demo"]), task="mask", home=home, out=tmp_path / "first", device="cpu",
                    cv_repeats=2, budget=3600)  # fmt: skip
    first = run_export(job)
    shipped = len(first.info.members)
    assert len(first.candidates) > shipped  # 2 trials judged, 1 shipped: the case this test is about
    assert first.trained == 0 and first.kept == 2 * len(first.candidates)  # 2 folds, copied to predict them
    assert first.repeats_trained == 2 * len(first.candidates)
    assert len(list((job.out / "members").iterdir())) == shipped
    again = run_export(replace(job, out=tmp_path / "again"))
    assert again.trained == again.kept == again.repeats_trained == 0
    assert again.reused == again.repeats_cached == 2 * len(first.candidates)
    assert again.info.ensemble == first.info.ensemble
    assert len(list((again.directory / "members").iterdir())) == shipped


def test_bad_repeats_are_a_clear_error(searched: dict, tmp_path: Path) -> None:
    common = ("--data", searched["demo"], "--home", searched["home"], "--out", tmp_path / "x")
    code, out = automl("export-best", "--task", "mask", "--cv-repeats", "0", *common)
    assert code == 2 and "--cv-repeats 0" in out
    code, out = automl("export-best", "--task", "mask", "--mode", "full", "--cv-repeats", "2", *common)
    assert code == 2 and "--mode full ships one model" in out
    assert not (tmp_path / "x" / "export.json").exists()
