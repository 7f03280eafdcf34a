"""Where studies live: an embedded SQLite file under the studies home, or a shared PostgreSQL / MySQL URL.

RDB storages get heartbeats: a worker killed with SIGKILL stops beating, its trial is marked FAILED after the
grace period, and its parameters are queued once more (Optuna's RetryHeartbeatStaleTrialCallback).

A database that goes away for a while (a restart, a network blip, SQLite locked by another program) does not
crash a worker: every storage call retries with backoff until the storage has been unreachable for
`OUTAGE_SECONDS`, then the worker stops with `StorageUnavailable`. Its running trial stays RUNNING in the
database it could not reach; once its heartbeat is stale, the next worker fails it and tries its parameters again.
"""

from __future__ import annotations

import os
import re
import sqlite3
import sys
import time
import warnings
from collections.abc import Callable, Container, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import optuna
from optuna.distributions import BaseDistribution
from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback, get_storage

# Optuna tells a storage with heartbeats by isinstance on this class, which it exports from no public module.
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

from automl.errors import AutomlError

if TYPE_CHECKING:
    from optuna.study._frozen import FrozenStudy

STORAGE_FILE = "automl.db"
#: The name of every study's value, shown by optuna-dashboard and `trials_dataframe`.
METRIC_NAME = "macro F1"
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


