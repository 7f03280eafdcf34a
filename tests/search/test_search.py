"""`automl search` as users run it: end to end, resumed, with a killed worker, with failures (workers: test_load)."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
import torch

from automl.search.artifacts import TrialArtifacts, artifact_dir
from automl.search.objective import FAIL_REASON
from automl.search.runner import _Interrupts
from automl.search.storage import default_storage_url
from automl.train import session as session_module
from tests.search.helpers import (
    FAST,
    QUICK,
    Storage,
    automl,
    automl_process,
    finished,
    load,
    running_with_progress,
    states,
    wait_for,
)


def test_search_end_to_end_with_studies_and_dashboard(demo: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    code, out = automl(
        "search", "--task", "mask", "--trials", "4", *FAST, "--data", demo, "--home", home, "--keep-top", "2"
    )
    assert code == 0, out
    assert "4 of 4 trials finished" in out
    study = load(home)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert complete and len(study.get_trials()) == 4
    best = study.best_trial
    assert 0 <= best.value <= 1
    assert len(best.user_attrs["fold_f1"]) == 2 and set(best.user_attrs["class_f1"]) == {
        "wear",
        "incorrect",
        "not_wear",
    }

    # Artifacts: config, curves and out-of-fold probabilities for every trial; weights for the top 2 only.
    files = [p for p in artifact_dir(home).iterdir()]
    assert len(files) >= 3 * len(complete)
    kept = TrialArtifacts(home, study._storage)
    weights = [artifact for t in complete for artifact in kept.weights(t)]
    assert len(weights) == 2 * min(2, len(complete))

    code, out = automl("studies", "--home", home)
    assert code == 0 and "mask" in out and f"{best.value:.4f}" in out

    port = _free_port()
    server = automl_process("dashboard", "--home", home, "--port", port)
    try:
        studies = _get_json(f"http://127.0.0.1:{port}/api/studies", wait=60)
        (entry,) = [s for s in studies["study_summaries"] if s["study_name"] == "mask"]
        detail = _get_json(f"http://127.0.0.1:{port}/api/studies/{entry['study_id']}")
        notes = [t["note"]["body"] for t in detail["trials"] if t["state"] == "Complete"]
        assert notes and all("out-of-fold macro F1" in n for n in notes)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_interrupted_search_resumes_to_exactly_n(demo: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = automl_process("search", "--task", "mask", "--trials", "3", *FAST, "--data", demo, "--home", home)
    wait_for(lambda: finished(home) >= 1)
    first.send_signal(signal.SIGINT)
    out = first.communicate(timeout=120)[0]
    assert first.returncode == 130, out
    assert "run the same command again to continue" in out and "Traceback" not in out
    after_interrupt = states(load(home))
    assert "RUNNING" not in after_interrupt

    code, out = automl("search", "--task", "mask", "--trials", "3", *FAST, "--data", demo, "--home", home)
    assert code == 0, out
    assert finished(home) == 3
    assert "RUNNING" not in states(load(home))


def test_killed_worker_trial_fails_and_is_retried(demo: Path, tmp_path: Path, storage: Storage) -> None:
    home = tmp_path / "home"
    fast_heartbeat = {"AUTOML_HEARTBEAT_SECONDS": "1"}
    args = (
        "search", "--task", "mask", "--trials", "2", *FAST, "--set", "max_epochs=3", "--data", demo, "--home", home,
        *storage.args(),
    )  # fmt: skip
    victim = automl_process(*args, env=fast_heartbeat)
    wait_for(lambda: running_with_progress(home, storage))
    (killed,) = load(home, storage).get_trials(states=(optuna.trial.TrialState.RUNNING,))
    victim.kill()  # SIGKILL: no chance to mark its trial
    victim.communicate(timeout=30)
    time.sleep(4)  # past the grace period of 3 heartbeats

    rerun = automl_process(*args, env=fast_heartbeat)
    out = rerun.communicate(timeout=300)[0]
    assert rerun.returncode == 0, out
    study = load(home, storage)
    assert study.trials[killed.number].state == optuna.trial.TrialState.FAIL
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1 and retries[0].params == killed.params
    assert retries[0].state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    assert finished(home, storage) == 2 and "RUNNING" not in states(study)


def test_diverging_trials_fail_with_their_reason(demo: Path, tmp_path: Path, storage: Storage) -> None:
    home = tmp_path / "home"
    diverge = ("--set", "optimizer=sgd", "--set", "lr=1e12", "--set", "grad_clip=none", "--set", "mix=none")
    code, out = automl(
        "search", "--task", "mask", "--trials", "2", *FAST, *diverge, "--data", demo, "--home", home, *storage.args()
    )
    assert code == 2, out
    assert "5 trials in a row failed" in out and "loss became" in out
    failed = load(home, storage).get_trials(states=(optuna.trial.TrialState.FAIL,))
    assert len(failed) == 5
    assert all("TrainingDiverged: loss became" in t.user_attrs[FAIL_REASON] for t in failed)


def test_a_study_refuses_other_data(demo: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    code, _ = automl("search", "--task", "mask", "--trials", "1", *FAST, "--data", demo, "--home", home)
    assert code == 0
    code, out = automl(
        "search", "--task", "mask", "--trials", "2", *FAST, "--set", "folds=3", "--data", demo, "--home", home
    )
    assert code == 2 and "--study NEW_NAME" in out


def test_bad_storage_and_space_are_clear_errors(demo: Path, tmp_path: Path) -> None:
    code, out = automl("search", "--task", "mask", "--storage", "redis://x", "--data", demo, "--home", tmp_path)
    assert code == 2 and "not a database URL" in out
    code, out = automl("studies", "--storage", "postgresql://ann:secret@localhost:1/studies")
    assert code == 2 and "ann:***@localhost" in out and "secret" not in out  # no driver, or no server
    code, out = automl(
        "search", "--task", "mask", "--space", QUICK, "--set", "lrr=0.1", "--data", demo, "--home", tmp_path
    )
    assert code == 2 and "lrr" in out and "lr" in out
    if not torch.cuda.is_available():
        code, out = automl("search", "--task", "mask", "--device", "cuda", "--data", demo, "--home", tmp_path)
        assert code == 2 and "no CUDA GPU" in out


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get_json(url: str, wait: float = 0) -> dict:
    deadline = time.monotonic() + wait
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.loads(response.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_ctrl_c_is_held_while_optuna_writes_a_trial() -> None:
    before = signal.getsignal(signal.SIGINT)  # default_int_handler; SIG_IGN when pytest runs as a background job
    reached = []
    with pytest.raises(KeyboardInterrupt), _Interrupts() as interrupts:
        os.kill(os.getpid(), signal.SIGINT)  # as if during study.ask(): held, not raised
        reached.append("after ask")
        with interrupts.allowed():  # the objective starts: the trial fails cleanly right here
            reached.append("objective")
    assert reached == ["after ask"]
    with pytest.raises(KeyboardInterrupt), _Interrupts() as interrupts, interrupts.allowed():
        os.kill(os.getpid(), signal.SIGINT)  # inside the objective: at once
        time.sleep(5)
    assert signal.getsignal(signal.SIGINT) is before  # restored


def test_a_fold_retried_after_out_of_memory_reports_the_retry(
    demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first attempt of every fold runs out of memory in its first epoch; the pruner sees the retries' curves."""
    from automl.search.pruning import epoch_step
    from automl.train.engine import FoldRun

    train_steps, run = FoldRun.train_steps, FoldRun.run
    retried: list[list[float]] = []

    def steps(self: FoldRun, batches, epoch: int = 1):
        if self.accumulation == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return train_steps(self, batches, epoch)

    def recorded(self: FoldRun, on_epoch, stop_after=None):
        result = run(self, on_epoch, stop_after)
        retried.append([record.val_f1 for record in result.curve])
        return result

    monkeypatch.setattr(FoldRun, "train_steps", steps)
    monkeypatch.setattr(FoldRun, "run", recorded)
    home = tmp_path / "home"
    code, out = automl(
        "search", "--task", "mask", "--trials", "1", *FAST, "--set", "pruner=none", "--data", demo, "--home", home
    )
    assert code == 0, out
    (trial,) = load(home).trials
    assert trial.state == optuna.trial.TrialState.COMPLETE and len(retried) == 2
    for fold, curve in enumerate(retried):
        reported = [trial.intermediate_values[epoch_step(fold, e, 2)] for e in range(1, len(curve) + 1)]
        assert reported == pytest.approx(curve)


