"""Faults a long study meets, and what must hold after each: no finished trial lost, no trial left RUNNING, the study
continues or resumes, and the user reads a clear message.

Also in the fault suite: kill -9 of a worker and a loss that becomes NaN (test_search.py, on both storages),
Ctrl-C during a trial (test_search.py) and during the export (tests/export/test_export.py).
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages import RDBStorage
from sqlalchemy.exc import OperationalError

import automl.search.storage as storage_module
from automl.search.artifacts import artifact_dir
from automl.search.objective import FAIL_REASON
from automl.search.storage import StorageUnavailable
from tests.search.conftest import PostgresServer
from tests.search.helpers import (
    FAST,
    FINISHED,
    Storage,
    automl,
    automl_process,
    finished,
    load,
    running_with_progress,
    states,
    wait_for,
)

# Three epochs per fold: a trial lasts long enough to be caught in the middle.
SLOW = (*FAST, "--set", "max_epochs=3")


def finished_numbers(home: Path, storage: Storage) -> set[int]:
    return {t.number for t in load(home, storage).get_trials(states=FINISHED)}


def test_postgres_going_away_is_ridden_out_or_stops_cleanly(
    demo: Path, tmp_path: Path, postgres: PostgresServer, postgres_storage: Storage
) -> None:
    home, storage = tmp_path / "home", postgres_storage
    args = ("search", "--task", "mask", "--trials", "4", *SLOW, "--data", demo, "--home", home, *storage.args())
    # Heartbeats every second: the rerun finds the abandoned trial stale at once.
    env = {"AUTOML_STORAGE_OUTAGE_SECONDS": "15", "AUTOML_HEARTBEAT_SECONDS": "1"}
    worker = automl_process(*args, env=env)
    try:
        # A restart of a few seconds in the middle of a trial: the worker waits and goes on.
        wait_for(lambda: running_with_progress(home, storage))
        postgres.stop()
        time.sleep(3)
        postgres.start()
        wait_for(lambda: finished(home, storage) >= 1)
        wait_for(lambda: running_with_progress(home, storage))
        before = finished_numbers(home, storage)
        # An outage longer than the worker waits: it stops with a message, its trial left to the heartbeat.
        postgres.stop()
        out = worker.communicate(timeout=120)[0]
    finally:
        postgres.start()
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 2, out
    assert "is unreachable" in out and "is back after" in out, out
    assert "has been unreachable for" in out and "run the same command again" in out, out
    assert "Traceback" not in out and storage.url.split(":")[2].split("@")[0] not in out  # no password shown
    (abandoned,) = load(home, storage).get_trials(states=(optuna.trial.TrialState.RUNNING,))

    time.sleep(4)  # past the grace period of 3 heartbeats
    rerun = automl_process(*args, env=env)
    out = rerun.communicate(timeout=300)[0]
    assert rerun.returncode == 0, out
    study = load(home, storage)
    assert before <= finished_numbers(home, storage)  # nothing finished was lost
    assert finished(home, storage) == 4 and "RUNNING" not in states(study)
    assert study.trials[abandoned.number].state == optuna.trial.TrialState.FAIL
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == abandoned.number]
    assert len(retried) == 1 and retried[0].params == abandoned.params


def test_sqlite_locked_by_another_program_is_waited_out(demo: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    worker = automl_process("search", "--task", "mask", "--trials", "3", *SLOW, "--data", demo, "--home", home)
    wait_for(lambda: running_with_progress(home))
    # A backup tool or an sqlite3 shell holds the whole file for a few seconds.
    locker = sqlite3.connect(str(home / "automl.db"), timeout=60, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    time.sleep(5)
    locker.execute("COMMIT")
    locker.close()
    out = worker.communicate(timeout=300)[0]
    assert worker.returncode == 0, out
    assert "database is locked" not in out and "Traceback" not in out
    assert finished(home) == 3 and "RUNNING" not in states(load(home))


def test_full_disk_fails_the_trial_and_stops_the_worker(
    demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    args = ("search", "--task", "mask", "--data", demo, "--home", home, *FAST)
    code, out = automl(*args, "--trials", "1")
    assert code == 0, out
    kept = {p.name: p.read_bytes() for p in artifact_dir(home).iterdir()}

    def full(source, target, *rest):  # the first bytes fit, then the disk is full
        target.write(source.read(16))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as patch:
        patch.setattr(shutil, "copyfileobj", full)
        code, out = automl(*args, "--trials", "3")
    assert code == 2, out
    assert "no space left on device" in out and "free some space" in out and str(artifact_dir(home)) in out
    assert "5 trials in a row" not in out  # it stopped at once: every later trial would fail the same way
    study = load(home)
    assert states(study) == {"COMPLETE": 1, "FAIL": 1} or states(study) == {"PRUNED": 1, "FAIL": 1}
    (failed,) = study.get_trials(states=(optuna.trial.TrialState.FAIL,))
    assert failed.user_attrs[FAIL_REASON].startswith("DiskFull: no space left on device")
    # Nothing half-written: the first trial's files as they were, and no scraps of the failed writes.
    assert {p.name: p.read_bytes() for p in artifact_dir(home).iterdir()} == kept

    code, out = automl(*args, "--trials", "3")  # space freed: the study resumes
    assert code == 0, out
    assert finished(home) == 3 and "RUNNING" not in states(load(home))


def test_corrupt_image_stops_a_joining_worker_and_spares_the_study(demo: Path, tmp_path: Path) -> None:
    data, home = tmp_path / "data", tmp_path / "home"
    shutil.copytree(demo, data)
    args = ("search", "--task", "mask", "--trials", "4", *SLOW, "--data", data, "--home", home)
    first = automl_process(*args)
    wait_for(lambda: finished(home) >= 1)
    # The data changes under a running study (a sync tool, a bad disk): one photo is cut short.
    damaged = sorted((data / "train" / "images").rglob("mask1.jpg"))[0]
    damaged.write_bytes(damaged.read_bytes()[:200])
    joining = automl_process(*args)
    out = joining.communicate(timeout=300)[0]
    assert joining.returncode == 2, out
    assert str(damaged) in " ".join(out.split()) and "replace the file" in out and "Traceback" not in out
    # The running worker decoded every image before its first trial: it goes on to the end.
    out = first.communicate(timeout=300)[0]
    assert first.returncode == 0, out
    assert finished(home) == 4 and "RUNNING" not in states(load(home))


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_storage_retries_a_while_then_gives_up_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The retry logic alone, on a storage whose every call fails for a while."""
    monkeypatch.setattr(storage_module, "OUTAGE_SECONDS", 1.5)
    shared = storage_module.open_storage(None, tmp_path)
    trial_id = optuna.create_study(storage=shared, study_name="s").ask()._trial_id
    failures = {"left": 2}
    real = RDBStorage.get_all_studies

    def flaky(self: RDBStorage, *args: object) -> list:
        if failures["left"]:
            failures["left"] -= 1
            raise OperationalError("SELECT", {}, Exception("unable to open database file"))
        return real(self)

    monkeypatch.setattr(RDBStorage, "get_all_studies", flaky)
    assert [s.study_name for s in shared.get_all_studies()] == ["s"]  # two failures ridden out
    failures["left"] = 1000
    with pytest.raises(StorageUnavailable, match=r"unreachable for \d+ s .*run the same command again"):
        shared.get_all_studies()
    started = time.monotonic()
    with pytest.raises(StorageUnavailable):
        shared.get_all_studies()  # still down: it fails at once instead of waiting again
    assert time.monotonic() - started < 1
    # A heartbeat that cannot be written is skipped: raised, it would end the heartbeat thread with a traceback.
    monkeypatch.setattr(RDBStorage, "record_heartbeat", flaky)
    shared.record_heartbeat(trial_id)
