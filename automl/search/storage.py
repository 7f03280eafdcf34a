"""Where studies live: an embedded SQLite file under the studies home, or a shared PostgreSQL / MySQL URL.

RDB storages get heartbeats: a worker killed with SIGKILL stops beating, its trial is marked FAILED after the
grace period, and its parameters are queued once more (Optuna's RetryHeartbeatStaleTrialCallback).
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from automl.errors import AutomlError

STORAGE_FILE = "automl.db"
#: Seconds between a running trial's heartbeats, and of silence after which it counts as dead.
HEARTBEAT_SECONDS = int(os.environ.get("AUTOML_HEARTBEAT_SECONDS", "10"))
GRACE_SECONDS = 3 * HEARTBEAT_SECONDS
SUPPORTED_SCHEMES = ("sqlite", "postgresql", "mysql")


def default_storage_url(home: Path) -> str:
    """The embedded default: a SQLite file that optuna-dashboard opens as it is."""
    return f"sqlite:///{home / STORAGE_FILE}"


def redact(url: str) -> str:
    """The URL with its password masked: safe to print or store."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def open_storage(url: str | None, home: Path) -> RDBStorage:
    url = url or default_storage_url(home)
    try:
        scheme = make_url(url).get_backend_name()
    except ArgumentError:
        scheme = ""
    if scheme not in SUPPORTED_SCHEMES:
        raise AutomlError(
            f"--storage {redact(url)!r} is not a database URL; use sqlite:///FILE, "
            "postgresql://USER:PASSWORD@HOST/DB or mysql://USER:PASSWORD@HOST/DB"
        )
    engine_kwargs = {}
    if scheme == "sqlite":
        Path(make_url(url).database).parent.mkdir(parents=True, exist_ok=True)
        # Several local workers share one file: wait for the lock rather than fail at once.
        engine_kwargs = {"connect_args": {"timeout": 120}}
    else:
        engine_kwargs = {"pool_pre_ping": True}  # survive a database restart between trials
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)  # heartbeats: experimental in name, stable in use
        try:
            return RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=HEARTBEAT_SECONDS,
                grace_period=GRACE_SECONDS,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
            )
        except ImportError:  # Optuna's word for a missing database driver
            extra = "postgres" if scheme == "postgresql" else "mysql"
            raise AutomlError(
                f"the database driver for {redact(url)} is not installed: "
                f"pip install -e '.[{extra}]' (MySQL URLs then start with mysql+pymysql://)"
            ) from None
        except Exception as error:  # server down, bad credentials: all user-fixable
            raise AutomlError(f"cannot open storage {redact(url)}: {type(error).__name__}: {error}") from None


def load_task_study(url: str | None, home: Path, name: str, task: str) -> optuna.Study:
    """An existing study of `task`, with a clear error when there is no storage, no such study or another task."""
    if url is None and not (home / STORAGE_FILE).is_file():
        raise AutomlError(f"no studies in {home} yet: run automl search --task {task} first (or pass --home)")
    storage = open_storage(url, home)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        known = ", ".join(optuna.get_all_study_names(storage)) or "none"
        raise AutomlError(
            f"no study named {name!r} (studies there: {known}); run automl search --task {task} first"
        ) from None
    found = study.user_attrs.get("task")
    if found is not None and found != task:
        raise AutomlError(f"study {name!r} searched task {found!r}, not {task!r}; pass --task {found}")
    return study


def create_or_load_study(
    storage: RDBStorage, name: str, sampler: optuna.samplers.BaseSampler, pruner: optuna.pruners.BasePruner
) -> optuna.Study:
    """Create the study, or load it when another worker or machine got there first."""
    for attempt in range(5):
        try:
            return optuna.create_study(
                storage=storage,
                study_name=name,
                direction="maximize",
                sampler=sampler,
                pruner=pruner,
                load_if_exists=True,
            )
        except Exception:  # two creators at once: the loser's INSERT fails; the study exists now
            if attempt == 4:
                raise
            time.sleep(0.5 + attempt)
    raise AssertionError("unreachable")