def test_trials_share_the_workers_images_and_loader_processes(
    demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The device-resident path (here on the CPU, as on a GPU): the image set is uploaded once per worker and no
    process is forked per fold; trials augmented by albumentations share loader processes forked once. The cache
    holds one file per image set, and every trial says where its time went, which the summary adds up."""
    uploads: list[int] = []
    real = session_module.DeviceImages

    def counted(arrays, device):
        uploads.append(len(arrays))
        return real(arrays, device)

    monkeypatch.setattr(session_module, "DeviceImages", counted)
    forks: list[int] = []
    os.register_at_fork(after_in_parent=lambda: forks.append(1))
    home = tmp_path / "home"
    on_device = ("--set", "augment_device=gpu", "--pruner", "none")
    code, out = automl("search", "--task", "mask", "--trials", "3", *FAST, *on_device, "--data", demo, "--home", home)
    assert code == 0, out
    study = load(home)
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 3  # 3 trials x 2 folds
    assert uploads == [16 * 7] and forks == []  # one upload of the 112 images for 6 folds, no process
    # One file per image set (a face crop at a size), however many images: 112 here.
    assert [p.suffix for p in (home / "cache").rglob("*") if p.is_file()] == [".set"]

    # Shares of each trial's time, and of the study's, add up; the summary prints them.
    for trial in study.trials:
        seconds = trial.user_attrs["seconds"]
        assert seconds["training"] > 0 and seconds["validating"] > 0 and seconds["other"] >= 0
        parts = seconds["training"] + seconds["validating"] + seconds["other"]
        assert parts == pytest.approx(seconds["total"], abs=0.002)
    (line,) = [line for line in out.splitlines() if line.startswith("time: ")]
    shares = [int(word.rstrip("%")) for word in line.split() if word.endswith("%")]
    assert len(shares) == 3 and abs(sum(shares) - 100) <= 2, line
    assert "training epochs" in line and "other (set-up, saving, storage)" in line

    albumentations = ("--set", "augment_device=cpu", "--loader-workers", "2", "--study", "pooled", "--pruner", "none")
    code, out = automl("search", "--task", "mask", "--trials", "3", *FAST, *albumentations, "--data", demo,
                       "--home", home)  # fmt: skip
    assert code == 0, out
    assert len(forks) == 2  # the worker's two loader processes, for its 3 trials x 2 folds
    code, out = automl("studies", "--home", home)
    assert code == 0 and "%" in out


def test_a_tie_keeps_the_earlier_trials_weights(tmp_path: Path) -> None:
    """The search keeps weights in the export's order (ranking.best_trials): on a tie, the earlier trial ranks
    first, so a later trial with the same value does not push its weights out."""
    study = optuna.create_study(storage=default_storage_url(tmp_path), direction="maximize")
    artifacts = TrialArtifacts(tmp_path, study._storage, keep_top=1)
    weights = [{"w": torch.zeros(2)}]
    first = study.ask()
    assert artifacts.keep_weights(study, first, 0.5, weights)
    study.tell(first, 0.5)
    second = study.ask()
    assert not artifacts.keep_weights(study, second, 0.5, weights)
    study.tell(second, 0.5)
    assert len(artifacts.weights(study.trials[0])) == 1 and artifacts.weights(study.trials[1]) == []
    third = study.ask()
    assert artifacts.keep_weights(study, third, 0.6, weights)  # a better one replaces it
    study.tell(third, 0.6)
    assert artifacts.weights(study.trials[0]) == [] and len(artifacts.weights(study.trials[2])) == 1
