"""Every worker draws its own trials; one worker alone draws the same trials every time."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from automl.search.sampler import TrialSeededTPE
from tests.search.helpers import FAST, automl_process, load

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def _draw(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", 0.0, 1.0)
    kind = trial.suggest_categorical("kind", ["a", "b", "c"])
    return x + (kind == "b")


def _sampler() -> TrialSeededTPE:
    return TrialSeededTPE(seed=0, multivariate=True, group=True, n_startup_trials=4)


def test_one_worker_alone_draws_the_same_trials_every_time() -> None:
    runs = []
    for _ in range(2):
        study = optuna.create_study(direction="maximize", sampler=_sampler())
        study.optimize(_draw, n_trials=8)  # start-up and model-based trials
        runs.append([t.params for t in study.trials])
    assert runs[0] == runs[1]


def test_workers_with_the_same_seed_draw_different_trials() -> None:
    storage = optuna.storages.InMemoryStorage()
    first = optuna.create_study(study_name="s", storage=storage, sampler=_sampler())
    second = optuna.load_study(study_name="s", storage=storage, sampler=_sampler())
    asked = [study.ask() for _ in range(3) for study in (first, second)]
    drawn = [(t.suggest_float("x", 0.0, 1.0), t.suggest_categorical("kind", ["a", "b", "c"])) for t in asked]
    assert len(set(drawn)) == 6


def test_two_search_processes_on_one_fresh_study_draw_no_duplicates(demo: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    args = ("search", "--task", "mask", "--trials", "6", *FAST, "--set", "max_epochs=1", "--data", demo)
    processes = [automl_process(*args, "--home", home) for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    trials = sorted(load(home).trials, key=lambda t: t.number)[:6]
    assert len(trials) == 6
    drawn = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(drawn)) == 6, drawn
