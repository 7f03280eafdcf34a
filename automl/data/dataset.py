"""The one dataset table every later step reads, whatever the layout on disk.

`load_dataset(DataSource(...))` picks the reader from what `--data` points at (a competition folder, a CSV
file, or a folder of class sub-folders), applies label fixes, and returns a `Dataset`: the train table
(`image_id`, `path`, `group`, one column per label), the optional eval table, and its tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from automl.data.label_fixes import LabelFixSummary, apply_label_fixes
from automl.data.layouts.common import LayoutRead
from automl.data.layouts.competition import is_competition_layout, read_competition
from automl.data.layouts.csv_table import read_csv_table
from automl.data.layouts.image_folder import class_folders, read_image_folder
from automl.data.tasks import DEFAULT_AGE_BINS, CategoricalTask, Task, build_tasks
from automl.errors import AutomlError


@dataclass(frozen=True)
class DataSource:
    """Where the data is and how to read it: the `--data` family of command-line options."""

    path: Path
    path_column: str = "path"
    group_column: str | None = None
    label_columns: tuple[str, ...] = ()
    age_bins: tuple[int, ...] = DEFAULT_AGE_BINS
    label_fixes: Path | None = None


@dataclass
class Dataset:
    root: Path
    layout: str
    train: pd.DataFrame
    label_columns: tuple[str, ...]
    tasks: dict[str, Task]
    eval: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    fixes: LabelFixSummary | None = None

    def task(self, name: str) -> Task:
        if name not in self.tasks:
            raise AutomlError(f"unknown task {name!r} for {self.root}; choose one of: {', '.join(self.tasks)}")
        return self.tasks[name]

    def image_paths(self) -> list[str]:
        """Every image the data set names: train, then eval."""
        eval_paths = [] if self.eval is None else list(self.eval["path"])
        return list(self.train["path"]) + eval_paths

    @property
    def num_groups(self) -> int:
        return self.train["group"].nunique()


def load_dataset(source: DataSource) -> Dataset:
    path = source.path
    if not path.exists():
        raise AutomlError(f"data not found: {path}")
    read = _read_layout(source)
    fixes = None
    if source.label_fixes is not None:
        allowed = {
            c: t.classes
            for c, t in build_tasks(read.train, read.label_columns, source.age_bins).items()
            if isinstance(t, CategoricalTask)
        }
        fixes = apply_label_fixes(read.train, read.label_columns, allowed, source.label_fixes)
    tasks = build_tasks(read.train, read.label_columns, source.age_bins)
    root = path.parent if path.is_file() else path
    return Dataset(root, read.layout, read.train, read.label_columns, tasks, read.eval, read.notes, fixes)


def _read_layout(source: DataSource) -> LayoutRead:
    path = source.path
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise AutomlError(f"{path} is not a CSV file; --data takes a data folder or a .csv table")
        return read_csv_table(path, source.path_column, source.group_column, source.label_columns)
    if source.label_columns or source.group_column or source.path_column != "path":
        raise AutomlError(f"--labels, --group-column and --path-column apply to a CSV file; {path} is a folder")
    if is_competition_layout(path):
        return read_competition(path)
    if class_folders(path):
        return read_image_folder(path)
    raise AutomlError(
        f"cannot tell the layout of {path}: expected train/train.csv (competition layout), "
        "a CSV file, or one sub-folder per class"
    )
