"""The `automl` command line: one thin command per verb, no logic beyond arguments and display."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import click
import numpy as np
import pandas as pd
import typer
from rich.console import Console, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

if TYPE_CHECKING:
    import optuna

    from automl.report.inputs import StudyRef
    from automl.search.runner import StudyCounts

from automl.atomic import write_csv_atomic
from automl.data.cache import ImageCache
from automl.data.crop_sheet import write_crop_sheet
from automl.data.dataset import DataSource, load_dataset
from automl.data.demo import DEMO_DEFAULT_PEOPLE, ensure_demo_data, write_demo_data
from automl.data.face_crop import FaceCrop, is_tight, learn_prior, prior_sample
from automl.data.folds import assign_folds, fold_class_counts
from automl.data.images import verify_images
from automl.data.label_noise import NOISE_FIELDS, NOISE_FILE, read_label_noise
from automl.data.tasks import DEFAULT_AGE_BINS, parse_age_bins
from automl.errors import AutomlError
from automl.home import resolve_home

console = Console()
T = TypeVar("T")
errors = Console(stderr=True)


class _Commands(TyperGroup):
    """Turns a user's mistake (AutomlError) into a clear message and exit code 2, with no traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except AutomlError as error:
            errors.print(f"error: {error}", style="red", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            errors.print("interrupted: what finished is saved; run the same command again to continue", style="yellow")
            raise typer.Exit(130) from None


app = typer.Typer(
    cls=_Commands,
    help="Hyperparameter search and AutoML for face-attribute image classification.\n\n"
    "Without --data, every command uses a built-in demo data set (synthetic faces in the competition layout).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

DataOpt = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="A competition folder (train/train.csv), a CSV of images and labels, or a folder with one "
        "sub-folder per class. Default: the demo data under the studies home (export-best, report, audit: "
        "the data the study was searched on).",
        show_default=False,
    ),
]
LabelsOpt = Annotated[
    str | None, typer.Option("--labels", help="CSV data: comma-separated label columns (default: its text columns).")
]
PathColumnOpt = Annotated[str, typer.Option("--path-column", help="CSV data: the column with image paths.")]
GroupColumnOpt = Annotated[
    str | None,
    typer.Option("--group-column", help="CSV data: the column naming the person or source photo (default: 'group')."),
]
AgeBinsOpt = Annotated[str, typer.Option("--age-bins", help="Age group edges: 30,60 means <30 / 30-59 / >=60.")]
FixesOpt = Annotated[
    Path | None, typer.Option("--label-fixes", help="A CSV of id,field,value label corrections applied when loading.")
]
HomeOpt = Annotated[
    Path | None,
    typer.Option("--home", help="The studies home (caches, studies, demo data). Default: $AUTOML_HOME or ./studies."),
]
DEFAULT_AGE_BINS_TEXT = ",".join(map(str, DEFAULT_AGE_BINS))


@dataclass(frozen=True)
class DataOptions:
    """The data options every data command takes (`--data`, the CSV and label options, `--home`), defined once."""

    data: Path | None = None
    labels: str | None = None
    path_column: str = "path"
    group_column: str | None = None
    age_bins: str = DEFAULT_AGE_BINS_TEXT
    label_fixes: Path | None = None
    home: Path | None = None

    @property
    def home_dir(self) -> Path:
        return resolve_home(self.home)

    def source(self, data: Path | None = None) -> DataSource:
        """The source these options name; without --data (or `data`), the demo data, made once."""
        return DataSource(
            path=data or self.data or _demo_data(self.home_dir),
            path_column=self.path_column,
            group_column=self.group_column,
            label_columns=tuple(c.strip() for c in self.labels.split(",") if c.strip()) if self.labels else (),
            age_bins=parse_age_bins(self.age_bins),
            label_fixes=self.label_fixes,
        )

    def label_options(self) -> list[str]:
        """The options given besides --data and --home (they describe a --data)."""
        defaults = DataOptions()
        names = ("labels", "path_column", "group_column", "age_bins", "label_fixes")
        return ["--" + n.replace("_", "-") for n in names if getattr(self, n) != getattr(defaults, n)]


_DATA_OPTIONS = {
    "data": DataOpt,
    "labels": LabelsOpt,
    "path_column": PathColumnOpt,
    "group_column": GroupColumnOpt,
    "age_bins": AgeBinsOpt,
    "label_fixes": FixesOpt,
    "home": HomeOpt,
}


