"""Label fixes: a CSV of `id,field,value` rows applied to the table when loading.

`id` names a person (the competition `id` or folder, or a CSV group) or one image (its image id, e.g.
`000001_female_Asian_45/normal`); `field` is a label column; `value` the corrected label. Public lists of
mislabelled people gave +0.035 macro F1 in the competition.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from automl.data.layouts.common import csv_line, parse_age, read_csv_strict
from automl.errors import Problems


@dataclass
class LabelFixSummary:
    """What a fixes file changed: rows changed per field, fixes that changed nothing, ids not found."""

    file: Path
    changed: Counter = field(default_factory=Counter)
    people: Counter = field(default_factory=Counter)
    unchanged: int = 0
    not_found: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        changed = ", ".join(f"{f}: {n} image(s) of {self.people[f]} group(s)" for f, n in self.changed.items())
        out = [f"label fixes from {self.file}: {changed or 'nothing changed'}"]
        if self.unchanged:
            out.append(f"{self.unchanged} fix(es) already matched the data")
        if self.not_found:
            shown = ", ".join(self.not_found[:10]) + (" ..." if len(self.not_found) > 10 else "")
            out.append(f"{len(self.not_found)} id(s) not in the data, skipped: {shown}")
        return out


def apply_label_fixes(
    train: pd.DataFrame, label_columns: tuple[str, ...], allowed: dict[str, tuple[str, ...]], fixes_path: Path
) -> LabelFixSummary:
    """Apply the fixes in place. `allowed` lists the valid values of each categorical label column."""
    fixes = read_csv_strict(fixes_path, ("id", "field", "value"), "label-fixes file")
    problems, summary = Problems(), LabelFixSummary(fixes_path)
    id_columns = [c for c in ("image_id", "group", "id") if c in train.columns]
    planned = []
    for index, fix in fixes.iterrows():
        line = csv_line(index)
        column = fix["field"]
        if column not in label_columns:
            problems.add(fixes_path, f"unknown field {column!r}; expected one of {', '.join(label_columns)}", line)
            continue
        value: str | int | None = fix["value"]
        if column == "age":
            value = parse_age(fix["value"], problems, fixes_path, line)
        elif column in allowed and value not in allowed[column]:
            problems.add(fixes_path, f"{column} value {value!r} is not one of {', '.join(allowed[column])}", line)
            value = None
        if value is not None:
            planned.append((fix["id"], column, value))
    # Validate the whole file first: a half-applied fixes file would be worse than none.
    problems.raise_if_any(f"{fixes_path}: {len(problems.items)} problem(s); nothing was applied")
    for fix_id, column, value in planned:
        rows = train[id_columns].eq(fix_id).any(axis=1)
        if not rows.any():
            summary.not_found.append(fix_id)
            continue
        differs = rows & (train[column] != value)
        if not differs.any():
            summary.unchanged += 1
            continue
        train.loc[differs, column] = value
        summary.changed[column] += int(differs.sum())
        summary.people[column] += train.loc[differs, "group"].nunique()
    return summary
