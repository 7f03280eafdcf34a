"""Running a study to N finished trials: in this process, or in N local worker processes on one storage.

`--trials N` counts finished trials (complete or pruned) across restarts, workers and machines: a worker starts
a trial only while fewer than N are finished or running, so running the same command again continues to N.
A worker also stops when the budget's deadline passes or cuts its trial (automl/search/budget.py), or when the last
`stop_after` finished trials did not improve the best (automl/search/stall.py).
Two workers that start at the very same moment can both take the last place; the later one (by trial number)
notices, ends its trial as FAILED with the reason "surplus", and stops, so the finished count stays exactly N.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import multiprocessing
import signal
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.trial import FrozenTrial, TrialState

from automl.data.cache import ImageSets
from automl.data.dataset import DataSource, load_dataset
from automl.data.study import StudyData
from automl.errors import AutomlError
from automl.search.artifacts import DiskFull, TrialArtifacts
from automl.search.budget import Deadline
from automl.search.objective import CUT_BY_BUDGET, FAIL_REASON, TIME_SPENT, KFoldObjective
from automl.search.pruning import create_pruner, step_position
from automl.search.sampler import TrialSeededTPE
from automl.search.space import SearchSpace, load_space
from automl.search.stall import trials_since_best
from automl.search.storage import ResilientStorage, StorageUnavailable, create_or_load_study, open_storage
from automl.train.loader import share_cores, usable_cores
from automl.train.session import Runtime, TrainSession

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
#: States that hold a place towards the target: finished, or on their way to it.
HOLDING_A_PLACE = (*FINISHED, TrialState.RUNNING, TrialState.WAITING)
SURPLUS = "surplus"
#: Search workers per GPU with `--workers auto`. One until several are measured to finish a study sooner on one GPU
#: (benchmarks/worker_scaling.py and the headline of benchmarks/gpu_check.sh measure 1, 2 and 4).
WORKERS_PER_GPU = 1
#: A worker stops after this many failed trials in a row: something systematic is wrong.
MAX_CONSECUTIVE_FAILURES = 5
#: Failures of the machine, not of the trial's parameters: the worker stops at once with the message.
WORKER_STOPS = (DiskFull, StorageUnavailable)

# Failed trials are reported by automl with their reason (and kept on the trial); Optuna would add tracebacks.
optuna.logging.set_verbosity(optuna.logging.ERROR)


@dataclass(frozen=True)
class SearchJob:
    """Everything a worker needs to join a study; picklable, so worker processes receive it whole."""

    source: DataSource
    task: str
    space_path: Path
    overrides: tuple[str, ...]
    home: Path
    storage_url: str | None
    study_name: str
    trials: int
    timeout: float | None = None
    deadline: Deadline | None = None  # --budget: trials stop at an epoch boundary by then
    stop_after: int | None = None  # stop when this many finished trials in a row did not improve the best
    device: str = "auto"
    keep_top: int = 3
    worker_index: int = 0
    threads: int | None = None  # CPU threads for this worker; None: PyTorch's default (every core)
    loader_workers: int | None = None  # loader processes of each fold; None: every core but one on a GPU, none on CPU

    def space(self) -> SearchSpace:
        return load_space(self.space_path, self.overrides)


@dataclass
class StudyCounts:
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    best: float | None = None
    failures: list[str] = field(default_factory=list)
    cut: list[str] = field(default_factory=list)  # "trial N: fold f epoch e, ..." of the trials the budget stopped
    progress: list[str] = field(default_factory=list)  # "trial N: fold f/F epoch e/E ..." of the running trials
    seconds: dict[str, float] = field(default_factory=dict)  # the ended trials' time: training, validating, other

    @property
    def finished(self) -> int:
        return self.complete + self.pruned

    def time_shares(self) -> dict[str, float] | None:
        """The shares of the ended trials' time spent training, validating and on everything else; None before any
        trial recorded its time."""
        total = self.seconds.get("total", 0.0)
        return None if total <= 0 else {key: self.seconds[key] / total for key in ("training", "validating", "other")}

    def describe_time(self) -> str | None:
        shares = self.time_shares()
        if shares is None:
            return None
        return (
            f"{shares['training']:.0%} training epochs, {shares['validating']:.0%} validating, {shares['other']:.0%} "
            f"other (set-up, saving, storage) of {self.seconds['total']:.0f} s in trials"
        )


def count_trials(study: optuna.Study) -> StudyCounts:
    counts = StudyCounts()
    epochs = int((study.user_attrs.get("settings") or {}).get("max_epochs", 0))
    for trial in study.get_trials(deepcopy=False):
        for key, value in (trial.user_attrs.get(TIME_SPENT) or {}).items():
            counts.seconds[key] = counts.seconds.get(key, 0.0) + value
        if trial.state == TrialState.COMPLETE:
            counts.complete += 1
            counts.best = trial.value if counts.best is None else max(counts.best, trial.value)
        elif trial.state == TrialState.PRUNED:
            counts.pruned += 1
        elif trial.state == TrialState.FAIL and CUT_BY_BUDGET in trial.user_attrs:  # not a failure of its own
            counts.cut.append(f"trial {trial.number}: {trial.user_attrs[CUT_BY_BUDGET]}")
        elif trial.state == TrialState.FAIL:
            counts.failed += 1
            counts.failures.append(f"trial {trial.number}: {trial.user_attrs.get(FAIL_REASON, 'interrupted or lost')}")
        elif trial.state == TrialState.RUNNING:
            counts.running += 1
            if trial.intermediate_values and epochs:
                counts.progress.append(f"trial {trial.number}: {reported_progress(trial, epochs)}")
    return counts


def reported_progress(trial: FrozenTrial, max_epochs: int) -> str:
    """Where a running trial is, from its last report: "fold 2 epoch 4 F1 0.612" (or "fold 2 done")."""
    step = max(trial.intermediate_values)
    fold, epoch = step_position(step, max_epochs)
    value = trial.intermediate_values[step]
    if epoch is None:
        return f"fold {fold + 1} done, mean F1 {value:.3f}"
    return f"fold {fold + 1} epoch {epoch}/{max_epochs} F1 {value:.3f}"


def open_study(job: SearchJob, space: SearchSpace) -> tuple[optuna.Study, ResilientStorage]:
    settings = space.settings
    pruner = create_pruner(
        settings.pruner,
        settings.max_epochs,
        settings.folds,
        settings.pruner_warmup_epochs,
        min_complete=settings.pruner_min_complete,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)  # group=True: conditional parameters sampled together
        # Seeded per trial number: reproducible alone, distinct across workers and machines (automl/search/sampler.py).
        sampler = TrialSeededTPE(seed=settings.seed, multivariate=True, group=True)
        storage = open_storage(job.storage_url, job.home)
        return create_or_load_study(storage, job.study_name, sampler, pruner), storage


def prepare(job: SearchJob, progress: Callable[[int, int], None] | None = None) -> tuple[SearchSpace, StudyData]:
    """Validate the space, read the data, and fill the image cache of the space's first face crop.

    Other face crops are cached when a trial first asks for them (the prior of `center` / `face` is learned then).
    """
    space = job.space()
    dataset = load_dataset(job.source)
    task = dataset.task(job.task)
    images = ImageSets(job.home, space.settings.image_size, dataset.train["path"])
    first = space.fixed_params()
    if first.face_crop == "none" or first.face_crop_box is not None:
        images.get(first.image_crop, progress=progress)
    data = StudyData.prepare(dataset, task, images, space.settings.folds, space.settings.seed)
    return space, data


def check_study_matches(study: optuna.Study, job: SearchJob, space: SearchSpace, data: StudyData) -> None:
    """A study's trials must be scored on the same images, labels, folds and epochs; record them once."""
    identity = {
        "task": job.task,
        "data": str(job.source.path.absolute()),
        "data_fingerprint": data.fingerprint,
        "data_source": job.source.to_record(),  # export-best, report and audit read it when --data is not given
        "settings": {
            k: v for k, v in asdict(space.settings).items() if k in ("folds", "max_epochs", "image_size", "seed")
        },
    }
    stored = study.user_attrs
    space_record = {
        "file": str(job.space_path),
        "sha256": hashlib.sha256(job.space_path.read_bytes()).hexdigest(),
        "overrides": list(job.overrides),
        "params": space.description(),
    }
    if not stored.get("data_fingerprint"):
        # One attribute per write: the fingerprint goes last, as the mark that the record is whole, so a worker that
        # joins meanwhile (and sees a fingerprint) never compares against a half-written record.
        for key, value in identity.items():
            if key != "data_fingerprint":
                study.set_user_attr(key, value)
        study.set_user_attr("classes", list(data.task.classes))
        study.set_user_attr("space", space_record)
        study.set_user_attr("data_fingerprint", identity["data_fingerprint"])
        return
    for key in ("task", "data_fingerprint", "settings"):
        if stored.get(key) != identity[key]:
            raise AutomlError(
                f"study {study.study_name!r} was made with other {key.replace('_', ' ')} "
                f"({stored.get(key)} here vs {identity[key]} now: data {stored.get('data')}); its trials would not "
                "be comparable. Use --study NEW_NAME for a new study, or the data and settings it was made with"
            )
    if "data_source" not in stored:  # a study from before sources were recorded: the same data, so record it
        study.set_user_attr("data_source", identity["data_source"])
    if "space" not in stored:  # a study from before spaces were recorded: this is its space from now on
        study.set_user_attr("space", space_record)
    else:
        _check_same_space(study.study_name, stored["space"], space_record)