def with_data_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give a command that takes `options: DataOptions` the seven data options on its command line."""
    signature = inspect.signature(command, eval_str=True)
    defaults = DataOptions()
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=getattr(defaults, name), annotation=hint)
        for name, hint in _DATA_OPTIONS.items()
    ]
    kept = [p for p in signature.parameters.values() if p.name != "options"]

    @functools.wraps(command)
    def wrapper(**kwargs: object) -> None:
        options = DataOptions(**{name: kwargs.pop(name) for name in _DATA_OPTIONS})  # type: ignore[arg-type]
        return command(options=options, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=[*kept, *added])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in (*kept, *added)}
    return wrapper


def _demo_data(home: Path) -> Path:
    target = home / "demo-data"
    if not target.exists():
        console.print(f"Creating the demo data set in {target} (once; pass --data to use your own)")
    with _progress() as progress:
        bar = progress.add_task("demo photos", total=None)
        return ensure_demo_data(home, progress=lambda done, total: progress.update(bar, completed=done, total=total))


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def _tracked(description: str, total: int | None, work: Callable[[Callable[[int], None]], T]) -> T:
    """`work(step)` under a progress bar; `step(n)` advances it by n."""
    with _progress() as progress:
        bar = progress.add_task(description, total=total)
        return work(lambda n: progress.advance(bar, n))


@app.command("demo-data")
def demo_data(
    directory: Annotated[Path, typer.Argument(help="Where to write the data set (must not exist yet).")],
    people: Annotated[int, typer.Option(help="How many people in train (7 photos each).", min=1)] = DEMO_DEFAULT_PEOPLE,
    seed: Annotated[int, typer.Option(help="The same seed writes the same files.")] = 0,
    label_noise: Annotated[
        float,
        typer.Option(help="Give this share of the people one wrong label each (0.05: 5%), listed in label_noise.csv."),
    ] = 0.0,
    noise_fields: Annotated[
        str, typer.Option(help="With --label-noise: the fields that take turns being wrong (gender, age, mask).")
    ] = ",".join(NOISE_FIELDS),
) -> None:
    """Write a synthetic data set in the competition layout: faces with mask, gender and age cues."""
    fields = tuple(f.strip() for f in noise_fields.split(",") if f.strip())
    with _progress() as progress:
        bar = progress.add_task("demo photos", total=None)
        write_demo_data(
            directory,
            people=people,
            seed=seed,
            progress=lambda d, t: progress.update(bar, completed=d, total=t),
            label_noise=label_noise,
            noise_fields=fields,
        )
    console.print(f"Wrote {people} people to {directory}. Try: automl check --data {directory}")
    if label_noise > 0:
        planted = read_label_noise(directory / NOISE_FILE)
        console.print(
            f"Planted {planted['person'].nunique()} people's wrong labels ({', '.join(fields)}): "
            f"{directory / NOISE_FILE} lists them"
        )


@app.command()
@with_data_options
def check(
    options: DataOptions,
    show_crops: Annotated[
        int | None,
        typer.Option(
            "--show-crops",
            help="Also draw the face crop of N training images into one PNG and print the detection rate.",
            min=1,
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="With --show-crops: the PNG to write. Default: <home>/crops/<data>-<mode>.png.", show_default=False
        ),
    ] = None,
    face_crop: Annotated[str, typer.Option(help="With --show-crops: the mode to show (none, center, face).")] = "face",
    face_crop_margin: Annotated[
        float, typer.Option(help="With --show-crops: share of the box added on each side, 0 to 1.")
    ] = 0.2,
    face_crop_box: Annotated[
        str | None,
        typer.Option(
            help="With --show-crops: the prior box x0,y0,x1,y1 as shares of the image (default: learned).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Validate a data set (every row, every image decoded) and summarise people, images and classes."""
    crop = FaceCrop(face_crop, face_crop_margin, _parse_box(face_crop_box)) if show_crops else None
    dataset = load_dataset(options.source())
    paths = dataset.image_paths()
    with _progress() as progress:
        bar = progress.add_task("decoding images", total=len(paths))
        verify_images(paths, progress=lambda n: progress.advance(bar, n))

    console.print(f"[bold]{dataset.root}[/] ({dataset.layout} layout)")
    console.print(
        f"people (groups): {dataset.num_groups}   images: {len(dataset.train)}   "
        f"eval images: {0 if dataset.eval is None else len(dataset.eval)}"
    )
    for name, task in dataset.tasks.items():
        counts = np.bincount(task.labels(dataset.train), minlength=task.num_classes)
        table = Table(title=f"task {name}: {task.num_classes} classes", title_justify="left")
        table.add_column("class")
        table.add_column("images", justify="right")
        table.add_column("share", justify="right")
        for class_name, count in zip(task.classes, counts, strict=True):
            table.add_row(class_name, str(count), f"{count / counts.sum():.1%}")
        console.print(table)
    if dataset.fixes is not None:
        for line in dataset.fixes.lines():
            console.print(line, markup=False)
    notes = dataset.notes
    console.print(f"problems found: {len(notes) or 'none'}")
    for note in notes[:20]:
        console.print(f"  - {note}", markup=False)
    if len(notes) > 20:
        console.print(f"  ... and {len(notes) - 20} more")
    if crop is not None and show_crops is not None:
        target = out or options.home_dir / "crops" / f"{dataset.root.name}-{crop.mode}.png"
        _show_crops(list(dataset.train["path"]), show_crops, crop, target)


