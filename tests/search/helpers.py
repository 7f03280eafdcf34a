"""What the search tests share: running `automl` in-process or as a process, and reading the study it made."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
from sqlalchemy.exc import IntegrityError, OperationalError
from typer.testing import CliRunner

from automl.cli import app
from automl.search.storage import default_storage_url

REPO = Path(__file__).resolve().parents[2]
QUICK = REPO / "search_spaces" / "quick.yaml"
# Two folds of two epochs on a tiny test model: a trial takes a second or two.
FAST = ("--space", str(QUICK), "--set", "folds=2", "--set", "max_epochs=2", "--set", "backbone=test_resnet")
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


@dataclass(frozen=True)
class Storage:
    """Where a test's study lives: the default SQLite file under its home, or a PostgreSQL database of its own."""

    kind: str = "sqlite"
    url: str | None = None

    def args(self) -> tuple[str, ...]:
        return () if self.url is None else ("--storage", self.url)

    def url_in(self, home: Path) -> str:
        return self.url or default_storage_url(home)


SQLITE = Storage()


def automl(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output + (result.stderr or "")


def automl_process(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python -m automl ARGS` in a child process that Ctrl-C (SIGINT) reaches."""
    return subprocess.Popen(
        [sys.executable, "-m", "automl", *map(str, args)],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_interruptible,
    )


def _interruptible() -> None:
    """A shell runs its background jobs with SIGINT ignored, an ignored signal survives exec, and Python then installs
    no KeyboardInterrupt handler: the tests of Ctrl-C would fail whenever pytest runs as a background job."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def load(home: Path, storage: Storage = SQLITE, name: str = "mask") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage.url_in(home))


def states(study: optuna.Study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts


def wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def finished(home: Path, storage: Storage = SQLITE) -> int:
    try:
        study = load(home, storage)
    except (KeyError, OperationalError, IntegrityError):  # no study, no storage yet, or the search is making it
        return 0
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def running_with_progress(home: Path, storage: Storage = SQLITE) -> bool:
    """A trial is running and has reported an epoch: the worker is in the middle of training."""
    try:
        running = load(home, storage).get_trials(states=(optuna.trial.TrialState.RUNNING,))
    except (KeyError, OperationalError, IntegrityError):  # as in `finished`
        return False
    return any(t.intermediate_values for t in running)