def _check_same_space(name: str, stored: dict, now: dict) -> None:
    """The same parameters drawn the same way (comments, file paths and the pruner may differ)."""
    before, after = stored.get("params", {}), now["params"]
    changed = [k for k in sorted({*before, *after}) if before.get(k) != after.get(k)]
    if not changed:
        return
    shown = "\n".join(
        f"  {k}: {before.get(k, '(not in the space)')}  ->  {after.get(k, '(not in the space)')}" for k in changed[:10]
    )
    more = f"\n  ... and {len(changed) - 10} more" if len(changed) > 10 else ""

    def where(record: dict) -> str:
        sets = " ".join(f"--set {o}" for o in record.get("overrides", ()))
        return f"{record.get('file')} (sha256 {str(record.get('sha256'))[:12]}){' ' + sets if sets else ''}"

    raise AutomlError(
        f"study {name!r} was searched with another search space: {where(stored)}, now {where(now)}. "
        f"Changed:\n{shown}{more}\nIts trials would not be comparable with new ones: use --study NEW_NAME for a "
        "new study, or the space and --set values it was made with"
    )


def run_worker(
    job: SearchJob,
    space: SearchSpace,
    data: StudyData,
    on_trial: Callable[[optuna.Study, FrozenTrial], None] | None = None,
    on_progress: Callable[[int, str], None] | None = None,
) -> None:
    """Run trials until the study holds `job.trials` finished ones, the timeout or the budget passes, the study is
    stuck (`job.stop_after`), or it is interrupted.

    `on_progress(trial number, text)` follows the running trial epoch by epoch."""
    # What is loaded by now (libraries, the table, the images) lives as long as the worker: keep its half a million
    # objects out of the full collections that the end of every fold asks for (0.8 s each on a busy 2-core machine).
    gc.collect()
    gc.freeze()
    study, storage = open_study(job, space)
    artifacts = TrialArtifacts(job.home, storage, keep_top=job.keep_top)
    # The worker's images on the device and loader processes, for every trial it runs.
    session = TrainSession(Runtime(device=job.device, num_workers=job.loader_workers))
    objective = KFoldObjective(space, data, session, artifacts, on_progress=on_progress, deadline=job.deadline)
    timeout_at = None if job.timeout is None else time.monotonic() + job.timeout  # no new trial after it

    interrupts = _Interrupts()
    stops: list[AutomlError] = []

    def guarded(trial: optuna.Trial) -> float:
        with interrupts.allowed():
            if _is_surplus(study, trial, job.trials):
                trial.set_user_attr(FAIL_REASON, f"{SURPLUS}: the study already had {job.trials} trials")
                raise _Surplus
            try:
                return objective(trial)
            except WORKER_STOPS as error:  # the trial fails with the reason, then the worker stops
                stops.append(error)
                raise

    with interrupts, session:
        _run_trials(job, study, guarded, timeout_at, on_trial, interrupts, stops)