def _parse_box(text: str | None) -> tuple[float, float, float, float] | None:
    if text is None:
        return None
    try:
        box = tuple(float(v) for v in text.split(","))
    except ValueError:
        box = ()
    if len(box) != 4:
        raise AutomlError(f"--face-crop-box {text!r}: write four shares of the image x0,y0,x1,y1 like 0.2,0.1,0.8,0.7")
    return box  # type: ignore[return-value]


def _show_crops(paths: list[str], count: int, crop: FaceCrop, target: Path) -> None:
    """The crop contact sheet of `count` training images; the prior learned from the training images if not set."""
    if crop.mode != "none" and crop.box is None:
        with _progress() as progress:
            bar = progress.add_task("learning the prior box", total=len(prior_sample(len(paths))))
            prior = learn_prior(paths, progress=lambda n: progress.advance(bar, n))
        crop = replace(crop, box=prior.box)
        where = f"learned from {prior.faces} faces in {prior.sampled} sampled training images"
        if not prior.learned:
            where = f"the whole image: only {prior.faces} faces in {prior.sampled} sampled training images"
        console.print(f"prior box {list(prior.box)} ({where})", markup=False)
    with _progress() as progress:
        bar = progress.add_task("drawing crops", total=min(count, len(paths)))
        summary = write_crop_sheet(paths, count, crop, target, progress=lambda n: progress.advance(bar, n))
    if crop.mode == "face" and is_tight(crop.prior):
        console.print(
            "the prior box covers most of the photo (the photos are face crops already, or too few faces were "
            "found to learn a prior), so 'face' keeps the prior box instead of cropping to the detector's boxes"
        )
    elif crop.mode == "face":
        console.print(
            f"face detected and used in {summary.detected} of {summary.images} images "
            f"({summary.detection_rate:.0%}); the others fell back to the prior box"
        )
    console.print(
        f"Wrote {target} ({crop.mode} crop, margin {crop.margin:g}: green = detected face, grey = prior box, "
        "blue = crop, orange = crop from the fallback)",
        markup=False,
    )


@app.command()
@with_data_options
def folds(
    task: Annotated[str, typer.Option(help="The task to stratify by (mask, gender, age, all, or a label column).")],
    out: Annotated[Path, typer.Option(help="The CSV to write: image_id, path, group, label, fold.")],
    options: DataOptions,
    n_folds: Annotated[int, typer.Option("--folds", help="Number of folds.")] = 5,
    seed: Annotated[int, typer.Option(help="The same seed gives the same folds on every machine.")] = 0,
) -> None:
    """Write the fold of every image: stratified by the task's label, no person in two folds."""
    dataset = load_dataset(options.source())
    chosen = dataset.task(task)
    codes = chosen.labels(dataset.train)
    fold_of = assign_folds(codes, dataset.train["group"].to_numpy(), n_folds, seed)
    table = dataset.train[["image_id", "path", "group"]].assign(label=np.asarray(chosen.classes)[codes], fold=fold_of)
    write_csv_atomic(table, out)

    counts = fold_class_counts(codes, fold_of, chosen.num_classes)
    view = Table(title=f"{n_folds} folds for task {task} (images per class)", title_justify="left")
    view.add_column("fold")
    view.add_column("people", justify="right")
    for class_name in chosen.classes:
        view.add_column(class_name, justify="right")
    groups = pd.Series(dataset.train["group"].to_numpy()).groupby(fold_of).nunique()
    for fold, row in enumerate(counts):
        view.add_row(str(fold), str(groups[fold]), *(f"{n} ({n / row.sum():.0%})" for n in row))
    console.print(view)
    console.print(f"Wrote {out}")


