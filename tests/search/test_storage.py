"""The storage wrapper: Optuna's heartbeats, its artifacts and our retries all work through the public interface."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta, upload_artifact
from optuna.distributions import FloatDistribution
from optuna.storages import BaseStorage, fail_stale_trials
from optuna.trial import TrialState

import automl.search.storage as storage_module
from automl.search.storage import ResilientStorage, open_storage

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # ask/tell without optimize: as intended here


def test_every_storage_call_goes_through_the_retries() -> None:
    """Optuna's BaseStorage methods all pass through the wrapper (a new one would be inherited, unretried)."""
    public = {name for name in vars(BaseStorage) if not name.startswith("_")}
    assert public - set(vars(ResilientStorage)) == {"check_trial_is_updatable"}  # pure logic over get_trial


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.parametrize("cached", [True, False])
def test_a_trial_whose_heartbeat_stopped_is_failed_and_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cached: bool
) -> None:
    monkeypatch.setattr(storage_module, "HEARTBEAT_SECONDS", 1)
    monkeypatch.setattr(storage_module, "GRACE_SECONDS", 1)
    storage = open_storage(None, tmp_path, cache_finished_trials=cached)
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask({"x": FloatDistribution(0, 1)})
    storage.record_heartbeat(trial._trial_id)  # then the worker is killed: no more beats
    time.sleep(2.5)
    fail_stale_trials(study)  # what the next worker's optimize() does first
    dead, retry = study.get_trials(deepcopy=False)
    assert dead.state == TrialState.FAIL and retry.state == TrialState.WAITING
    assert retry.system_attrs["failed_trial"] == dead.number and retry.params == dead.params


def test_artifacts_are_listed_through_the_storage(tmp_path: Path) -> None:
    storage = open_storage(None, tmp_path)
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    (tmp_path / "a.txt").write_text("a")
    store = FileSystemArtifactStore(str(tmp_path))
    upload_artifact(artifact_store=store, file_path=str(tmp_path / "a.txt"), study_or_trial=trial)
    study.tell(trial, 1.0)
    (frozen,) = study.trials
    assert [m.filename for m in get_all_artifact_meta(frozen, storage=storage)] == ["a.txt"]