class ResilientStorage(BaseStorage, BaseHeartbeat):
    """Optuna's RDB storage, reached through the public storage interface, riding out an unreachable database.

    Every call is passed on to the backend (an RDBStorage, usually behind Optuna's cache of finished trials). A call
    that fails for want of the database (OperationalError: connection refused or lost, SQLite locked past its
    timeout) is retried with backoff while the outage is younger than OUTAGE_SECONDS, then raises
    StorageUnavailable. The outage is timed from its first failed call, so once it is over the limit later calls
    fail at once instead of each waiting again. Writes are retried too: a failed commit was rolled back, so the
    retry is the first write that counts.

    A wrapper, not a subclass: it relies only on the methods of BaseStorage and BaseHeartbeat (the heartbeat
    interface is what Optuna checks, by isinstance, to beat and to fail stale trials), so a new Optuna either works
    or refuses an abstract method it lacks, never skips the retries silently.
    """

    def __init__(self, backend: BaseStorage, url: str) -> None:
        if not isinstance(backend, BaseHeartbeat):
            raise TypeError(f"{type(backend).__name__} has no heartbeats to pass on")
        self._backend: BaseStorage = backend
        self._heartbeat: BaseHeartbeat = backend
        self.url = url
        self._outage_started: float | None = None

    # The study.
    def create_new_study(self, directions: Sequence[StudyDirection], study_name: str | None = None) -> int:
        return self._call(self._backend.create_new_study, directions, study_name)

    def delete_study(self, study_id: int) -> None:
        self._call(self._backend.delete_study, study_id)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self._call(self._backend.set_study_user_attr, study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self._call(self._backend.set_study_system_attr, study_id, key, value)

    def get_study_id_from_name(self, study_name: str) -> int:
        return self._call(self._backend.get_study_id_from_name, study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._call(self._backend.get_study_name_from_id, study_id)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return self._call(self._backend.get_study_directions, study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self._call(self._backend.get_study_user_attrs, study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self._call(self._backend.get_study_system_attrs, study_id)

    def get_all_studies(self) -> list[FrozenStudy]:
        return self._call(self._backend.get_all_studies)

    # The trials.
    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        return self._call(self._backend.create_new_trial, study_id, template_trial)

    def set_trial_param(
        self, trial_id: int, param_name: str, param_value_internal: float, distribution: BaseDistribution
    ) -> None:
        self._call(self._backend.set_trial_param, trial_id, param_name, param_value_internal, distribution)

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        return self._call(self._backend.get_trial_id_from_study_id_trial_number, study_id, trial_number)

    def get_trial_number_from_id(self, trial_id: int) -> int:
        return self._call(self._backend.get_trial_number_from_id, trial_id)

    def get_trial_param(self, trial_id: int, param_name: str) -> float:
        return self._call(self._backend.get_trial_param, trial_id, param_name)

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        return self._call(self._backend.set_trial_state_values, trial_id, state, values)

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        self._call(self._backend.set_trial_intermediate_value, trial_id, step, intermediate_value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._call(self._backend.set_trial_user_attr, trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._call(self._backend.set_trial_system_attr, trial_id, key, value)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return self._call(self._backend.get_trial, trial_id)

    def get_all_trials(
        self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        return self._call(self._backend.get_all_trials, study_id, deepcopy, states)

    def get_n_trials(self, study_id: int, state: tuple[TrialState, ...] | TrialState | None = None) -> int:
        return self._call(self._backend.get_n_trials, study_id, state)

    def get_best_trial(self, study_id: int) -> FrozenTrial:
        return self._call(self._backend.get_best_trial, study_id)

    def get_trial_params(self, trial_id: int) -> dict[str, Any]:
        return self._call(self._backend.get_trial_params, trial_id)

    def get_trial_user_attrs(self, trial_id: int) -> dict[str, Any]:
        return self._call(self._backend.get_trial_user_attrs, trial_id)

    def get_trial_system_attrs(self, trial_id: int) -> dict[str, Any]:
        return self._call(self._backend.get_trial_system_attrs, trial_id)

    def remove_session(self) -> None:
        self._backend.remove_session()

    # The heartbeats: a running trial's beat, and the trials whose beat stopped (their worker was killed).
    def record_heartbeat(self, trial_id: int) -> None:
        # Not retried: a missed beat is harmless within the grace period, and a retrying heartbeat thread would
        # hold up the end of the trial (and print a traceback when it gave up).
        try:
            self._heartbeat.record_heartbeat(trial_id)
        except Exception as error:
            if not _is_unreachable(error):
                raise

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:  # an abstract method of BaseHeartbeat
        return self._call(self._heartbeat._get_stale_trial_ids, study_id)

    def get_heartbeat_interval(self) -> int | None:
        return self._heartbeat.get_heartbeat_interval()

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self._heartbeat.get_heartbeat_stale_trial_callback()

    def _call(self, method: Callable[..., T], *args: Any) -> T:
        attempt = 0
        while True:
            try:
                result = method(*args)
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


def check_storage(url: str | None, home: Path) -> None:
    """Raise now, before any long work, for a bad URL or a database that cannot be reached. A local SQLite file is
    only checked, not created: a command that stops before its first study leaves nothing behind."""
    if _database_url(url, home)[1] != "sqlite":
        open_storage(url, home)


def _database_url(url: str | None, home: Path) -> tuple[str, str]:
    """The URL to open (default: the SQLite file under `home`) and its database kind, or a clear error."""
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
    return url, scheme


def open_storage(url: str | None, home: Path, cache_finished_trials: bool = True) -> ResilientStorage:
    """The study database at `url` (default: the SQLite file under `home`), with heartbeats and retries.

    With `cache_finished_trials` (Optuna's cache, which a study puts in front of every RDBStorage) a worker reads
    only the trials that changed since its last look. A dashboard goes without it: it must show the notes and
    attributes written to finished trials afterwards.
    """
    url, scheme = _database_url(url, home)
    engine_kwargs = {}
    if scheme == "sqlite":
        database_file = Path(make_url(url).database)
        database_file.parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"creator": lambda: _sqlite_connection(database_file)}
    else:
        engine_kwargs = {"pool_pre_ping": True}  # survive a database restart between trials
    for attempt in range(3):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)  # heartbeats: experimental in name, stable in use
            try:
                database = RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=HEARTBEAT_SECONDS,
                    grace_period=GRACE_SECONDS,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
                )
                # get_storage: the cache Optuna itself would put in front of the RDBStorage given to a study.
                return ResilientStorage(get_storage(database) if cache_finished_trials else database, database.url)
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


def _sqlite_connection(path: Path) -> sqlite3.Connection:
    """A connection to the study file in write-ahead-log mode, synced at checkpoints rather than at every commit: a
    trial's dozens of writes cost microseconds each instead of a disk flush each (12 ms apiece on a shared disk, a
    fifth of a quick trial's time). A crash of the process loses nothing; a power cut at most the last commits, never
    the file's consistency. Several local workers share the file: each waits for the lock rather than fail at once."""
    connection = sqlite3.connect(path, timeout=120, check_same_thread=False)  # Optuna's heartbeat thread shares it
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    return connection


def _describe(error: BaseException, url: str) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return scrub(f"{type(error).__name__}: {text}", url)


def load_task_study(url: str | None, home: Path, name: str, task: str) -> tuple[optuna.Study, ResilientStorage]:
    """An existing study of `task` and its storage (Optuna lists a finished trial's artifacts from the storage), with
    a clear error when there is no storage, no such study or another task."""
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
    return study, storage


def create_or_load_study(
    storage: BaseStorage, name: str, sampler: optuna.samplers.BaseSampler, pruner: optuna.pruners.BasePruner
) -> optuna.Study:
    """Create the study, or load it when another worker or machine got there first; its value is named "macro F1"
    (the dashboard and `trials_dataframe` say so instead of "Objective 0")."""
    for attempt in range(5):
        try:
            study = optuna.create_study(
                storage=storage,
                study_name=name,
                direction="maximize",
                sampler=sampler,
                pruner=pruner,
                load_if_exists=True,
            )
            break
        except Exception:  # two creators at once: the loser's INSERT fails; the study exists now
            if attempt == 4:
                raise
            time.sleep(0.5 + attempt)
    else:
        raise AssertionError("unreachable")
    if study.metric_names != [METRIC_NAME]:  # new, or made before studies were named: one write, then never again
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            study.set_metric_names([METRIC_NAME])
    return study