StorageOpt = Annotated[
    str | None,
    typer.Option(
        "--storage",
        envvar="AUTOML_STORAGE",  # keeps a password off the command line, where `ps` shows it to every user
        help="A database URL shared by workers (postgresql://..., mysql://..., sqlite:///...). "
        "Default: sqlite:///<home>/automl.db.",
        show_default=False,
    ),
]
LoaderWorkersOpt = Annotated[
    int | None,
    typer.Option(
        help="Image loader processes per worker (default: on a GPU, the worker's share of the cores but one; "
        "on CPU, none).",
        min=0,
        show_default=False,
    ),
]
StudyOpt = Annotated[str | None, typer.Option(help="The study name (default: the task).", show_default=False)]


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
    workers: Annotated[int, typer.Option(help="Local worker processes on the study (one GPU each).", min=1)] = 1,
    timeout: Annotated[
        float | None, typer.Option(help="Seconds after which no new trial starts.", show_default=False)
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    loader_workers: LoaderWorkersOpt = None,
    keep_top: Annotated[int, typer.Option(help="Keep fold weights of this many best trials.", min=1)] = 3,
) -> None:
    """Run (or continue) a study: every trial trains all folds and scores out-of-fold macro F1."""
    # Imported here: torch and timm take seconds to load, and `automl --help` should not wait for them.
    from automl.search.runner import (
        SearchJob,
        check_study_matches,
        count_trials,
        open_study,
        prepare,
        run_worker,
        start_workers,
        wait_for_workers,
    )
    from automl.search.space import default_space_path, load_space
    from automl.search.storage import default_storage_url, open_storage, redact
    from automl.train.device import resolve_device

    resolve_device(device)
    overrides = tuple(set_ or ()) + ((f"pruner={pruner}",) if pruner else ())
    space_path = space or default_space_path(task)
    searched = load_space(space_path, overrides)
    open_storage(storage, options.home_dir)  # a bad URL or an unreachable database is said before any download
    # Before the demo data is made, any image cached or any worker started: trials only read the weights cache.
    _ensure_weights(searched.pretrained_backbones())
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
        device=device,
        keep_top=keep_top,
        loader_workers=loader_workers,
    )
    with _progress() as progress:
        bar = progress.add_task("caching images", total=None)
        search_space, study_data = prepare(job, progress=lambda d, t: progress.update(bar, completed=d, total=t))
    found, _ = open_study(job, search_space)
    check_study_matches(found, job, search_space, study_data)
    where = redact(storage or default_storage_url(job.home))
    before = count_trials(found)
    console.print(
        f"study [bold]{job.study_name}[/] in {where}: {before.finished} of {trials} trials finished; "
        f"space {job.space_path}, {search_space.settings.folds} folds, up to {search_space.settings.max_epochs} "
        f"epochs, {len(study_data.true_labels)} images"
    )
    with _SearchProgress(job.study_name, trials) as bar:
        bar.show(before)
        show = bar.show
        if workers == 1:
            run_worker(job, search_space, study_data, lambda s, t: show(count_trials(s)), bar.show_trial)
        else:
            processes = start_workers(job, workers)
            try:
                codes = wait_for_workers(processes, found, show)
            except KeyboardInterrupt:
                for process in processes:
                    process.join(timeout=30)
                raise
            if any(code not in (0, None) for code in codes):
                raise AutomlError(f"worker exit codes {codes}; see their messages above")
    _print_study_summary(found, trials)


def _ensure_weights(backbones: tuple[str, ...]) -> None:
    from automl.train.weights import ensure_weights

    ensure_weights(backbones, announce=lambda text: console.print(text, markup=False))


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

    def _show_trials(self, text: str) -> None:
        self.trial_line = text
        self.refresh()

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        if self.trial_line:
            yield Text(f"  {self.trial_line}", overflow="ellipsis", no_wrap=True)


