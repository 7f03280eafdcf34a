"""Searches nobody watches: a time budget, a stop when stuck, and logs written to a file."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from automl.search import budget as budget_module
from automl.search import objective as objective_module
from automl.search.artifacts import TRIAL_OOF_FILE, find_artifact
from automl.search.budget import parse_duration
from automl.search.objective import CUT_BY_BUDGET, TIME_SPENT
from automl.search.ranking import best_trials
from automl.search.runner import count_trials
from tests.search.helpers import FAST, REPO, automl, load

#: Folds far longer than the budget, never stopped early: a trial is surely running when the budget ends.
LONG = ("--set", "max_epochs=200", "--set", "patience=200")


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("20m", 1200), ("2h", 7200), ("1h30m", 5400), ("45", 45)])
def test_budget_reads_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_a_bad_budget_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    home = tmp_path / "home"
    code, out = automl("search", "--task", "mask", *FAST, "--home", home, "--budget", "5x")
    assert code == 2 and "--budget '5x'" in out and "1h30m" in out
    assert not home.exists()


def test_budget_ends_the_search_within_one_epoch_and_records_the_cut_trial(demo: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    started = time.monotonic()
    code, out = automl(
        "search", "--task", "mask", "--trials", "50", *FAST, *LONG, "--data", demo, "--home", home, "--budget", "20s"
    )
    took = time.monotonic() - started
    assert code == 0, out
    study = load(home)
    (cut,) = [t for t in study.trials if CUT_BY_BUDGET in t.user_attrs]
    assert cut.state == TrialState.FAIL and cut == study.trials[-1]
    epoch = cut.user_attrs[TIME_SPENT]["total"] / len(cut.intermediate_values)  # its mean epoch, with set-up
    assert took <= 20 + 2 * epoch + 5, (took, epoch)  # the deadline, one epoch (measured roughly), the summary
    assert "1 cut by the budget" in out and f"cut trial {cut.number}: fold" in out
    assert count_trials(study).finished == len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED)))
    assert cut not in best_trials(study)


def test_a_cut_trial_keeps_its_finished_folds(demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Time runs out after the first fold (the 3rd clock reading: the loop's, then after fold 1's two epochs)."""
    readings = iter([1e9, 1e9, 1e9])
    monkeypatch.setattr(budget_module.Deadline, "remaining", lambda self: next(readings, -1.0))
    home = tmp_path / "home"
    code, out = automl(
        "search", "--task", "mask", "--trials", "5", *FAST, "--data", demo, "--home", home, "--budget", "1h"
    )
    assert code == 0, out
    study = load(home)
    (trial,) = study.trials
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs[CUT_BY_BUDGET] == "fold 2 epoch 1, 1 of 2 folds finished"
    assert len(trial.user_attrs["fold_f1"]) == 1
    assert find_artifact(home, trial, TRIAL_OOF_FILE) is not None
    assert "trial 0 cut by the budget" in out and "0 of 5 trials finished" in out


def test_stop_after_ends_a_flat_study(demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(objective_module, "macro_f1", lambda *args: 0.5)  # every trial scores the same
    home = tmp_path / "home"
    code, out = automl(
        "search", "--task", "mask", "--trials", "20", *FAST, "--data", demo, "--home", home, "--stop-after", "3"
    )
    assert code == 0, out
    study = load(home)
    assert len(study.trials) == 4  # the first sets the best; three more did not beat it
    assert "stopped: 3 finished trials in a row did not improve the best" in out
    assert study.metric_names == ["macro F1"]
    assert "value_macro F1" in study.trials_dataframe().columns


def test_a_log_file_has_a_line_per_trial_and_no_line_cut(demo: Path, tmp_path: Path) -> None:
    home, log = tmp_path / "home", tmp_path / "search.log"
    args = ("search", "--task", "mask", "--trials", "3", *FAST, "--data", demo, "--home", home)
    with log.open("w") as out:  # a file, as `nohup automl search ... > search.log` gives it
        subprocess.run(
            [sys.executable, "-m", "automl", *map(str, args)], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            check=True, timeout=600,
        )  # fmt: skip
    lines = log.read_text().splitlines()
    trial_lines = [line for line in lines if line.startswith("trial ")]
    assert len(trial_lines) == 3 and all(f"trial {n} " in trial_lines[n] for n in range(3)), lines
    assert all(" lr=" in line for line in trial_lines)  # the key parameters
    (header,) = [line for line in lines if line.startswith("study mask in ")]
    assert header.endswith(" images") and len(header) > 80  # whole, on one line
    (best,) = [line for line in lines if line.startswith("best: trial")]
    assert best.endswith("automl export-best gives the honest estimate)") and len(best) > 80
    assert not any("…" in line for line in lines)


def test_json_log_lines(demo: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    code, out = automl(
        "search", "--task", "mask", "--trials", "2", *FAST, "--data", demo, "--home", home, "--log-format", "json"
    )
    assert code == 0, out
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    trials = [e for e in events if e["event"] == "trial"]
    assert [t["number"] for t in trials] == [0, 1] and all("lr" in t["params"] for t in trials)
    assert events[-1]["event"] == "summary"


def test_metric_name_on_a_study_made_before_it(tmp_path: Path) -> None:
    from automl.search.storage import create_or_load_study

    storage = f"sqlite:///{tmp_path / 'old.db'}"
    optuna.create_study(storage=storage, study_name="old", direction="maximize")
    study = create_or_load_study(
        optuna.storages.get_storage(storage), "old", optuna.samplers.RandomSampler(), optuna.pruners.NopPruner()
    )
    assert study.metric_names == ["macro F1"]


def test_then_export_fits_the_export_inside_the_budget(demo: Path, tmp_path: Path) -> None:
    """--then-export keeps part of the budget for the export: the search stops early enough, and the export it
    runs (a plan bounded by the time left) ends by the deadline, give or take an epoch."""
    home = tmp_path / "home"
    started = time.monotonic()
    code, out = automl(
        "search", "--task", "mask", "--trials", "500", *FAST, "--data", demo, "--home", home, "--budget", "40s",
        "--then-export",
    )  # fmt: skip
    took = time.monotonic() - started
    assert code == 0, out
    study = load(home)
    epochs = [
        t.user_attrs[TIME_SPENT]["total"] / len(t.intermediate_values) for t in study.trials if t.intermediate_values
    ]
    assert took <= 40 + 2 * max(epochs) + 5, (took, max(epochs))
    assert "budget 34s" in out and "exporting study mask in the" in out and "plan (budget" in out
    assert (home / "exports" / "mask" / "export.json").is_file()
