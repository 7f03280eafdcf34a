"""The export's plan: said before any training, bounded by a tenth of the search's fold fits (or --budget), what it
leaves out named; a study of many trials read once; nothing reused across data. On demo data after a quick search
(tiny models, 2 folds), grown to many trials by cloning its two with out-of-fold probabilities of their own."""

from __future__ import annotations

import json
import re
import shutil
import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.storages import RDBStorage
from optuna.trial import TrialState, create_trial

import automl.export.store as store
from automl.data.dataset import DataSource
from automl.data.demo import write_demo_data
from automl.export.bundle import write_json
from automl.export.members import MemberPlan
from automl.export.runner import ExportJob, run_export
from automl.export.store import STORE_DIR, FoldStore
from automl.search.artifacts import TRIAL_OOF_FILE, artifact_dir, find_artifact
from automl.search.storage import default_storage_url
from automl.train.params import TrainParams
from tests.search.helpers import FAST, automl, automl_process


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("plan")
    demo = write_demo_data(root / "demo", people=16, seed=5, eval_people=2)
    home = root / "home"
    code, out = automl("search", "--task", "mask", "--trials", "2", *FAST, "--set", "pruner=none", "--keep-top", "2",
                       "--data", demo, "--home", home)  # fmt: skip
    assert code == 0, out
    return {"demo": demo, "home": home}


def grown(searched: dict, home: Path, trials: int) -> optuna.Study:
    """A copy of the searched home whose study has `trials` complete trials: the two searched (their fold weights
    kept) and clones ranked below them, each with noisy out-of-fold probabilities of its own and no weights."""
    shutil.copytree(searched["home"], home, ignore=shutil.ignore_patterns("exports", STORE_DIR))
    study = optuna.load_study(study_name="mask", storage=default_storage_url(home))
    base = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    rng = np.random.default_rng(0)
    clones = []
    for n in range(trials - len(base)):
        source = base[n % len(base)]
        table = pd.read_csv(find_artifact(home, source, TRIAL_OOF_FILE), dtype={"image_id": str})
        probs = table.iloc[:, 1:].to_numpy() * rng.uniform(0.3, 1.7, size=(len(table), table.shape[1] - 1))
        table.iloc[:, 1:] = probs / probs.sum(1, keepdims=True)
        artifact_id = str(uuid.uuid4())
        table.to_csv(artifact_dir(home) / artifact_id, index=False)
        meta = {"artifact_id": artifact_id, "filename": TRIAL_OOF_FILE, "mimetype": "text/csv", "encoding": None}
        system = {k: v for k, v in source.system_attrs.items() if not k.startswith("artifacts:")}
        clones.append(
            create_trial(
                value=min(t.value for t in base) - 0.0001 * (n + 1),
                params=source.params,
                distributions=source.distributions,
                # A configuration of its own (as every trial has): its models are its own in the store.
                user_attrs={**source.user_attrs, "config": {**source.user_attrs["config"], "lr": 0.01 + 0.0001 * n}},
                system_attrs={**system, f"artifacts:{artifact_id}": json.dumps(meta)},
                intermediate_values=source.intermediate_values,
            )
        )
    study.add_trials(clones)
    return study