def _print_study_summary(study: optuna.Study, target: int) -> None:
    from automl.search.runner import count_trials

    counts = count_trials(study)
    console.print(
        f"{counts.finished} of {target} trials finished ({counts.complete} complete, {counts.pruned} pruned), "
        f"{counts.failed} failed"
    )
    for failure in counts.failures[-5:]:
        console.print(f"  failed {failure}", markup=False)
    if counts.best is not None:
        best = study.best_trial
        console.print(
            f"best: trial {best.number}, out-of-fold macro F1 {best.value:.4f} (a selection score: the best of "
            f"{counts.complete} trials, each fold at its best epoch; automl export-best gives the honest estimate)"
        )
        for key, value in best.params.items():
            console.print(f"  {key} = {value}", markup=False)
    console.print("Watch it with: automl dashboard   (or: automl studies)")


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
    for column in ("study", "task", "best F1", "complete", "pruned", "failed", "running"):
        table.add_column(column, justify="left" if column in ("study", "task") else "right")
    for name in found:
        loaded = optuna.load_study(study_name=name, storage=shared)
        counts = count_trials(loaded)
        best = "-" if counts.best is None else f"{counts.best:.4f}"
        table.add_row(
            name, str(loaded.user_attrs.get("task", "?")), best, *map(str, (counts.complete, counts.pruned,
            counts.failed, counts.running)),
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
        typer.Option(help="Every backbone this search-space file can draw pretrained.", show_default=False),
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="With --space: KEY=VALUE pins a parameter, as in search.")
    ] = None,
    check: Annotated[bool, typer.Option("--check", help="Only list what is cached and what is missing.")] = False,
) -> None:
    """Download the pretrained weights a space needs into the standard Hugging Face / torch hub cache.

    For machines without internet: run it on a connected one, then copy the cache (printed below) across.
    """
    from huggingface_hub import constants as hub_constants

    from automl.search.space import load_space
    from automl.train.backbone import check_backbone_name
    from automl.train.weights import cached_weights, weights_problem, weights_source

    names = list(backbones or ())
    for name in names:
        check_backbone_name(name)  # a typo gets timm's close matches
    if space is not None:
        names += load_space(space, tuple(set_ or ())).pretrained_backbones()
        if not names:
            console.print(f"{space} loads no pretrained weights (pretrained: false, or a weights_file)")
            return
    if not names:
        raise AutomlError("name the backbones (automl weights resnet18 convnext_nano) or a space (--space FILE)")
    if not check:
        _ensure_weights(tuple(names))
    console.print(f"pretrained weights in {hub_constants.HF_HUB_CACHE} (copy this folder to offline machines):")
    missing = []
    for name in dict.fromkeys(names):
        source = weights_source(name)
        path = cached_weights(source)
        problem = "missing" if path is None else weights_problem(path)
        if problem is not None:
            missing.append(name)
        console.print(f"  {name} ({source}): {problem or path}", markup=False, soft_wrap=True)
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
    run_server(open_storage(url, home_dir), host=host, port=port, artifact_store=FileSystemArtifactStore(artifacts))


@app.command()
@with_data_options
def cache(
    options: DataOptions,
    task: Annotated[
        str, typer.Option(help="Cache for this task's search space (search_spaces/<task>.yaml).")
    ] = "generic",
    space: Annotated[
        Path | None, typer.Option(help="Cache for this search-space file instead.", show_default=False)
    ] = None,
    size: Annotated[
        int | None,
        typer.Option(help="Shorter side of the cached images, in pixels (default: the space's image_size).", min=8),
    ] = None,
) -> None:
    """Decode and resize every image once into the cache that trials and workers share.

    It fills the cache a search with the space will read: its image size, and every face crop it can draw.
    """
    from automl.search.space import default_space_path, load_space

    chosen = load_space(space or default_space_path(task))
    image_size = size or chosen.settings.image_size
    dataset = load_dataset(options.source())
    paths = dataset.image_paths()
    train = list(dataset.train["path"])
    prior = None
    for crop in chosen.face_crops() or [FaceCrop()]:
        if crop.mode != "none" and crop.box is None:  # the prior box a study learns from the training images
            if prior is None:
                sampled = len(prior_sample(len(train)))
                prior = _tracked("learning the prior box", sampled, lambda step: learn_prior(train, step)).box
            crop = replace(crop, box=prior)
        image_cache = ImageCache(options.home_dir, image_size, crop)
        what = f"caching images ({image_size} px, face crop {crop.mode})"
        _, stats = _tracked(what, len(paths), lambda step, c=image_cache: c.load(paths, progress=step))
        console.print(
            f"{image_size} px, face crop {crop.mode}: {stats.built} image(s) decoded, {stats.reused} reused",
            markup=False,
        )
    console.print(f"cache: {image_cache.root}", markup=False)