def _run_trials(
    job: SearchJob,
    study: optuna.Study,
    guarded: Callable[[optuna.Trial], float],
    timeout_at: float | None,
    on_trial: Callable[[optuna.Study, FrozenTrial], None] | None,
    interrupts: _Interrupts,
    stops: list[AutomlError],
) -> None:
    failures: list[str] = []
    last: list[FrozenTrial] = []
    while (timeout_at is None or time.monotonic() < timeout_at) and (job.deadline is None or not job.deadline.passed()):
        interrupts.check()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # a killed worker's trial: FAILED, its parameters queued again
        holding = study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
        if len(holding) >= job.trials:
            return
        if job.stop_after is not None and trials_since_best(study) >= job.stop_after:
            return
        try:
            study.optimize(guarded, n_trials=1, catch=(Exception,), callbacks=[lambda s, t: last.append(t)])
        except Exception as error:
            # An unreachable storage while Optuna finishes the trial surfaces as an error of Optuna's own
            # (UnboundLocalError in Optuna 5.0); the outage is what the user needs to hear about.
            outage = _outage_behind(error)
            if outage is None:
                raise
            raise outage from None
        trial = last[-1]
        if on_trial is not None:
            on_trial(study, trial)
        if stops:
            raise stops[0]
        if CUT_BY_BUDGET in trial.user_attrs:  # the next trial would be cut too
            return
        if trial.state != TrialState.FAIL:
            failures.clear()
            continue
        reason = trial.user_attrs.get(FAIL_REASON, "")
        if reason.startswith(SURPLUS):
            return
        failures.append(f"trial {trial.number}: {reason}")
        if len(failures) >= MAX_CONSECUTIVE_FAILURES:
            raise AutomlError(
                f"{len(failures)} trials in a row failed, so this worker stopped:\n  "
                + "\n  ".join(failures)
                + "\nFix the search space (or pin a parameter with --set) and run the same command again."
            )


