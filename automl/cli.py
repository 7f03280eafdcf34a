"""The `automl` command line: one thin command per verb, no logic beyond arguments and display."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import click
import numpy as np
import pandas as pd
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
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
        "sub-folder per class. Default: the demo data under the studies home.",
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


def _source(
    data: Path | None,
    home: Path | None,
    labels: str | None = None,
    path_column: str = "path",
    group_column: str | None = None,
    age_bins: str = DEFAULT_AGE_BINS_TEXT,
    label_fixes: Path | None = None,
) -> DataSource:
    if data is None:
        data = _demo_data(resolve_home(home))
    return DataSource(
        path=data,
        path_column=path_column,
        group_column=group_column,
        label_columns=tuple(c.strip() for c in labels.split(",") if c.strip()) if labels else (),
        age_bins=parse_age_bins(age_bins),
        label_fixes=label_fixes,
    )


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
def check(
    data: DataOpt = None,
    labels: LabelsOpt = None,
    path_column: PathColumnOpt = "path",
    group_column: GroupColumnOpt = None,
    age_bins: AgeBinsOpt = DEFAULT_AGE_BINS_TEXT,
    label_fixes: FixesOpt = None,
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
    home: HomeOpt = None,
) -> None:
    """Validate a data set (every row, every image decoded) and summarise people, images and classes."""
    crop = FaceCrop(face_crop, face_crop_margin, _parse_box(face_crop_box)) if show_crops else None
    dataset = load_dataset(_source(data, home, labels, path_column, group_column, age_bins, label_fixes))
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
        target = out or resolve_home(home) / "crops" / f"{dataset.root.name}-{crop.mode}.png"
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
def folds(
    task: Annotated[str, typer.Option(help="The task to stratify by (mask, gender, age, all, or a label column).")],
    out: Annotated[Path, typer.Option(help="The CSV to write: image_id, path, group, label, fold.")],
    data: DataOpt = None,
    n_folds: Annotated[int, typer.Option("--folds", help="Number of folds.")] = 5,
    seed: Annotated[int, typer.Option(help="The same seed gives the same folds on every machine.")] = 0,
    labels: LabelsOpt = None,
    path_column: PathColumnOpt = "path",
    group_column: GroupColumnOpt = None,
    age_bins: AgeBinsOpt = DEFAULT_AGE_BINS_TEXT,
    label_fixes: FixesOpt = None,
    home: HomeOpt = None,
) -> None:
    """Write the fold of every image: stratified by the task's label, no person in two folds."""
    dataset = load_dataset(_source(data, home, labels, path_column, group_column, age_bins, label_fixes))
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
StudyOpt = Annotated[str | None, typer.Option(help="The study name (default: the task).", show_default=False)]


