"""`automl export-best` and `automl predict` on demo data after quick searches: tiny models, 2 folds, 2 epochs."""

from __future__ import annotations

import json
import pickle
import re
import shutil
import signal
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from automl.cli import app
from automl.data.demo import write_demo_data
from automl.export.decision import decide
from automl.export.ensemble import HARD, SINGLE, SOFT, choose_ensemble, combine
from automl.export.predict import Predictor
from tests.search.helpers import automl_process

REPO = Path(__file__).resolve().parents[2]
QUICK = REPO / "search_spaces" / "quick.yaml"
FAST = ("--space", str(QUICK), "--set", "folds=2", "--set", "max_epochs=2", "--set", "backbone=test_resnet")
TOP_K = {"mask": 2, "gender": 1, "age": 1}
#: Non-default heads: the age export's model bins ages, and a multitask `all` study (its own name, so that
#: `--task all` alone still finds no study) composes 18 classes from three heads.
HEADS = {"age": ("--set", "age_head=bins", "--set", "age_bin_width=10")}
MULTITASK = ("--set", "multitask=true", "--set", "age_head=ordinal", "--set", "head_hidden=8", "--study", "all_mt")


def automl(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output + (result.stderr or "")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Quick searches of mask, gender, age (an age-bins head) and multitask all, each exported; their outputs."""
    root = tmp_path_factory.mktemp("export")
    demo = write_demo_data(root / "demo", people=16, seed=5, eval_people=2)
    home = root / "home"
    outputs = {}
    for task, top_k in TOP_K.items():
        head = HEADS.get(task, ())
        code, out = automl("search", "--task", task, "--trials", "2", *FAST, *head, "--data", demo, "--home", home)
        assert code == 0, out
        # A budget, not the default bound: every candidate of these 2-trial studies judged.
        code, out = automl("export-best", "--task", task, "--top-k", top_k, "--budget", "1h", "--data", demo,
                           "--home", home)  # fmt: skip
        assert code == 0, out
        outputs[task] = out
    code, out = automl("search", "--task", "all", "--trials", "1", *FAST, *MULTITASK, "--data", demo, "--home", home)
    assert code == 0, out
    code, out = automl(
        "export-best", "--task", "all", "--study", "all_mt", "--top-k", 1, "--data", demo, "--home", home
    )
    assert code == 0, out
    print(outputs["mask"])  # the figures: each member's out-of-fold macro F1 and the ensemble's (pytest -s)
    return {"demo": demo, "home": home, "exports": home / "exports", "outputs": outputs}


def test_combined_submission_follows_info_csv(exported: dict) -> None:
    code, out = automl("export-best", "--task", "all", "--combine", "--home", exported["home"])
    assert code == 0, out
    submission = pd.read_csv(exported["exports"] / "combined" / "submission.csv", dtype={"ImageID": str})
    info = pd.read_csv(exported["demo"] / "eval" / "info.csv", dtype={"ImageID": str})
    assert list(submission.columns) == ["ImageID", "ans"]
    assert list(submission["ImageID"]) == list(info["ImageID"])
    assert submission["ans"].between(0, 17).all()
    parts = {}  # each part's argmax: the combination multiplies probabilities, the parts' own rules do not enter
    for t in TOP_K:
        table = pd.read_csv(exported["exports"] / t / "predictions.csv", dtype={"image_id": str})
        parts[t] = table[[c for c in table.columns if c.startswith("prob_")]].to_numpy().argmax(1)
    probs = pd.read_csv(exported["exports"] / "combined" / "predictions.csv")
    prob_columns = [c for c in probs.columns if c.startswith("prob_")]
    assert len(prob_columns) == 18 and np.allclose(probs[prob_columns].sum(axis=1), 1.0, atol=1e-4)
    assert (submission["ans"] == probs["class"]).all()
    rule = json.loads((exported["exports"] / "combined" / "combination.json").read_text())
    assert rule["honest_f1"] <= 1 and "honest F1" in out and "selection F1" in out
    if rule["class_weights"] is None:  # the 18-class answer is the three parts' own answers
        assert (submission["ans"].to_numpy() == parts["mask"] * 6 + parts["gender"] * 3 + parts["age"]).all()
    else:
        codes = decide(probs[prob_columns].to_numpy(), rule["class_weights"])
        assert (codes == submission["ans"].to_numpy()).mean() > 0.95  # probabilities rounded to 6 decimals
    for task in TOP_K:  # each part's own submission too
        own = pd.read_csv(exported["exports"] / task / "submission.csv", dtype={"ImageID": str})
        assert list(own["ImageID"]) == list(info["ImageID"])


def test_export_names_its_two_figures(exported: dict) -> None:
    out = " ".join(exported["outputs"]["mask"].split())
    assert "retrained OOF F1" in out and "selection scores" in out and "honest F1" in out and "selection F1" in out
    info = json.loads((exported["exports"] / "mask" / "export.json").read_text())
    assert info["classes"] == ["wear", "incorrect", "not_wear"] and info["version"] == 3
    e = info["ensemble"]
    assert e["selection"] in ("best_trial", "top_k_vote", "greedy") and e["library"] == 2
    assert 0 <= e["honest_f1"] <= 1 and 0 <= e["selection_f1"] <= 1
    assert set(e["candidates"]) == {f"{m}{r}" for m in ("best_trial", "top_k_vote", "greedy")
                                    for r in ("", " + decision rule")}  # fmt: skip
    for member in info["members"]:
        assert 0 <= member["oof_f1"] <= 1  # of the mean of both splits' predictions (the study's: test below)
        # Every split's fold models ship (2 folds, 2 splits): split r's fold k trained with seed + r * folds + k.
        assert member["seeds"] == [member["config"]["seed"] + i for i in range(4)]
        assert member["models"] == ["fold0.safetensors", "fold1.safetensors", "repeat1-fold0.safetensors",
                                    "repeat1-fold1.safetensors"]  # fmt: skip
        assert member["config"]["mean"] and member["config"]["std"]
    card = (exported["exports"] / "mask" / "model_card.md").read_text()
    assert "honest F1" in card and "selection F1" in card and info["members"][0]["name"] in card
    files = [p for p in (exported["exports"] / "mask").rglob("*") if p.is_file()]
    assert {p.suffix for p in files} <= {".json", ".safetensors", ".csv", ".md"}


def test_predict_matches_the_export_and_never_unpickles(exported: dict, monkeypatch, tmp_path: Path) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("an export must load without unpickling")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    for task in [*TOP_K, "all_mt"]:
        export = exported["exports"] / task
        out_csv = tmp_path / f"{task}.csv"
        code, out = automl("predict", "--export", export, exported["demo"] / "eval" / "images", "--out", out_csv)
        assert code == 0, out
        predicted = pd.read_csv(out_csv)
        predicted["image_id"] = predicted["path"].map(lambda p: Path(p).name)
        own = pd.read_csv(export / "predictions.csv", dtype={"image_id": str})
        merged = own.merge(predicted, on="image_id", suffixes=("_export", "_predict"))
        assert len(merged) == len(own)  # every eval image, and the hidden ._ files skipped
        assert (merged["class_export"] == merged["class_predict"]).all()


def test_non_default_heads_export_class_probabilities(exported: dict) -> None:
    age = json.loads((exported["exports"] / "age" / "export.json").read_text())
    config = age["members"][0]["config"]
    assert config["age_head"] == "bins" and config["age_bin_edges"] and config["age_group_edges"] == [30, 60]
    multitask = json.loads((exported["exports"] / "all_mt" / "export.json").read_text())
    assert len(multitask["classes"]) == 18 and multitask["members"][0]["config"]["multitask"] is True
    assert "| age bins |" in (exported["exports"] / "age" / "model_card.md").read_text()
    assert "| multitask, age ordinal, hidden 8 |" in (exported["exports"] / "all_mt" / "model_card.md").read_text()
    for task, classes in (("age", 3), ("all_mt", 18)):
        table = pd.read_csv(exported["exports"] / task / "predictions.csv")
        probs = table[[c for c in table.columns if c.startswith("prob_")]].to_numpy()
        assert probs.shape[1] == classes and np.allclose(probs.sum(1), 1.0, atol=1e-4)
        weights = json.loads((exported["exports"] / task / "export.json").read_text())["class_weights"]
        assert (table["class"] == decide(probs, weights)).all()


def test_an_export_of_kept_trials_trains_no_model(exported: dict, tmp_path: Path, monkeypatch) -> None:
    """Fold weights the search kept are linked into the fold-model store; only what it dropped is trained (counted
    at train_fold), and a model in the store is never trained again."""
    import automl.export.store as store
    from automl.data.dataset import DataSource
    from automl.export.runner import ExportJob, load_study, run_export
    from automl.search.artifacts import find_artifact

    home = tmp_path / "home"
    shutil.copytree(exported["home"], home, ignore=shutil.ignore_patterns("exports", store.STORE_DIR))
    trained = []
    real = store.train_fold
    monkeypatch.setattr(store, "train_fold", lambda *a, **k: trained.append(1) or real(*a, **k))
    # One split: the other splits' models are no kept weights (trained once into the store: test_store.py).
    job = ExportJob(source=DataSource(exported["demo"]), task="mask", home=home, out=tmp_path / "kept",
                    method="top_k_vote", top_k=2, decision_rule="off", device="cpu", cv_repeats=1)  # fmt: skip
    result = run_export(job)
    n_models = 2 * len(result.candidates)
    assert trained == [] and result.trained == 0 and result.kept == n_models and result.newly_trained == []
    for member in result.info.members:  # the search's very models: they reproduce the trial's figure
        assert member.oof_f1 == pytest.approx(member.study_value, abs=1e-6)
    again = run_export(replace(job, out=tmp_path / "again"))
    assert trained == [] and again.kept == 0 and again.reused == n_models

    study, storage = load_study(job)
    best = result.info.members[0]
    find_artifact(home, study.trials[best.trial], "fold0.safetensors").unlink()
    shutil.rmtree(home / store.STORE_DIR)
    result = run_export(replace(job, out=tmp_path / "missing"))
    assert len(trained) == 1 and result.trained == 1 and result.kept == n_models - 1
    assert result.newly_trained == [f"{best.name} fold0"]
    records = [json.loads((tmp_path / "missing" / "members" / best.name / f"fold{k}.json").read_text()) for k in (0, 1)]
    assert "kept_from" not in records[0] and records[1]["kept_from"] == f"trial {best.trial} of the search"
    assert records[0]["resolved"] == records[1]["resolved"]  # resolved without training, as training resolves it


def test_decision_rule_is_applied_identically_by_export_and_predict(exported: dict, tmp_path: Path) -> None:
    out_dir = tmp_path / "rule"
    code, out = automl("export-best", "--task", "mask", "--method", "best_trial", "--decision-rule", "on",
                       "--out", out_dir, "--data", exported["demo"], "--home", exported["home"])  # fmt: skip
    assert code == 0, out
    info = json.loads((out_dir / "export.json").read_text())
    assert info["class_weights"] is not None and info["ensemble"]["decision_rule"] is True
    images = sorted((exported["demo"] / "eval" / "images").glob("[!.]*"))
    own = pd.read_csv(out_dir / "predictions.csv", dtype={"image_id": str}).set_index("image_id")
    predictor = Predictor(out_dir, "cpu")
    probs = predictor.predict_files(images)
    assert (own.loc[[p.name for p in images], "class"].to_numpy() == predictor.decide(probs)).all()
    submission = pd.read_csv(out_dir / "submission.csv", dtype={"ImageID": str}).set_index("ImageID")
    assert (submission.loc[own.index, "ans"] == own["class"]).all()
    # A rule that matters: predict follows the export's weights, not the argmax.
    info["class_weights"] = [1.0, 1.0, 1e3]
    (out_dir / "export.json").write_text(json.dumps(info))
    code, out = automl("predict", "--export", out_dir, *images, "--out", tmp_path / "p.csv")
    assert code == 0, out
    classes = pd.read_csv(tmp_path / "p.csv")["class"].to_numpy()
    assert (classes == decide(probs, info["class_weights"])).all() and (classes != probs.argmax(1)).any()


def test_format_1_exports_still_load(tmp_path: Path) -> None:
    """Before the heads, a model file held a plain timm model: it loads as backbone + classifier head."""
    from safetensors.torch import save_file

    from automl.export.bundle import load_model
    from automl.train.backbone import create_backbone
    from automl.train.params import TrainParams

    params = TrainParams(backbone="test_resnet")
    plain = create_backbone(params, 3).eval()
    save_file(plain.state_dict(), tmp_path / "fold0.safetensors")
    model = load_model(tmp_path / "fold0.safetensors", params, 3)
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.probs(images), plain(images).softmax(1), atol=1e-6)


def test_interrupted_export_resumes_from_finished_models(exported: dict, tmp_path: Path) -> None:
    """A model of the store whose record is missing (killed while writing it) is made again; the others are read
    back, and the export comes out the same."""
    from automl.export.store import STORE_DIR

    home = tmp_path / "home"
    shutil.copytree(exported["home"], home, ignore=shutil.ignore_patterns("exports"))
    member = sorted((exported["exports"] / "mask" / "members").iterdir())[0]
    shipped = json.loads((member / "fold1.json").read_text())
    (record,) = [  # the member's fold 1 in the store: its configuration, on this data
        path
        for path in (home / STORE_DIR).glob("*/split0-fold1.json")
        if all(json.loads(path.read_text())[key] == shipped[key] for key in ("config", "data"))
    ]
    made = "1 copied from the search's kept fold weights" if "kept_from" in record.read_text() else "1 model(s) trained"
    record.unlink()  # as if killed while writing fold 1
    code, out = automl("export-best", "--task", "mask", "--top-k", "2", "--out", tmp_path / "mask",
                       "--data", exported["demo"], "--home", home)  # fmt: skip
    assert code == 0, out
    said = " ".join(out.split())
    assert made in said and re.search(r"[1-9] reused from an earlier run", said), said
    before = pd.read_csv(exported["exports"] / "mask" / "submission.csv")
    assert before.equals(pd.read_csv(tmp_path / "mask" / "submission.csv"))


def test_ctrl_c_during_export_leaves_nothing_half_written(exported: dict, tmp_path: Path) -> None:
    from automl.data.dataset import DataSource
    from automl.export.runner import ExportJob, load_study
    from automl.search.artifacts import find_artifact

    # A home without the search's kept weights or anything an export kept: the export trains, and the Ctrl-C
    # lands while it does (with everything at hand, it may finish before the signal arrives).
    home = tmp_path / "home"
    shutil.copytree(exported["home"], home, ignore=shutil.ignore_patterns("exports", "fold_models"))
    study, storage = load_study(ExportJob(source=DataSource(exported["demo"]), task="mask", home=home, out=tmp_path))
    for trial in study.trials:
        for fold in (0, 1):
            kept = find_artifact(home, trial, f"fold{fold}.safetensors")
            if kept is not None:
                kept.unlink()
    out_dir = tmp_path / "mask"
    args = ("export-best", "--task", "mask", "--top-k", "2", "--out", out_dir, "--data", exported["demo"],
            "--home", home)  # fmt: skip
    export = automl_process(*args)
    deadline = time.monotonic() + 300
    while not list(home.glob("fold_models/*/split0-fold0.json")):  # the first model is finished
        assert time.monotonic() < deadline and export.poll() is None, export.communicate()[0]
        time.sleep(0.1)
    export.send_signal(signal.SIGINT)
    out = export.communicate(timeout=120)[0]
    assert export.returncode == 130, out
    assert "run the same command again to continue" in out and "Traceback" not in out
    files = [p for p in [*out_dir.rglob("*"), *(home / "fold_models").rglob("*")] if p.is_file()]
    assert not [p for p in files if p.name.endswith(".tmp")]  # no scraps of a write cut short
    assert not (out_dir / "export.json").exists()  # written last, by a finished export only
    for record in (home / "fold_models").glob("*/*.json"):  # a model's json comes after its weights and views
        assert record.with_suffix(".safetensors").is_file() and record.with_suffix(".npz").is_file()

    code, out = automl(*args)
    assert code == 0, out
    assert re.search(r"[1-4] reused from an earlier run", " ".join(out.split())), out
    assert (out_dir / "export.json").is_file()


def test_full_mode(exported: dict, tmp_path: Path) -> None:
    out_dir = tmp_path / "full"
    code, out = automl(
        "export-best", "--task", "gender", "--top-k", "1", "--mode", "full", "--out", out_dir,
        "--data", exported["demo"], "--home", exported["home"],
    )  # fmt: skip
    assert code == 0, out
    info = json.loads((out_dir / "export.json").read_text())
    (member,) = info["members"]
    assert info["mode"] == "full" and member["models"] == ["full.safetensors"]
    assert info["tta"]["views"] == ["plain"]
    record = json.loads((out_dir / "members" / member["name"] / "full.json").read_text())
    assert record["epochs"] >= 1 and record["trained_on"] == "every training image"
    probs = Predictor(out_dir, "cpu").predict_files(sorted((exported["demo"] / "eval" / "images").glob("[!.]*")))
    assert probs.shape[1] == 2 and np.allclose(probs.sum(1), 1.0, atol=1e-5)


def test_bad_input_is_a_clear_error(exported: dict, tmp_path: Path) -> None:
    demo, home = exported["demo"], exported["home"]
    code, out = automl("export-best", "--task", "mask", "--data", demo, "--home", tmp_path / "empty")
    assert code == 2 and "automl search --task mask" in out
    code, out = automl("export-best", "--task", "all", "--data", demo, "--home", home)
    assert code == 2 and "no study named 'all'" in out
    code, out = automl("export-best", "--task", "mask", "--top-k", "0", "--data", demo, "--home", home)
    assert code == 2 and "--top-k 0" in out
    code, out = automl("export-best", "--task", "mask", "--mode", "half", "--data", demo, "--home", home)
    assert code == 2 and "--mode" in out
    code, out = automl("predict", "--export", tmp_path / "nowhere", demo / "eval" / "images")
    assert code == 2 and "does not exist" in out
    (tmp_path / "notes.txt").write_text("hello")
    code, out = automl("predict", "--export", exported["exports"] / "mask", tmp_path / "notes.txt")
    assert code == 2 and "not an image file" in out
    code, out = automl("export-best", "--task", "all", "--combine", "--home", tmp_path / "empty")
    assert code == 2 and "does not exist" in out
    code, out = automl("export-best", "--task", "mask", "--combine", "--home", home)
    assert code == 2 and "--task all --combine" in out


def test_no_complete_trials(exported: dict, tmp_path: Path) -> None:
    import optuna

    from automl.search.storage import default_storage_url

    home = tmp_path / "home"
    home.mkdir()
    study = optuna.create_study(study_name="mask", storage=default_storage_url(home), direction="maximize")
    study.set_user_attr("task", "mask")
    code, out = automl("export-best", "--task", "mask", "--data", exported["demo"], "--home", home)
    assert code == 2 and "no complete trials" in out


def test_ensemble_falls_back_to_the_best_member() -> None:
    true = np.array([0, 0, 1, 1, 2, 2])
    good = np.eye(3)[true] * 0.5 + 1 / 6
    bad = np.eye(3)[[1, 2, 0, 0, 1, 1]] * 0.99 + 0.005  # confident and wrong: outvotes the good member
    choice = choose_ensemble([bad, good], true, [0.9, 1.0])
    assert choice.method == SINGLE and choice.members == [1] and choice.oof_f1 == 1.0


def test_hard_voting_breaks_ties_by_mean_probability() -> None:
    a = np.array([[0.6, 0.4], [0.9, 0.1]])
    b = np.array([[0.3, 0.7], [0.2, 0.8]])
    hard = combine(HARD, [a, b], [1.0, 1.0])
    assert hard.argmax(1).tolist() == [1, 0]  # 1 vote each: row 0 mean favours 1, row 1 mean favours 0
    assert combine(SOFT, [a, b], [1.0, 1.0]) == pytest.approx((a + b) / 2)


def test_pick_members_best_first_and_distinct_backbones() -> None:
    import optuna

    from automl.export.members import pick_members

    study = optuna.create_study(direction="maximize")
    for number, (value, backbone) in enumerate([(0.5, "a"), (0.9, "b"), (0.8, "b"), (0.7, "c")]):
        study.add_trial(
            optuna.trial.create_trial(value=value, user_attrs={"config": {"backbone": backbone, "seed": number}})
        )
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, user_attrs={"config": {}}))
    assert [m.trial for m in pick_members(study, 2)] == [1, 2]
    assert [m.trial for m in pick_members(study, 3, distinct_backbones=True)] == [1, 3, 0]
    assert len(pick_members(study, 10)) == 4
