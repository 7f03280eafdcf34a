"""Where studies live: an embedded SQLite file under the studies home, or a shared PostgreSQL / MySQL URL.

RDB storages get heartbeats: a worker killed with SIGKILL stops beating, its trial is marked FAILED after the
grace period, and its parameters are queued once more (Optuna's RetryHeartbeatStaleTrialCallback).

A database that goes away for a while (a restart, a network blip, SQLite locked by another program) does not
crash a worker: every storage call retries with backoff until the storage has been unreachable for
`OUTAGE_SECONDS`, then the worker stops with `StorageUnavailable`. Its running trial stays RUNNING in the
database it could not reach; once its heartbeat is stale, the next worker fails it and tries its parameters again.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

from automl.errors import AutomlError

STORAGE_FILE = "automl.db"
#: Seconds between a running trial's heartbeats, and of silence after which it counts as dead.
HEARTBEAT_SECONDS = int(os.environ.get("AUTOML_HEARTBEAT_SECONDS", "10"))
GRACE_SECONDS = 3 * HEARTBEAT_SECONDS
SUPPORTED_SCHEMES = ("sqlite", "postgresql", "mysql")
#: Seconds a worker keeps retrying an unreachable storage before it stops.
OUTAGE_SECONDS = float(os.environ.get("AUTOML_STORAGE_OUTAGE_SECONDS", "120"))
#: The longest pause between two attempts.
MAX_BACKOFF_SECONDS = 8.0
_PASSWORD_IN_TEXT = re.compile(r"(?<=:)[^:/@\s]+(?=@)")

T = TypeVar("T")


class StorageUnavailable(AutomlError):
    """The study database could not be reached for OUTAGE_SECONDS: the worker stops, the study stays consistent."""


def default_storage_url(home: Path) -> str:
    """The embedded default: a SQLite file that optuna-dashboard opens as it is."""
    return f"sqlite:///{home / STORAGE_FILE}"


def redact(url: str) -> str:
    """The URL with its password masked: safe to print or store."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:  # not a URL at all, but `user:secret@host` may still hold a password
        return _PASSWORD_IN_TEXT.sub("***", url)


def scrub(text: str, url: str) -> str:
    """`text` (an error message, say) with the URL's password masked wherever it appears."""
    try:
        password = make_url(url).password
    except ArgumentError:
        password = None
    return text.replace(password, "***") if password else text


class ResilientRDBStorage(RDBStorage):
    """An RDBStorage that rides out an unreachable database instead of crashing the worker.

    Each call that fails for want of the database (OperationalError: connection refused or lost, SQLite locked
    past its timeout) is retried with backoff while the outage is younger than OUTAGE_SECONDS, then raises
    StorageUnavailable. The outage is timed from its first failed call, so once it is over the limit later calls
    fail at once instead of each waiting again. Writes are retried too: a failed commit was rolled back, so the
    retry is the first write that counts.
    """

    _outage_started: float | None = None

    def record_heartbeat(self, trial_id: int) -> None:
        # Not retried: a missed beat is harmless within the grace period, and a retrying heartbeat thread would
        # hold up the end of the trial (and print a traceback when it gave up).
        try:
            super().record_heartbeat(trial_id)
        except Exception as error:
            if not _is_unreachable(error):
                raise

    def _call(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        attempt = 0
        while True:
            try:
                result = method(self, *args, **kwargs)
            except Exception as error:
                if not _is_unreachable(error):
                    raise
                now = time.monotonic()
                if self._outage_started is None:
                    self._outage_started = now
                    _say(f"storage {redact(self.url)} is unreachable ({self._reason(error)}); retrying for up to "
                         f"{OUTAGE_SECONDS:.0f} s")  # fmt: skip
                waited = now - self._outage_started
                if waited >= OUTAGE_SECONDS:
                    raise StorageUnavailable(
                        f"storage {redact(self.url)} has been unreachable for {waited:.0f} s "
                        f"({self._reason(error)}), so this worker stopped. Nothing finished is lost: when the "
                        "database is back, run the same command again (a trial that was running is marked failed "
                        "once its heartbeat is stale, and its parameters are tried again)"
                    ) from None
                time.sleep(min(0.5 * 2**attempt, MAX_BACKOFF_SECONDS, OUTAGE_SECONDS - waited))
                attempt += 1
                continue
            if self._outage_started is not None:
                _say(f"storage {redact(self.url)} is back after {time.monotonic() - self._outage_started:.0f} s")
                self._outage_started = None
            return result

    def _reason(self, error: BaseException) -> str:
        cause = _unreachable_cause(error) or error
        first_line = (str(getattr(cause, "orig", None) or cause).strip().splitlines() or [""])[0]
        return scrub(f"{type(cause).__name__}: {first_line}", self.url)


def _retrying(method: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(method)
    def call(self: ResilientRDBStorage, *args: Any, **kwargs: Any) -> T:
        return self._call(method, *args, **kwargs)

    return call


# Every call that reads or writes the database, including the private ones Optuna's storage cache makes.
for _name in (
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr", "get_study_id_from_name",
    "get_study_name_from_id", "get_study_directions", "get_study_user_attrs", "get_study_system_attrs",
    "get_trial_user_attrs", "get_trial_system_attrs", "get_all_studies", "create_new_trial", "_create_new_trial",
    "set_trial_param", "_set_trial_param", "get_trial_param", "set_trial_state_values",
    "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr",
    "get_trial_id_from_study_id_trial_number", "get_trial", "get_all_trials", "_get_trials", "get_best_trial",
    "_get_best_trial_id", "_get_stale_trial_ids",
):  # fmt: skip
    setattr(ResilientRDBStorage, _name, _retrying(getattr(RDBStorage, _name)))


def _unreachable_cause(error: BaseException) -> BaseException | None:
    """The database error behind `error` (Optuna wraps them in StorageInternalError) if it means unreachable."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OperationalError | InterfaceError) or (
            isinstance(seen, DBAPIError) and seen.connection_invalidated
        ):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _is_unreachable(error: BaseException) -> bool:
    return _unreachable_cause(error) is not None


def _say(message: str) -> None:
    print(f"automl: {message}", file=sys.stderr, flush=True)


def open_storage(url: str | None, home: Path) -> RDBStorage:
    url = url or default_storage_url(home)
    try:
        parsed = make_url(url)
        scheme = parsed.get_backend_name()
    except ArgumentError:
        scheme = ""
    if scheme == "postgresql" and parsed.drivername == "postgresql":
        # The driver of the `postgres` extra, whichever one this SQLAlchemy version would pick by default.
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
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
    for attempt in range(3):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)  # heartbeats: experimental in name, stable in use
            try:
                return ResilientRDBStorage(
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
            except SQLAlchemyError as error:
                # Machines that start together on an empty database race to create its tables: the losers'
                # CREATE fails, and a second look finds the tables made.
                if attempt < 2:
                    time.sleep(1 + attempt)
                    continue
                raise AutomlError(f"cannot open storage {redact(url)}: {_describe(error, url)}") from None
            except Exception as error:  # bad credentials, a bad URL: all user-fixable
                raise AutomlError(f"cannot open storage {redact(url)}: {_describe(error, url)}") from None
    raise AssertionError("unreachable")


def _describe(error: BaseException, url: str) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return scrub(f"{type(error).__name__}: {text}", url)


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
