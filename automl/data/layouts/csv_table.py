"""A generic CSV: an image path column, any label columns and an optional group column.

Image paths are absolute, or relative to the CSV's folder (a CSV a script wrote with absolute paths works as it
is), e.g. `../shared/data/face-mask-crops/labels.csv`: `path,mask,group,width,height`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from automl.data.layouts.common import (
    LayoutRead,
    csv_line,
    parse_age,
    read_csv_strict,
    report_duplicates,
    resolve_user_path,
)
from automl.errors import AutomlError, Problems


def read_csv_table(
    csv_path: Path,
    path_column: str = "path",
    group_column: str | None = None,
    label_columns: Sequence[str] = (),
) -> LayoutRead:
    """Read the table; without `label_columns`, every text column but the path and group is a label."""
    notes: list[str] = []
    table = read_csv_strict(
        csv_path, (path_column, *label_columns, *([group_column] if group_column else [])), "CSV file"
    )
    if table.empty:
        raise AutomlError(f"{csv_path} has no rows: the data set is empty")
    if group_column is None and "group" in table.columns and path_column != "group":
        group_column = "group"
    labels = tuple(label_columns) or _default_label_columns(table, {path_column, group_column})
    if not labels:
        raise AutomlError(
            f"{csv_path} has no label column; name one with --labels (columns: {', '.join(table.columns)})"
        )
    problems = Problems()
    report_duplicates(table[path_column], problems, csv_path, "image path")
    paths = []
    for index, relative in enumerate(table[path_column]):
        path = resolve_user_path(csv_path.parent, relative, problems, csv_path, csv_line(index))
        if path is not None and not path.is_file():
            problems.add(csv_path, f"image {path} does not exist", csv_line(index))
        paths.append(str(path))
    for column in labels:
        for index in (table[column] == "").to_numpy().nonzero()[0]:
            problems.add(csv_path, f"empty {column!r} label", csv_line(index))
    if "age" in labels:
        ages = [parse_age(v, problems, csv_path, csv_line(i)) for i, v in enumerate(table["age"])]
    problems.raise_if_any(f"{csv_path}: {len(problems.items)} problem(s); fix them and run again")

    train = pd.DataFrame({"image_id": table[path_column], "path": paths})
    if group_column:
        train["group"] = table[group_column].where(table[group_column] != "", table[path_column])
    else:
        train["group"] = table[path_column]
        notes.append(
            f"{csv_path} has no group column: every image is its own group, so related images "
            "(one person, one photo) can land in different folds; name one with --group-column"
        )
    for column in labels:
        train[column] = pd.Series(ages, dtype="int64") if column == "age" else table[column]
    return LayoutRead("csv", train, labels, None, notes)


def _default_label_columns(table: pd.DataFrame, exclude: set[str | None]) -> tuple[str, ...]:
    """Text columns (not counts like width or height), plus a numeric `age`."""

    def is_label(column: str) -> bool:
        numeric = pd.to_numeric(table[column], errors="coerce").notna().all()
        return column == "age" or not numeric

    return tuple(c for c in table.columns if c not in exclude and is_label(c))