@app.command("export-best")
@with_data_options
def export_best(
    task: Annotated[str, typer.Option(help="The task whose study to export (mask, gender, age, all, ...).")],
    options: DataOptions,
    top_k: Annotated[int, typer.Option("--top-k", help="How many of the best complete trials to ensemble.")] = 3,
    out: Annotated[
        Path | None, typer.Option(help="The export folder. Default: <home>/exports/<study>.", show_default=False)
    ] = None,
    mode: Annotated[
        str, typer.Option(help="folds: one model per fold (honest out-of-fold figures); full: one on all data.")
    ] = "folds",
    distinct_backbones: Annotated[
        bool, typer.Option("--distinct-backbones", help="At most one member per backbone (top-k vote).")
    ] = False,
    method: Annotated[
        str,
        typer.Option(
            help="How members are chosen: best_trial, top_k_vote, greedy (ensemble selection over every complete "
            "trial), or auto: the one with the best honest (cross-fitted) F1."
        ),
    ] = "auto",
    decision_rule: Annotated[
        str,
        typer.Option(help="Per-class weights that raise macro F1 (argmax of p * w): on, off, or auto (by honest F1)."),
    ] = "auto",
    ensemble_size: Annotated[
        int, typer.Option(help="Greedy selection: at most this many picks (with replacement).", min=1)
    ] = 10,
    bags: Annotated[
        int, typer.Option(help="Greedy selection: bag it over this many random halves (0: none).", min=0)
    ] = 0,
    combine: Annotated[
        bool,
        typer.Option(
            "--combine", help="With --task all: compose the 18 classes from the mask, gender and age exports."
        ),
    ] = False,
    part: Annotated[
        list[str] | None,
        typer.Option("--part", help="With --combine: TASK=EXPORT_DIR (default <home>/exports/TASK); repeatable."),
    ] = None,
    storage: StorageOpt = None,
    study: StudyOpt = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    loader_workers: LoaderWorkersOpt = None,
) -> None:
    """Retrain the best trials of a study, ensemble them, and predict the eval images (submission.csv)."""
    home_dir = options.home_dir
    if combine:
        _export_combined(task, part or [], out or home_dir / "exports" / "combined", home_dir)
        return
    from automl.export.greedy import GreedyOptions
    from automl.export.runner import FIGURES_NOTE, ExportJob, describe_rule, run_export
    from automl.train.device import resolve_device

    resolve_device(device)
    job = ExportJob(
        source=_study_source(options, task, storage, study),
        task=task,
        home=home_dir,
        out=out or home_dir / "exports" / (study or task),
        storage_url=storage,
        study_name=study,
        top_k=top_k,
        mode=mode,
        distinct_backbones=distinct_backbones,
        device=device,
        method=method,
        decision_rule=decision_rule,
        greedy=GreedyOptions(size=ensemble_size, bags=bags),
        loader_workers=loader_workers,
    )
    with _progress() as progress:
        bar = progress.add_task("export", total=None)
        result = run_export(job, lambda text, d, t: progress.update(bar, description=text, completed=d, total=t))
    info = result.info
    console.print(
        f"export of study [bold]{info.study}[/] ({info.mode} mode): {result.trained} model(s) trained, "
        f"{result.kept} copied from the search's kept fold weights, {result.reused} reused from an earlier run"
        + (f" (trained: {', '.join(result.newly_trained)})" if result.newly_trained else "")
    )
    e = info.ensemble
    table = Table(title="members: out-of-fold macro F1 (selection scores)", title_justify="left")
    for column in ("member", "trial", "backbone", "study F1", "retrained OOF F1", "weight"):
        table.add_column(column, justify="left" if column in ("member", "backbone") else "right")
    weights = dict(zip(e["members"], e["weights"], strict=True))
    for index, member in enumerate(info.members):
        table.add_row(
            member.name, str(member.trial), member.config["backbone"], f"{member.study_value:.4f}",
            f"{member.oof_f1:.4f}", f"{weights.get(index, 0.0):.3f}",
        )  # fmt: skip
    console.print(table)
    candidates = Table(title=f"methods over {e['library']} complete trial(s)", title_justify="left")
    for column in ("method", "selection F1", "honest F1"):
        candidates.add_column(column, justify="left" if column == "method" else "right")
    for name, figures in e["candidates"].items():
        candidates.add_row(name, f"{figures['selection_f1']:.4f}", f"{figures['honest_f1']:.4f}")
    console.print(candidates)
    console.print(f"chosen: {e['selection']} ({e['method']} vote), TTA {' + '.join(info.tta['views'])}, decision rule "
                  f"{describe_rule(info)}", markup=False)  # fmt: skip
    console.print(f"[bold]honest F1 {e['honest_f1']:.4f}[/] (cross-fitted), selection F1 {e['selection_f1']:.4f}")
    console.print(FIGURES_NOTE.replace("**", ""), markup=False)
    console.print(f"Wrote {result.directory}" + (f" and {result.submission}" if result.submission else ""))


