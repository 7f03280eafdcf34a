"""What every layout reader shares: its result, strict CSV reading, and paths that must stay inside the data."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from automl.errors import AutomlError, Problems

_WHOLE_NUMBER = re.compile(r"^[+]?\d+$")


@dataclass
class LayoutRead:
    """What a layout reader found: the train table, the optional unlabelled eval table, and notes."""

    layout: str
    train: pd.DataFrame
    label_columns: tuple[str, ...]
    eval: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)


def read_csv_strict(path: Path, required: tuple[str, ...], what: str) -> pd.DataFrame:
    """Read a CSV as strings (ids like 000001 keep their zeros), failing clearly on missing columns."""
    if not path.is_file():
        raise AutomlError(f"{what} not found: {path}")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise AutomlError(f"cannot read {path} as CSV: {error}") from None
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise AutomlError(
            f"{path} lacks the column(s) {', '.join(missing)}; it has: {', '.join(table.columns) or 'none'}"
        )
    return table.apply(lambda column: column.str.strip())


def csv_line(index: int) -> int:
    """The line of a CSV file that holds data row `index` (line 1 is the header)."""
    return index + 2


def resolve_inside(root: Path, relative: str, problems: Problems, where: Path, line: int) -> Path | None:
    """`root / relative` if it stays inside `root`; otherwise a problem (absolute paths and `..` escape it)."""
    if not relative:
        problems.add(where, "empty path", line)
        return None
    # Lexical, not resolve(): a symlinked images folder is the user's choice, a `../` in a CSV is not.
    base = Path(os.path.normpath(root.absolute()))
    candidate = Path(os.path.normpath(base / relative))
    if Path(relative).is_absolute() or not candidate.is_relative_to(base):
        problems.add(where, f"path {relative!r} leaves the data folder {root}; use a path inside it", line)
        return None
    return candidate


def resolve_user_path(root: Path, written: str, problems: Problems, where: Path, line: int) -> Path | None:
    """A path from a user's own table: absolute, or relative to `root` (the table's folder); anywhere readable."""
    if not written:
        problems.add(where, "empty path", line)
        return None
    return Path(os.path.normpath(root.absolute() / Path(written).expanduser()))


def parse_age(value: str, problems: Problems, where: Path, line: int) -> int | None:
    """A whole number of years between 0 and 120, else a problem."""
    if not _WHOLE_NUMBER.match(value) or not 0 <= int(value) <= 120:
        problems.add(where, f"age {value!r} is not a whole number of years (0-120)", line)
        return None
    return int(value)


def report_duplicates(values: pd.Series, problems: Problems, where: Path, what: str) -> None:
    """A problem for every repeat of a value that must be unique, naming the line of its first use."""
    first_line: dict[str, int] = {}
    for index, value in enumerate(values):
        if value in first_line:
            problems.add(where, f"duplicate {what} {value!r} (first on line {first_line[value]})", csv_line(index))
        else:
            first_line[value] = csv_line(index)