def _outage_behind(error: BaseException) -> StorageUnavailable | None:
    seen: BaseException | None = error
    while seen is not None and not isinstance(seen, StorageUnavailable):
        seen = seen.__cause__ or seen.__context__
    return seen


class _Surplus(Exception):
    pass


class _Interrupts:
    """Ctrl-C stops the running trial at once, but never half-way through creating or finishing a trial.

    Outside the objective, Optuna is writing to the storage (`ask` inserts a RUNNING trial, `tell` finishes it);
    an interrupt there would leave a trial RUNNING for good. So Ctrl-C is held until the objective starts (which
    fails the trial cleanly) or until the current trial is told (then the worker stops).
    """

    def __init__(self) -> None:
        self.requested = False
        self.inside = False

    def __enter__(self) -> _Interrupts:
        self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self.previous)
        if self.requested and exc[0] is None:
            raise KeyboardInterrupt

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = True
        if self.inside:
            raise KeyboardInterrupt

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def allowed(self) -> Iterator[None]:
        self.check()
        self.inside = True
        try:
            yield
        finally:
            self.inside = False


def _is_surplus(study: optuna.Study, trial: optuna.Trial, target: int) -> bool:
    earlier = study.get_trials(deepcopy=False, states=HOLDING_A_PLACE)
    return sum(t.number < trial.number for t in earlier) >= target


def run_worker_process(job: SearchJob) -> None:
    """The entry point of a local worker process (spawned: it starts clean, with no parent's CUDA state)."""
    if job.threads is not None:
        import torch

        torch.set_num_threads(job.threads)
    try:
        space, data = prepare(job)
        run_worker(job, space, data)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except AutomlError as error:
        print(f"worker {job.worker_index}: error: {error}", flush=True)
        raise SystemExit(2) from None


def resolve_workers(choice: str, device: str) -> int:
    """`--workers`: a number, or auto (WORKERS_PER_GPU per visible GPU on CUDA, else 1)."""
    if choice == "auto":
        import torch

        gpus = torch.cuda.device_count() if device != "cpu" else 0
        return max(1, gpus * WORKERS_PER_GPU)
    if not choice.isdigit() or int(choice) < 1:
        raise AutomlError(f"--workers {choice!r}: give a number of worker processes (1 or more), or auto")
    return int(choice)


def start_workers(job: SearchJob, n: int) -> list[multiprocessing.Process]:
    """N worker processes on one study; with GPUs, worker i uses GPU i mod the number of GPUs.

    Each worker gets its share of the CPU cores, for its training loop and its loader processes together: N
    processes that each spread over every core slow each other down (on a busy 2-core machine a batch-norm call
    took 3.6 ms with 2 threads against 0.5 ms with 1).
    """
    import torch

    gpus = torch.cuda.device_count() if job.device != "cpu" else 0
    share = share_cores(usable_cores(), n, gpus > 0, job.loader_workers)
    context = multiprocessing.get_context("spawn")
    processes = []
    for index in range(n):
        device = f"cuda:{index % gpus}" if gpus else job.device
        worker = replace(
            job, worker_index=index, device=device, threads=share.threads, loader_workers=share.loader_workers
        )
        process = context.Process(target=run_worker_process, args=(worker,), name=f"automl-worker-{index}")
        process.start()
        processes.append(process)
    return processes


def wait_for_workers(
    processes: list[multiprocessing.Process], study: optuna.Study, on_poll: Callable[[StudyCounts], None]
) -> list[int]:
    """Poll the study while the workers run; returns their exit codes."""
    while any(p.is_alive() for p in processes):
        with contextlib.suppress(StorageUnavailable):  # the workers say so themselves, and stop
            on_poll(count_trials(study))
        for process in processes:
            process.join(timeout=2 / len(processes))
    with contextlib.suppress(StorageUnavailable):
        on_poll(count_trials(study))
    return [p.exitcode for p in processes]
