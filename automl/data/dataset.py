"""The one dataset table every later step reads, whatever the layout on disk.

`load_dataset(DataSource(...))` picks the reader from what `--data` points at (a competition folder, a CSV
file, or a folder of class sub-folders), applies label fixes, and returns a `Dataset`: the train table
(`image_id`, `path`, `group`, one column per label), the optional eval table, and its tasks.
"""

from __future__ import annotations

import hashlib
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

    def to_record(self) -> dict[str, object]:
        """The whole source as JSON (absolute paths; the label-fixes file's hash), for a study to remember."""
        fixes = None if self.label_fixes is None else self.label_fixes.absolute()
        return {
            "path": str(self.path.absolute()),
            "path_column": self.path_column,
            "group_column": self.group_column,
            "labels": list(self.label_columns),
            "age_bins": list(self.age_bins),
            "label_fixes": None if fixes is None else str(fixes),
            "label_fixes_sha256": None if fixes is None else hashlib.sha256(fixes.read_bytes()).hexdigest(),
        }

    @classmethod
    def from_record(cls, record: dict) -> DataSource:
        fixes = record.get("label_fixes")
        return cls(
            path=Path(record["path"]),
            path_column=record.get("path_column", "path"),
            group_column=record.get("group_column"),
            label_columns=tuple(record.get("labels", ())),
            age_bins=tuple(record.get("age_bins", DEFAULT_AGE_BINS)),
            label_fixes=None if fixes is None else Path(fixes),
        )

    def describe(self) -> str:
        """The command-line options that name this source."""
        parts = [f"--data {self.path}"]
        if self.label_columns:
            parts.append(f"--labels {','.join(self.label_columns)}")
        if self.path_column != "path":
            parts.append(f"--path-column {self.path_column}")
        if self.group_column:
            parts.append(f"--group-column {self.group_column}")
        if tuple(self.age_bins) != DEFAULT_AGE_BINS:
            parts.append(f"--age-bins {','.join(map(str, self.age_bins))}")
        if self.label_fixes is not None:
            parts.append(f"--label-fixes {self.label_fixes}")
        return " ".join(parts)


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
