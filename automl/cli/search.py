"""Commands of the search: run it, list its parameters and studies, fetch the weights, watch it in the dashboard."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from automl.search.budget import Deadline
    from automl.search.runner import SearchJob, StudyCounts

from automl.cli.app import (
    DataOptions,
    FaceDetectorOpt,
    HomeOpt,
    LoaderWorkersOpt,
    StorageOpt,
    StudyOpt,
    app,
    console,
    ensure_face_detector,
    progress_bars,
    with_data_options,
)
from automl.cli.log import LogFormatOpt, RunLog
from automl.errors import AutomlError
from automl.home import resolve_home


@app.command()
@with_data_options
def search(
    task: Annotated[str, typer.Option(help="The task to search (mask, gender, age, all, or a label column).")],
    options: DataOptions,
    trials: Annotated[int, typer.Option(help="Finished trials the study should have in total.", min=1)] = 20,
    space: Annotated[
        Path | None, typer.Option(help="A search-space file. Default: search_spaces/<task>.yaml.", show_default=False)
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="KEY=VALUE pins a parameter or setting of the space; repeatable."),
    ] = None,
    pruner: Annotated[
        str | None,
        typer.Option(help="median, percentile, hyperband, halving, wilcoxon or none (default: the space's)."),
    ] = None,
    storage: StorageOpt = None,
    study: StudyOpt = None,
    workers: Annotated[
        str,
        typer.Option(
            help="Local worker processes on the study, a number or auto: on CUDA, WORKERS_PER_GPU (search/runner.py) "
            "per visible GPU, shared round-robin; on a CPU, 1 (one process already uses every core)."
        ),
    ] = "auto",
    timeout: Annotated[
        float | None, typer.Option(help="Seconds after which no new trial starts.", show_default=False)
    ] = None,
    budget: Annotated[
        str | None,
        typer.Option(
            help="Wall time of the whole search, like 90s, 20m, 2h or 1h30m: it ends by then, a running trial stopping "
            "at an epoch boundary (marked cut by the budget, its finished folds kept, never counted as complete).",
            show_default=False,
        ),
    ] = None,
    then_export: Annotated[
        bool,
        typer.Option(
            "--then-export",
            help="Export the study when the search ends (as export-best with its defaults, into "
            "<home>/exports/<study>); with --budget, the export's time is reserved inside the budget.",
        ),
    ] = False,
    stop_after: Annotated[
        int | None,
        typer.Option(
            help="Stop when this many finished trials in a row did not improve the best.", min=1, show_default=False
        ),
    ] = None,
    log_format: LogFormatOpt = "auto",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    loader_workers: LoaderWorkersOpt = None,
    keep_top: Annotated[int, typer.Option(help="Keep fold weights of this many best trials.", min=1)] = 3,
    face_detector: FaceDetectorOpt = None,
) -> None:
    """Run (or continue) a study: every trial trains all folds and scores out-of-fold macro F1."""
    from automl.search.budget import Deadline, parse_duration

    # Before anything: the budget counts from the start, and a mistyped option writes nothing.
    whole = None if budget is None else Deadline.after(parse_duration(budget))
    deadline = whole
    if whole is not None and then_export:  # the search ends early enough for the export to fit
        reserved = EXPORT_SHARE * whole.seconds
        deadline = Deadline(at=whole.at - reserved, seconds=whole.seconds - reserved)
    log = RunLog(log_format)
    # Imported here: torch and timm take seconds to load, and `automl --help` should not wait for them.
    from automl.search.runner import (
        SearchJob,
        check_study_matches,
        count_trials,
        open_study,
        prepare,
        resolve_workers,
        run_worker,
        start_workers,
        wait_for_workers,
    )
    from automl.search.space import default_space_path, load_space
    from automl.search.storage import check_storage, default_storage_url, redact
    from automl.train.device import resolve_device

    resolve_device(device)
    count = resolve_workers(workers, device)
    overrides = tuple(set_ or ()) + ((f"pruner={pruner}",) if pruner else ())
    space_path = space or default_space_path(task)
    searched = load_space(space_path, overrides)
    check_storage(storage, options.home_dir)  # a bad URL or an unreachable database is said before any download
    # Before the demo data is made, any image cached or any worker started: trials only read these caches.
    _ensure_downloads(searched.pretrained_backbones(), searched.needs_face_detector(), face_detector)
    job = SearchJob(
        source=options.source(),
        task=task,
        space_path=space_path,
        overrides=overrides,
        home=options.home_dir,
        storage_url=storage,
        study_name=study or task,
        trials=trials,
        timeout=timeout,
        deadline=deadline,
        stop_after=stop_after,
        device=device,
        keep_top=keep_top,
        loader_workers=loader_workers,
    )
    if log.live:
        with progress_bars() as progress:
            bar = progress.add_task("caching images", total=None)
            search_space, study_data = prepare(job, progress=lambda d, t: progress.update(bar, completed=d, total=t))
    else:
        search_space, study_data = prepare(job, progress=lambda d, t: log.progress(f"caching images {d}/{t}"))
    found, _ = open_study(job, search_space)
    check_study_matches(found, job, search_space, study_data)
    where = redact(storage or default_storage_url(job.home))
    before = count_trials(found)
    log.say(
        f"study {job.study_name} in {where}: {before.finished} of {trials} trials finished; "
        f"space {job.space_path}, {search_space.settings.folds} folds, up to {search_space.settings.max_epochs} "
        f"epochs, {len(study_data.true_labels)} images"
        + ("" if deadline is None else f"; budget {deadline.describe()}")
        + ("" if stop_after is None else f"; stops after {stop_after} trials in a row without a better one"),
        "start",
    )
    watch = _SearchProgress(job.study_name, trials) if log.live else _SearchLog(log, found)
    with watch:
        watch.show(before)
        if count == 1:
            run_worker(job, search_space, study_data, watch.trial_done, watch.show_trial)
        else:
            processes = start_workers(job, count)
            try:
                codes = wait_for_workers(processes, found, watch.show)
            except KeyboardInterrupt:
                for process in processes:
                    process.join(timeout=30)
                raise
            if any(code not in (0, None) for code in codes):
                raise AutomlError(f"worker exit codes {codes}; see their messages above")
    _print_study_summary(found, job, log)
    if then_export:
        _export(job, whole, log, face_detector)


#: With --then-export and --budget, the share of the budget kept for the export: its default plan trains at most a
#: tenth of the search's fold fits (export/plan.py), and it also predicts and writes.
EXPORT_SHARE = 0.15
#: Of the time left for the export, the share its plan may spend training (the rest: judging, predicting, writing).
PLAN_SHARE = 0.6


def _export(job: SearchJob, whole: Deadline | None, log: RunLog, face_detector: Path | None) -> None:
    """export-best with its defaults on the study just searched, within what is left of the budget."""
    from automl.cli.export import report_export, run_logged
    from automl.export.runner import ExportJob

    left = None if whole is None else max(1.0, whole.remaining())
    log.say(f"exporting study {job.study_name}" + ("" if left is None else f" in the {left:.0f} s left"), "start")
    export = ExportJob(
        source=job.source, task=job.task, home=job.home, out=job.home / "exports" / job.study_name,
        storage_url=job.storage_url, study_name=job.study_name, device=job.device,
        loader_workers=job.loader_workers, budget=None if left is None else PLAN_SHARE * left,
    )  # fmt: skip
    report_export(run_logged(export, log), job.home, log)


def _ensure_downloads(backbones: tuple[str, ...], detector: bool, given_detector: Path | None = None) -> None:
    """The backbones' weights and (when `detector`) the face detector, found or downloaded; one message for all
    that cannot be had."""
    from automl.train.weights import ensure_weights

    problems = []
    try:
        ensure_weights(backbones, announce=lambda text: console.print(text, markup=False))
    except AutomlError as error:
        problems.append(str(error))
    try:
        ensure_face_detector(given_detector, detector)
    except AutomlError as error:
        problems.append(str(error))
    if problems:
        raise AutomlError("\n".join(problems))


class _SearchProgress(Progress):
    """A progress bar over finished trials, with pruned, failed and the best F1 so far."""

    def __init__(self, name: str, target: int):
        self.trial_line = ""  # the running trials (fold, epoch, F1, images/s), on a line under the bar
        super().__init__(
            TextColumn(f"study {name}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeRemainingColumn(),
            console=console,
        )
        self.target = target
        self.handle = self.add_task(name, total=target, stats="")

    def show(self, counts: StudyCounts) -> None:
        best = "-" if counts.best is None else f"{counts.best:.4f}"
        stats = f"pruned {counts.pruned}  failed {counts.failed}  running {counts.running}  best F1 {best}"
        self.update(self.handle, completed=min(counts.finished, self.target), stats=stats)
        if counts.progress:  # several workers: what they wrote on their trials
            self._show_trials("   ".join(counts.progress))

    def show_trial(self, number: int, text: str) -> None:
        self._show_trials(f"trial {number}: {text}")

    def trial_done(self, study: optuna.Study, trial: FrozenTrial) -> None:
        from automl.search.runner import count_trials

        self.show(count_trials(study))

    def _show_trials(self, text: str) -> None:
        self.trial_line = text
        self.refresh()

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        if self.trial_line:
            yield Text(f"  {self.trial_line}", overflow="ellipsis", no_wrap=True)


class _SearchLog:
    """The search for a file (`RunLog`): one line per finished trial, the running trials at most once a minute."""

    def __init__(self, log: RunLog, study: optuna.Study):
        from optuna.trial import TrialState

        self.log, self.study = log, study
        self.ended = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        self.seen = {t.number for t in study.get_trials(deepcopy=False, states=self.ended)}  # before this run

    def __enter__(self) -> _SearchLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self._new_trials()  # the last ones the workers finished

    def show(self, counts: StudyCounts) -> None:
        """Several workers: what ended since the last poll, and where the running trials are."""
        self._new_trials()
        if counts.progress:
            self.log.progress("   ".join(counts.progress))

    def show_trial(self, number: int, text: str) -> None:
        self.log.progress(f"trial {number}: {text}", trial=number)

    def trial_done(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.seen.add(trial.number)
        self._say_trial(trial)

    def _new_trials(self) -> None:
        for trial in self.study.get_trials(deepcopy=False, states=self.ended):
            if trial.number not in self.seen:
                self.seen.add(trial.number)
                self._say_trial(trial)

    def _say_trial(self, trial: FrozenTrial) -> None:
        text, fields = describe_trial(trial, int((self.study.user_attrs.get("settings") or {}).get("max_epochs", 0)))
        self.log.say(text, "trial", **fields)


def describe_trial(trial: FrozenTrial, max_epochs: int) -> tuple[str, dict]:
    """A finished trial in one line ("trial 7 complete: macro F1 0.6123 in 34 s; lr=0.0012 ...") and as fields."""
    from optuna.trial import TrialState

    from automl.search.objective import CUT_BY_BUDGET, FAIL_REASON
    from automl.search.runner import reported_progress

    seconds = trial.duration.total_seconds() if trial.duration is not None else None
    took = "" if seconds is None else f" in {seconds:.0f} s"
    if trial.state == TrialState.COMPLETE:
        state, how = "complete", f": macro F1 {trial.value:.4f}{took}"
    elif trial.state == TrialState.PRUNED:
        where = reported_progress(trial, max_epochs) if trial.intermediate_values and max_epochs else "the start"
        state, how = "pruned", f" at {where}{took}"
    elif CUT_BY_BUDGET in trial.user_attrs:
        state, how = "cut", f" by the budget{took} at {trial.user_attrs[CUT_BY_BUDGET]}"
    else:
        state, how = "failed", f"{took}: {trial.user_attrs.get(FAIL_REASON, 'interrupted or lost')}"
    params = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
    fields = {"number": trial.number, "state": state, "f1": trial.value, "seconds": seconds, "params": trial.params}
    return f"trial {trial.number} {state}{how}; {params}", fields


def _print_study_summary(study: optuna.Study, job: SearchJob, log: RunLog) -> None:
    from automl.search.runner import count_trials
    from automl.search.stall import trials_since_best

    counts = count_trials(study)
    cut = f", {len(counts.cut)} cut by the budget" if counts.cut else ""
    log.say(
        f"{counts.finished} of {job.trials} trials finished ({counts.complete} complete, {counts.pruned} pruned), "
        f"{counts.failed} failed{cut}",
        "summary",
    )
    for failure in counts.failures[-5:]:
        log.say(f"  failed {failure}", "summary")
    if job.deadline is not None:
        left = job.deadline.remaining()
        state = "used up" if left <= 0 else f"{left:.0f} s left"
        log.say(f"budget {job.deadline.describe()}: {state}", "summary")
        for cut_trial in counts.cut[-3:]:
            log.say(f"  cut {cut_trial} (failed, not counted as finished; its finished folds are kept)", "summary")
    if job.stop_after is not None:
        since = trials_since_best(study)
        if since >= job.stop_after:
            log.say(f"stopped: {since} finished trials in a row did not improve the best (--stop-after)", "summary")
    time = counts.describe_time()
    if time is not None:
        log.say(f"time: {time}", "summary")
    if counts.best is not None:
        best = study.best_trial
        log.say(
            f"best: trial {best.number}, out-of-fold macro F1 {best.value:.4f} (a selection score: the best of "
            f"{counts.complete} trials, each fold at its best epoch; automl export-best gives the honest estimate)",
            "summary",
        )
        for key, value in best.params.items():
            log.say(f"  {key} = {value}", "summary")
    log.say("Watch it with: automl dashboard   (or: automl studies)", "summary")


@app.command()
def params() -> None:
    """List every training parameter a search space or --set can give: type, allowed values, default, description."""
    from automl.train.params import params_table

    typer.echo(params_table(), nl=False)


@app.command()
def studies(storage: StorageOpt = None, home: HomeOpt = None) -> None:
    """List the studies with their best value and counts of complete, pruned and failed trials."""
    import optuna

    from automl.search.runner import count_trials
    from automl.search.storage import default_storage_url, open_storage, redact

    home_dir = resolve_home(home)
    url = storage or default_storage_url(home_dir)
    shared = open_storage(url, home_dir)
    found = optuna.get_all_study_names(shared)
    if not found:
        console.print(f"no studies in {redact(url)} yet: start one with automl search --task TASK")
        return
    table = Table(title=f"studies in {redact(url)}", title_justify="left")
    table.caption = "best F1: the best trial's out-of-fold macro F1, a selection score (export-best: honest F1)"
    table.caption += "; time: shares of trial time training / validating / other (set-up, saving, storage)"
    table.caption += "; cut: trials the budget stopped"
    for column in ("study", "task", "best F1", "complete", "pruned", "failed", "cut", "running", "time"):
        table.add_column(column, justify="left" if column in ("study", "task") else "right")
    for name in found:
        loaded = optuna.load_study(study_name=name, storage=shared)
        counts = count_trials(loaded)
        best = "-" if counts.best is None else f"{counts.best:.4f}"
        shares = counts.time_shares()
        time = "-" if shares is None else " / ".join(f"{share:.0%}" for share in shares.values())
        table.add_row(
            name, str(loaded.user_attrs.get("task", "?")), best, *map(str, (counts.complete, counts.pruned,
            counts.failed, len(counts.cut), counts.running)), time,
        )  # fmt: skip
    console.print(table)


@app.command()
def weights(
    backbones: Annotated[
        list[str] | None,
        typer.Argument(help="timm model names (resnet18, convnext_nano.in12k_ft_in1k, ...).", show_default=False),
    ] = None,
    space: Annotated[
        Path | None,
        typer.Option(
            help="Every backbone this search-space file can draw pretrained, and the face detector if it crops faces.",
            show_default=False,
        ),
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="With --space: KEY=VALUE pins a parameter, as in search.")
    ] = None,
    detector: Annotated[
        bool, typer.Option("--detector", help="Also the YuNet face detector of face crops face and aligned.")
    ] = False,
    check: Annotated[bool, typer.Option("--check", help="Only list what is cached and what is missing.")] = False,
) -> None:
    """Download the pretrained weights (and face detector) a space needs into the standard Hugging Face / torch hub
    cache.

    For machines without internet: run it on a connected one, then copy the cache (printed below) across.
    """
    from huggingface_hub import constants as hub_constants

    from automl.data.face_model import FILENAME, SOURCE, cached_model, model_problem
    from automl.search.space import load_space
    from automl.train.backbone import check_backbone_name
    from automl.train.weights import cached_weights, weights_problem, weights_source

    names = list(backbones or ())
    for name in names:
        check_backbone_name(name)  # a typo gets timm's close matches
    if space is not None:
        searched = load_space(space, tuple(set_ or ()))
        names += searched.pretrained_backbones()
        detector = detector or searched.needs_face_detector()
        if not names and not detector:
            console.print(f"{space} loads no pretrained weights (pretrained: false, or a weights_file), finds no faces")
            return
    if not names and not detector:
        raise AutomlError(
            "name the backbones (automl weights resnet18 convnext_nano), a space (--space FILE), or --detector"
        )
    if not check:
        _ensure_downloads(tuple(names), detector)
    console.print(f"in {hub_constants.HF_HUB_CACHE} (copy this folder to offline machines):")
    missing = []
    for name in dict.fromkeys(names):
        source = weights_source(name)
        path = cached_weights(source)
        problem = "missing" if path is None else weights_problem(path)
        if problem is not None:
            missing.append(name)
        console.print(f"  {name} ({source}): {problem or path}", markup=False, soft_wrap=True)
    if detector:
        path = cached_model()
        problem = "missing" if path is None else model_problem(path)
        if problem is not None:
            missing.append("--detector")
        console.print(f"  face detector ({SOURCE}, {FILENAME}): {problem or path}", markup=False, soft_wrap=True)
    if missing:
        console.print(f"{len(missing)} missing: run `automl weights {' '.join(missing)}` on a connected machine")
        raise typer.Exit(1)


@app.command()
def dashboard(
    storage: StorageOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 exposes it to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    home: HomeOpt = None,
) -> None:
    """Start optuna-dashboard on the studies' storage, with their artifacts and notes."""
    from optuna.artifacts import FileSystemArtifactStore
    from optuna_dashboard import run_server

    from automl.search.artifacts import artifact_dir
    from automl.search.storage import default_storage_url, open_storage, redact

    home_dir = resolve_home(home)
    url = storage or default_storage_url(home_dir)
    artifacts = artifact_dir(home_dir)
    artifacts.mkdir(parents=True, exist_ok=True)
    console.print(f"optuna-dashboard on http://{host}:{port}/ for {redact(url)} (Ctrl-C to stop)")
    # Uncached: the dashboard shows notes and attributes written to finished trials after it read them.
    shared = open_storage(url, home_dir, cache_finished_trials=False)
    run_server(shared, host=host, port=port, artifact_store=FileSystemArtifactStore(artifacts))