@app.command()
def search(
    task: Annotated[str, typer.Option(help="The task to search (mask, gender, age, all, or a label column).")],
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
    keep_top: Annotated[int, typer.Option(help="Keep fold weights of this many best trials.", min=1)] = 3,
    data: DataOpt = None,
    labels: LabelsOpt = None,
    path_column: PathColumnOpt = "path",
    group_column: GroupColumnOpt = None,
    age_bins: AgeBinsOpt = DEFAULT_AGE_BINS_TEXT,
    label_fixes: FixesOpt = None,
    home: HomeOpt = None,
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
    from automl.search.space import default_space_path
    from automl.search.storage import default_storage_url, redact
    from automl.train.device import resolve_device

    resolve_device(device)
    overrides = tuple(set_ or ()) + ((f"pruner={pruner}",) if pruner else ())
    job = SearchJob(
        source=_source(data, home, labels, path_column, group_column, age_bins, label_fixes),
        task=task,
        space_path=space or default_space_path(task),
        overrides=overrides,
        home=resolve_home(home),
        storage_url=storage,
        study_name=study or task,
        trials=trials,
        timeout=timeout,
        device=device,
        keep_top=keep_top,
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
            run_worker(job, search_space, study_data, on_trial=lambda s, t: show(count_trials(s)))
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


class _SearchProgress(Progress):
    """A progress bar over finished trials, with pruned, failed and the best F1 so far."""

    def __init__(self, name: str, target: int):
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
        console.print(f"best: trial {best.number}, out-of-fold macro F1 {best.value:.4f}")
        for key, value in best.params.items():
            console.print(f"  {key} = {value}", markup=False)
    console.print("Watch it with: automl dashboard   (or: automl studies)")


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
def cache(
    size: Annotated[int, typer.Option(help="Shorter side of the cached images, in pixels.", min=8)] = 64,
    data: DataOpt = None,
    labels: LabelsOpt = None,
    path_column: PathColumnOpt = "path",
    group_column: GroupColumnOpt = None,
    home: HomeOpt = None,
) -> None:
    """Decode and resize every image once into the cache that trials and workers share."""
    dataset = load_dataset(_source(data, home, labels, path_column, group_column))
    image_cache = ImageCache(resolve_home(home), size)
    paths = dataset.image_paths()
    with _progress() as progress:
        bar = progress.add_task("caching images", total=len(paths))
        _, stats = image_cache.load(paths, progress=lambda n: progress.advance(bar, n))
    console.print(f"{image_cache.root}: {stats.built} image(s) decoded, {stats.reused} reused")


@app.command("export-best")
def export_best(
    task: Annotated[str, typer.Option(help="The task whose study to export (mask, gender, age, all, ...).")],
    top_k: Annotated[int, typer.Option("--top-k", help="How many of the best complete trials to ensemble.")] = 3,
    out: Annotated[
        Path | None, typer.Option(help="The export folder. Default: <home>/exports/<study>.", show_default=False)
    ] = None,
    mode: Annotated[
        str, typer.Option(help="folds: one model per fold (honest out-of-fold figures); full: one on all data.")
    ] = "folds",
    distinct_backbones: Annotated[
        bool, typer.Option("--distinct-backbones", help="At most one member per backbone.")
    ] = False,
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
    data: DataOpt = None,
    labels: LabelsOpt = None,
    path_column: PathColumnOpt = "path",
    group_column: GroupColumnOpt = None,
    age_bins: AgeBinsOpt = DEFAULT_AGE_BINS_TEXT,
    label_fixes: FixesOpt = None,
    home: HomeOpt = None,
) -> None:
    """Retrain the best trials of a study, ensemble them, and predict the eval images (submission.csv)."""
    home_dir = resolve_home(home)
    if combine:
        _export_combined(task, part or [], out or home_dir / "exports" / "combined", home_dir)
        return
    from automl.export.runner import ExportJob, run_export
    from automl.train.device import resolve_device

    resolve_device(device)
    job = ExportJob(
        source=_source(data, home, labels, path_column, group_column, age_bins, label_fixes),
        task=task,
        home=home_dir,
        out=out or home_dir / "exports" / (study or task),
        storage_url=storage,
        study_name=study,
        top_k=top_k,
        mode=mode,
        distinct_backbones=distinct_backbones,
        device=device,
    )
    with _progress() as progress:
        bar = progress.add_task("export", total=None)
        result = run_export(job, lambda text, d, t: progress.update(bar, description=text, completed=d, total=t))
    info = result.info
    console.print(
        f"export of study [bold]{info.study}[/] ({info.mode} mode): {result.trained} model(s) trained, "
        f"{result.reused} reused from an earlier run"
    )
    table = Table(title="out-of-fold macro F1 (true labels)", title_justify="left")
    for column in ("member", "trial", "backbone", "study F1", "retrained OOF F1", "with TTA"):
        table.add_column(column, justify="left" if column in ("member", "backbone") else "right")
    for member, with_tta in zip(info.members, info.ensemble["member_oof_f1_with_tta"], strict=True):
        table.add_row(
            member.name, str(member.trial), member.config["backbone"], f"{member.study_value:.4f}",
            f"{member.oof_f1:.4f}", f"{with_tta:.4f}",
        )  # fmt: skip
    console.print(table)
    candidates = ", ".join(f"{k} {v:.4f}" for k, v in info.ensemble["candidates"].items())
    console.print(f"ensemble: {info.ensemble['method']}, out-of-fold macro F1 {info.ensemble['oof_f1']:.4f}")
    console.print(f"  candidates: {candidates}", markup=False)
    tried = ", ".join(f"{k} {v:.4f}" for k, v in result.tta_candidates.items())
    console.print(f"TTA: {' + '.join(info.tta['views'])}   (tried: {tried})", markup=False)
    console.print(f"Wrote {result.directory}" + (f" and {result.submission}" if result.submission else ""))


def _export_combined(task: str, parts: list[str], out: Path, home: Path) -> None:
    from automl.data.tasks import COMBINED_PARTS, COMBINED_TASK
    from automl.export.bundle import PREDICTIONS_FILE, SUBMISSION_FILE
    from automl.export.submission import combine_parts, predictions_table, write_submission

    if task != COMBINED_TASK:
        raise AutomlError(f"--combine composes the {COMBINED_TASK!r} task; use --task {COMBINED_TASK} --combine")
    folders = {name: home / "exports" / name for name in COMBINED_PARTS}
    for item in parts:
        name, sep, folder = item.partition("=")
        if not sep or name not in COMBINED_PARTS:
            raise AutomlError(f"--part {item!r}: write TASK=EXPORT_DIR with TASK one of {', '.join(COMBINED_PARTS)}")
        folders[name] = Path(folder)
    ids, probs, classes = combine_parts(folders)
    write_csv_atomic(predictions_table(ids, probs, classes), out / PREDICTIONS_FILE)
    write_submission(ids, probs.argmax(1), out / SUBMISSION_FILE)
    console.print(f"combined {', '.join(f'{k}: {v}' for k, v in folders.items())}", markup=False)
    console.print(f"Wrote {out / SUBMISSION_FILE} ({len(ids)} rows, classes mask*6 + gender*3 + age)")


@app.command()
def report(
    task: Annotated[str, typer.Option(help="The task whose study to report (mask, gender, age, all, ...).")],
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
    data: DataOpt = None,
    labels: LabelsOpt = None,
    path_column: PathColumnOpt = "path",
    group_column: GroupColumnOpt = None,
    age_bins: AgeBinsOpt = DEFAULT_AGE_BINS_TEXT,
    label_fixes: FixesOpt = None,
    home: HomeOpt = None,
) -> None:
    """One self-contained HTML page of a study's figures (opens offline); also shown in optuna-dashboard."""
    from automl.report.build import build_report

    ref = _study_ref(task, storage, study, data, labels, path_column, group_column, age_bins, label_fixes, home)
    result = build_report(ref, out, export)
    for section in result.sections:
        if section.note:
            console.print(f"  {section.title}: {section.note}", markup=False)
    console.print(
        f"Wrote {result.path} ({result.attached} figures; also attached to the study for optuna-dashboard). "
        "Open it in a browser: no server needed."
    )


@app.command()
def audit(
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
    data: DataOpt = None,
    labels: LabelsOpt = None,
    path_column: PathColumnOpt = "path",
    group_column: GroupColumnOpt = None,
    age_bins: AgeBinsOpt = DEFAULT_AGE_BINS_TEXT,
    label_fixes: FixesOpt = None,
    home: HomeOpt = None,
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

    ref = _study_ref(task, storage, study, data, labels, path_column, group_column, age_bins, label_fixes, home)
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


def _study_ref(
    task: str,
    storage: str | None,
    study: str | None,
    data: Path | None,
    labels: str | None,
    path_column: str,
    group_column: str | None,
    age_bins: str,
    label_fixes: Path | None,
    home: Path | None,
) -> StudyRef:
    from automl.report.inputs import StudyRef

    # Reading a study never creates the demo data: without --data, the demo data the search made is expected.
    path = data or resolve_home(home) / "demo-data"
    source = _source(path, home, labels, path_column, group_column, age_bins, label_fixes)
    return StudyRef(source=source, task=task, home=resolve_home(home), storage_url=storage, study_name=study)


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
    table = predictions_table([str(p) for p in paths], probs, predictor.classes)
    table = table.rename(columns={"image_id": "path"})
    if out is not None:
        write_csv_atomic(table, out)
    view = Table(title=f"{predictor.info.task}: {len(paths)} image(s)", title_justify="left")
    for column in ("path", "class", "label", "probability"):
        view.add_column(column)
    for path, code, label, p in zip(table["path"], table["class"], table["label"], probs.max(1), strict=True):
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