def test_the_default_export_trains_at_most_a_tenth_of_the_search_and_says_so_first(
    searched: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """100 trials x 2 folds searched: the default export trains at most 20 fold models, the plan printed before
    any training says how many, and that is what it trains."""
    home = tmp_path / "home"
    grown(searched, home, 100)
    trained: list[int] = []
    real = store.train_fold
    monkeypatch.setattr(store, "train_fold", lambda *a, **k: trained.append(1) or real(*a, **k))
    code, out = automl("export-best", "--task", "mask", "--data", searched["demo"], "--home", home)
    assert code == 0, out
    text = " ".join(out.split())
    planned = re.search(r"in all: (\d+) fold fit\(s\)", text)
    assert planned and "plan (at most 20 fold fit(s), 10% of the search's 200)" in text
    assert text.index("plan (") < text.index("fold fits:")
    assert f"fold fits: {len(trained)} trained, {planned.group(1)} planned" in text
    assert 0 < len(trained) <= 20  # some clones judged (2 fits each), within the bound


def test_a_short_budget_says_what_it_left_out(searched: dict, tmp_path: Path) -> None:
    home = tmp_path / "home"
    grown(searched, home, 12)
    code, out = automl("export-best", "--task", "mask", "--data", searched["demo"], "--home", home, "--budget", "1s")
    assert code == 0, out
    text = " ".join(out.split())
    assert "plan (budget 1s)" in text and "left out: trial" in text and "(over the budget)" in text
    fits = re.search(r"fold fits: (\d+) trained, (\d+) planned; left out: trial", text)
    assert fits and int(fits.group(1)) <= int(fits.group(2))  # at run time it may leave out more, never train more
    code, out = automl("export-best", "--task", "mask", "--data", searched["demo"], "--home", home, "--budget", "5x")
    assert code == 2 and "--budget '5x'" in out


def test_a_trial_without_its_out_of_fold_file_is_named(searched: dict, tmp_path: Path) -> None:
    home = tmp_path / "home"
    study = grown(searched, home, 3)
    clone = study.get_trials()[-1]
    find_artifact(home, clone, TRIAL_OOF_FILE).unlink()
    code, out = automl("export-best", "--task", "mask", "--data", searched["demo"], "--home", home)
    assert code == 0, out
    assert f"left out trial{clone.number}: its out-of-fold probabilities are not in" in " ".join(out.split())


def test_an_export_of_300_trials_reads_each_trial_once(
    searched: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    grown(searched, home, 300)
    reads = {"trials": 0, "calls": 0}
    real_all, real_one, real_attrs = RDBStorage.get_all_trials, RDBStorage.get_trial, RDBStorage.get_trial_system_attrs

    def all_trials(self, *args, **kwargs):
        found = real_all(self, *args, **kwargs)
        reads["trials"] += len(found)
        return found

    def one(name, real):
        def counted(self, *args, **kwargs):
            reads["calls"] += 1
            return real(self, *args, **kwargs)

        return counted

    monkeypatch.setattr(RDBStorage, "get_all_trials", all_trials)
    monkeypatch.setattr(RDBStorage, "get_trial", one("get_trial", real_one))
    monkeypatch.setattr(RDBStorage, "get_trial_system_attrs", one("get_trial_system_attrs", real_attrs))
    job = ExportJob(source=DataSource(searched["demo"]), task="mask", home=home, out=tmp_path / "out", device="cpu")
    result = run_export(job)
    assert result.info.ensemble.library >= 2
    assert reads["trials"] <= 300 and reads["calls"] == 0, reads
    # The command too: its face-detector check and the export share one read of the study.
    reads.update(trials=0, calls=0)
    code, out = automl("export-best", "--task", "mask", "--data", searched["demo"], "--home", home)
    assert code == 0, out
    assert reads["trials"] <= 300 and reads["calls"] == 0, reads


def test_a_model_of_other_data_is_never_reused(tmp_path: Path) -> None:
    """A re-created study draws the same first configurations: a stored model is reused only when it trained on the
    same data. Another data set keys another folder, and a record naming other data is not reused even in place."""
    config = json.loads(json.dumps(TrainParams().to_dict()))  # as a trial's attribute holds it
    plan = MemberPlan("trial0", 0, 0.5, config, [1, 1])
    first, other = (FoldStore(tmp_path, SimpleNamespace(fingerprint=f, folds=None, n_folds=2), 0, None) for f in "ab")
    folder = first.folder(plan)
    folder.mkdir(parents=True)
    for suffix in (".safetensors", ".npz"):
        (folder / f"split0-fold0{suffix}").write_bytes(b"stored")
    write_json(folder / "split0-fold0.json", {**first.key(plan, 0, 0), "best_epoch": 1, "resolved": config})
    assert first.stored(plan, 0, 0) is not None
    assert other.folder(plan) != folder and other.stored(plan, 0, 0) is None
    shutil.copytree(folder, other.folder(plan))  # the same files where the other data's model would be
    assert other.stored(plan, 0, 0) is None


def test_an_export_logged_to_a_file_prints_whole_lines(searched: dict, tmp_path: Path) -> None:
    """stdout a file (not a terminal): the plan, the members and the methods as plain lines, none cut or wrapped."""
    home = tmp_path / "home"
    grown(searched, home, 3)
    export = automl_process("export-best", "--task", "mask", "--data", searched["demo"], "--home", home)
    out = export.communicate(timeout=600)[0]
    assert export.returncode == 0, out
    lines = out.splitlines()
    assert any(line.startswith("plan (at most") for line in lines)
    assert any(line.startswith("member trial") and "retrained OOF F1" in line for line in lines)
    assert any(line.startswith("method best_trial over") for line in lines)
    assert any(len(line) > 120 and line.startswith("Two figures") for line in lines)  # whole, however long
    assert not any(ch in out for ch in "┏━│…")  # no table drawn, nothing cut


def test_repeats_for_the_shipped_members_only(searched: dict, tmp_path: Path) -> None:
    """--repeats-for shipped: candidates are judged on the study's folds within the bound (a tenth of 24 search fits:
    2) less the room kept for the shipped members' second split, then only the chosen member trains it."""
    home = tmp_path / "home"
    grown(searched, home, 12)
    out_dir = tmp_path / "out"
    code, out = automl("export-best", "--task", "mask", "--data", searched["demo"], "--home", home, "--out", out_dir,
                       "--cv-repeats", "2", "--repeats-for", "shipped", "--decision-rule", "off")  # fmt: skip
    assert code == 0, out
    text = " ".join(out.split())
    assert "then the other splits' fold models of the shipped members, best first" in text
    assert "(2 kept for them): 2 fold fit(s) each" in text  # room for a top-3 vote's members, within the bound
    assert "left out: trial2 (over the fold-fit bound)" in text  # the room is not spent judging
    members = {m.name: sorted(p.name for p in m.glob("*.safetensors")) for m in (out_dir / "members").iterdir()}
    assert members == {"trial0": ["fold0.safetensors", "fold1.safetensors", "repeat1-fold0.safetensors",
                                  "repeat1-fold1.safetensors"]}  # fmt: skip
    second = {p.parent for p in (home / STORE_DIR).glob("*/split1-fold*.json")}
    assert len(second) == 1  # only the shipped member trained the second split
    assert "fold fits: 2 trained, 2 planned" in text


def test_an_unknown_repeats_for_is_a_clear_error(searched: dict, tmp_path: Path) -> None:
    code, out = automl("export-best", "--task", "mask", "--data", searched["demo"], "--home", searched["home"],
                       "--out", tmp_path / "out", "--repeats-for", "everyone")  # fmt: skip
    assert code == 2 and "--repeats-for 'everyone': choose candidates or shipped" in " ".join(out.split())
    assert not (tmp_path / "out").exists()  # nothing half-written