def _export_combined(task: str, parts: list[str], out: Path, home: Path) -> None:
    from automl.data.tasks import COMBINED_PARTS, COMBINED_TASK
    from automl.export.bundle import PREDICTIONS_FILE, SUBMISSION_FILE, write_json
    from automl.export.decision import decide
    from automl.export.submission import combine_parts, combined_rule, predictions_table, write_submission

    if task != COMBINED_TASK:
        raise AutomlError(f"--combine composes the {COMBINED_TASK!r} task; use --task {COMBINED_TASK} --combine")
    folders = {name: home / "exports" / name for name in COMBINED_PARTS}
    for item in parts:
        name, sep, folder = item.partition("=")
        if not sep or name not in COMBINED_PARTS:
            raise AutomlError(f"--part {item!r}: write TASK=EXPORT_DIR with TASK one of {', '.join(COMBINED_PARTS)}")
        folders[name] = Path(folder)
    ids, probs, classes = combine_parts(folders)
    rule = combined_rule(folders)
    codes = decide(probs, rule.class_weights)
    write_csv_atomic(predictions_table(ids, probs, classes, codes), out / PREDICTIONS_FILE)
    write_submission(ids, codes, out / SUBMISSION_FILE)
    write_json(out / "combination.json", {"parts": folders, **vars(rule)})
    console.print(f"combined {', '.join(f'{k}: {v}' for k, v in folders.items())}", markup=False)
    console.print(
        f"18 classes, out-of-fold macro F1 on the training images: argmax {rule.argmax_f1:.4f}; with the decision "
        f"rule honest F1 {rule.honest_f1:.4f} (cross-fitted), selection F1 {rule.selection_f1:.4f}: "
        + ("rule applied" if rule.class_weights is not None else "rule not applied")
        + " (the parts' own choices are their exports', made on every fold)"
    )
    console.print(f"Wrote {out / SUBMISSION_FILE} ({len(ids)} rows, classes mask*6 + gender*3 + age)")


@app.command()
@with_data_options
def report(
    task: Annotated[str, typer.Option(help="The task whose study to report (mask, gender, age, all, ...).")],
    options: DataOptions,
    out: Annotated[
        Path | None,
        typer.Option(help="The HTML file to write. Default: <home>/reports/<study>.html.", show_default=False),
    ] = None,
    export: Annotated[
        Path | None,
        typer.Option(help="The study's export folder for the ensemble's figures. Default: <home>/exports/<study>."),
    ] = None,
    storage: StorageOpt = None,
    study: StudyOpt = None,
) -> None:
    """One self-contained HTML page of a study's figures (opens offline); also shown in optuna-dashboard."""
    from automl.report.build import build_report

    ref = _study_ref(options, task, storage, study)
    result = build_report(ref, out, export)
    for section in result.sections:
        if section.note:
            console.print(f"  {section.title}: {section.note}", markup=False)
    console.print(
        f"Wrote {result.path} ({result.attached} figures; also attached to the study for optuna-dashboard). "
        "Open it in a browser: no server needed."
    )


