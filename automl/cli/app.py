"""The `automl` command line's app: a user's mistake becomes a clear message and exit 2, and the options and
helpers the command groups share (data options, progress bars, the study's data)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import click
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from typer.core import TyperGroup

if TYPE_CHECKING:
    import optuna

    from automl.report.inputs import StudyRef

from automl.data.dataset import DataSource
from automl.data.demo import ensure_demo_data
from automl.data.tasks import DEFAULT_AGE_BINS, parse_age_bins
from automl.errors import AutomlError
from automl.home import resolve_home

console = Console()
errors = Console(stderr=True)
T = TypeVar("T")


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
FaceDetectorOpt = Annotated[
    Path | None,
    typer.Option(
        "--face-detector",
        help="The YuNet model file (face_detection_yunet_2026may.onnx) that face crops face and aligned detect with, "
        "for machines without internet; or set AUTOML_FACE_DETECTOR. Default: the Hugging Face cache, downloaded "
        "there once.",
        show_default=False,
    ),
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
        console.print(f"Creating the demo data set in {target} (once; pass --data to use your own)", soft_wrap=True)
    with progress_bars() as progress:
        bar = progress.add_task("demo photos", total=None)
        return ensure_demo_data(home, progress=lambda done, total: progress.update(bar, completed=done, total=total))


def ensure_face_detector(given: Path | None, needed: bool) -> None:
    """Before any work: detect with the file `given` (checked), or, when `needed`, find the detector in the hub
    cache or download it there; an AutomlError with the ways out when it cannot be had."""
    from automl.data.face_model import ensure_model, use_model

    if given is not None:
        use_model(given)
    if needed or given is not None:
        ensure_model(announce=lambda text: console.print(text, markup=False))


def progress_bars() -> Progress:
    """Transient bars on a terminal; off elsewhere (in a file a bar leaves only a blank line or its last frame)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )


def tracked(description: str, total: int | None, work: Callable[[Callable[[int], None]], T]) -> T:
    """`work(step)` under a progress bar; `step(n)` advances it by n."""
    with progress_bars() as progress:
        bar = progress.add_task(description, total=total)
        return work(lambda n: progress.advance(bar, n))


def study_ref(options: DataOptions, task: str, storage: str | None, study: str | None) -> StudyRef:
    from automl.report.inputs import StudyRef

    source = study_source(options, task, storage, study)
    return StudyRef(source=source, task=task, home=options.home_dir, storage_url=storage, study_name=study)


def study_source(
    options: DataOptions, task: str, storage: str | None, study: str | None, loaded: optuna.Study | None = None
) -> DataSource:
    """--data when given (the study checks it by its fingerprint); else the data the study was searched on (read
    from `loaded` when the caller has the study already)."""
    if options.data is not None:
        return options.source()
    from automl.search.storage import load_task_study

    if loaded is None:
        loaded, _ = load_task_study(storage, options.home_dir, study or task, task)
    record = loaded.user_attrs.get("data_source")
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


def main() -> None:
    app(prog_name="automl")
