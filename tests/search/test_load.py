"""Load: 4 workers x 25 trials of the quick space on one study end with exactly 100 finished trials and no lock or
integrity errors, on the embedded SQLite file (4 local workers) and on PostgreSQL (4 commands, as 4 machines).

The quick space is trimmed to the least that still trains, to keep CI short: 8 people (56 images), 2 folds of
1 epoch each; every searched parameter (backbone, loss, optimizer, sampler, mixing) is still searched.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch

from automl.data.demo import write_demo_data
from automl.search import runner
from automl.search.objective import FAIL_REASON
from automl.search.runner import SearchJob, start_workers
from tests.search.helpers import QUICK, SQLITE, Storage, automl_process, finished, load

TRIALS, WORKERS = 100, 4
TINY = ("--space", str(QUICK), "--set", "folds=2", "--set", "max_epochs=1")
# What a storage under contention would print; a traceback is never expected either.
TROUBLE = ("database is locked", "integrityerror", "unique constraint", "deadlock", "traceback", "unreachable")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo_data(tmp_path_factory.mktemp("load") / "demo", people=8, seed=5, eval_people=0)


def check_study(home: Path, storage: Storage, outputs: list[str]) -> None:
    for out in outputs:
        assert not [word for word in TROUBLE if word in out.lower()], out
    assert finished(home, storage) == TRIALS
    trials = load(home, storage).get_trials()
    assert sorted(t.number for t in trials) == list(range(len(trials)))  # numbered once each, no gaps
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    # Only a worker that lost the race for the last place may leave a trial, marked as surplus.
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert all(t.user_attrs.get(FAIL_REASON, "").startswith("surplus") for t in failed), failed


def test_four_local_workers_on_sqlite(tiny: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    run = automl_process(
        "search", "--task", "mask", "--trials", TRIALS, "--workers", WORKERS, *TINY, "--data", tiny, "--home", home
    )
    out = run.communicate(timeout=900)[0]
    assert run.returncode == 0, out
    assert f"{TRIALS} of {TRIALS} trials finished" in out
    check_study(home, SQLITE, [out])


def test_four_machines_on_postgres(tiny: Path, tmp_path: Path, postgres_storage: Storage) -> None:
    # The multi-machine recipe: the same command on each machine, one database URL, each with its own home (so its
    # own image cache and artifacts), all started at once on an empty database; one core each.
    homes = [tmp_path / f"machine{index}" for index in range(WORKERS)]
    runs = [
        automl_process(
            "search",
            "--task",
            "mask",
            "--trials",
            TRIALS,
            *TINY,
            "--data",
            tiny,
            "--home",
            home,
            *postgres_storage.args(),
            env={"OMP_NUM_THREADS": "1"},
        )  # fmt: skip
        for home in homes
    ]
    outputs = [run.communicate(timeout=900)[0] for run in runs]
    for run, out in zip(runs, outputs, strict=True):
        assert run.returncode == 0, out
    check_study(homes[0], postgres_storage, outputs)
    assert all(any((home / "artifacts").iterdir()) for home in homes)  # every machine ran trials


def test_search_workers_are_started_with_their_share_of_the_cores(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    started: list[SearchJob] = []

    class Worker:
        def __init__(self, target, args, name):
            started.append(args[0])

        def start(self) -> None:
            pass

    class Context:
        Process = Worker

    monkeypatch.setattr(runner.multiprocessing, "get_context", lambda method: Context)
    monkeypatch.setattr(runner, "usable_cores", lambda: 16)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    job = SearchJob(None, "mask", tmp_path, (), tmp_path, None, "mask", 1, device="auto")
    start_workers(job, 3)
    assert [(j.device, j.threads, j.loader_workers) for j in started] == [("cuda:0", 1, 4)] * 3