@app.command()
@with_data_options
def audit(
    options: DataOptions,
    task: Annotated[
        str | None,
        typer.Option(help="The task whose study to audit (mask, gender, age, all, ...).", show_default=False),
    ] = None,
    top: Annotated[
        int, typer.Option(help="Write at most this many flagged labels, the most contradicted people first.", min=1)
    ] = 100,
    trials: Annotated[
        int, typer.Option(help="Average the out-of-fold probabilities of this many best trials.", min=1)
    ] = 3,
    out: Annotated[
        Path | None,
        typer.Option(
            help="The audit folder (audit.csv, audit.html; default <home>/audits/<study>), or with "
            "--apply-confirmed the label-fixes file to write (default: label_fixes.csv beside the audit file).",
            show_default=False,
        ),
    ] = None,
    apply_confirmed: Annotated[
        Path | None,
        typer.Option(
            "--apply-confirmed",
            help="An audit.csv whose confirm column you filled: add its confirmed rows to a label-fixes file.",
            show_default=False,
        ),
    ] = None,
    export: Annotated[
        Path | None,
        typer.Option(help="Use this export's ensemble probabilities. Default: <home>/exports/<study> if it exists."),
    ] = None,
    storage: StorageOpt = None,
    study: StudyOpt = None,
) -> None:
    """Rank the labels the study's out-of-fold predictions contradict most (confident learning), per person."""
    if apply_confirmed is not None:
        from automl.report.confirm import write_fixes

        target = out or apply_confirmed.with_name("label_fixes.csv")
        confirmed, total = write_fixes(apply_confirmed, target)
        console.print(
            f"Wrote {target}: {confirmed} confirmed fix(es), {total} in the file. Use it with --label-fixes "
            f"{target} (automl check --label-fixes {target} shows what it changes)"
        )
        return
    if task is None:
        raise AutomlError("automl audit needs --task TASK (or --apply-confirmed AUDIT.csv to write a label-fixes file)")
    from automl.report.audit_run import CSV_FILE, PAGE_FILE, run_audit

    ref = _study_ref(options, task, storage, study)
    result = run_audit(ref, out, top, trials, export)
    console.print(f"out-of-fold probabilities: {result.source}", markup=False)
    people = result.people
    console.print(f"{result.flagged} label(s) flagged, of {int(people['flagged'].sum())} of {len(people)} people")
    view = Table(title="most contradicted labels", title_justify="left")
    for column in ("rank", "image (or person)", "field", "given", "suggested", "confidence", "reason"):
        view.add_column(column)
    for row in result.shown.head(20).itertuples(index=False):
        view.add_row(str(row.rank), row.image or str(row.person), row.field, str(row.given), str(row.suggested),
                     f"{row.confidence:.3f}", row.reason)  # fmt: skip
    console.print(view)
    console.print(f"Wrote {result.directory / CSV_FILE} and {result.directory / PAGE_FILE} (thumbnails). "
                  f"Mark confirm = yes on the right rows, then: automl audit --apply-confirmed "
                  f"{result.directory / CSV_FILE}")  # fmt: skip


def _study_ref(options: DataOptions, task: str, storage: str | None, study: str | None) -> StudyRef:
    from automl.report.inputs import StudyRef

    source = _study_source(options, task, storage, study)
    return StudyRef(source=source, task=task, home=options.home_dir, storage_url=storage, study_name=study)


def _study_source(options: DataOptions, task: str, storage: str | None, study: str | None) -> DataSource:
    """--data when given (the study checks it by its fingerprint); else the data the study was searched on."""
    if options.data is not None:
        return options.source()
    from automl.search.storage import load_task_study

    record = load_task_study(storage, options.home_dir, study or task, task).user_attrs.get("data_source")
    if record is None:  # a study made before sources were recorded: the demo data, never created here
        return options.source(options.home_dir / "demo-data")
    recorded = DataSource.from_record(record)
    given = options.label_options()
    if given:
        raise AutomlError(
            f"{', '.join(given)} describe a --data; without --data the study's own data is used "
            f"({recorded.describe()}). Pass --data as well, or leave them out"
        )
    return recorded


@app.command()
def predict(
    inputs: Annotated[list[Path], typer.Argument(help="Images, or folders of images, to classify.")],
    export: Annotated[Path, typer.Option("--export", help="An export folder made by automl export-best.")],
    out: Annotated[
        Path | None, typer.Option(help="Write the classes and probabilities to this CSV.", show_default=False)
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Classify images with an export folder: the same transform, TTA and ensemble, no study needed."""
    from automl.export.predict import Predictor, collect_images
    from automl.export.submission import predictions_table

    predictor = Predictor(export, device)
    paths = collect_images(inputs)
    members = predictor.info.ensemble["members"]
    with _progress() as progress:
        bar = progress.add_task(f"predicting {len(paths)} image(s)", total=len(members))
        probs = predictor.predict_files(paths, on_member=lambda name: progress.advance(bar))
    table = predictions_table([str(p) for p in paths], probs, predictor.classes, predictor.decide(probs))
    table = table.rename(columns={"image_id": "path"})
    if out is not None:
        write_csv_atomic(table, out)
    view = Table(title=f"{predictor.info.task}: {len(paths)} image(s)", title_justify="left")
    for column in ("path", "class", "label", "probability"):
        view.add_column(column)
    chosen = probs[np.arange(len(probs)), table["class"].to_numpy()]
    for path, code, label, p in zip(table["path"], table["class"], table["label"], chosen, strict=True):
        view.add_row(path, str(code), label, f"{p:.3f}")
        if view.row_count >= 50:
            break
    console.print(view)
    if len(paths) > 50:
        console.print(f"... {len(paths) - 50} more" + ("" if out else "; pass --out FILE.csv for all"))
    if out is not None:
        console.print(f"Wrote {out}")


def main() -> None:
    app(prog_name="automl")
