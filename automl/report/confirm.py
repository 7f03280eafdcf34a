"""Confirmed audit rows -> the label-fixes file the loader applies (`--label-fixes`, columns id,field,value).

The user marks rows of the audit CSV in its `confirm` column (yes / no; empty means no) and may correct `value`
(an age in years, say). Every row is checked before anything is written; fixes already in the target file are
kept unless a confirmed row fixes the same id and field again.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from automl.atomic import write_csv_atomic
from automl.data.layouts.common import csv_line, parse_age, read_csv_strict
from automl.data.tasks import KNOWN_CLASSES
from automl.errors import AutomlError, Problems

YES = {"yes", "y", "true", "1", "x"}
NO = {"no", "n", "false", "0", ""}
FIX_COLUMNS = ("id", "field", "value")


def confirmed_fixes(audit_csv: Path) -> pd.DataFrame:
    """The id,field,value rows the user confirmed in an audit CSV; an error naming every bad row."""
    table = read_csv_strict(audit_csv, ("fix_id", "field", "value", "confirm"), "audit file")
    problems, rows = Problems(), []
    for index, row in table.iterrows():
        line, answer = csv_line(index), row["confirm"].lower()
        if answer in NO:
            continue
        if answer not in YES:
            problems.add(audit_csv, f"confirm {row['confirm']!r} is neither yes nor no (leave it empty for no)", line)
            continue
        if not row["fix_id"] or not row["field"]:
            problems.add(audit_csv, "confirmed row without fix_id or field; keep the columns the audit wrote", line)
            continue
        value = row["value"]
        if row["field"] == "age":
            if parse_age(value, problems, audit_csv, line) is None:
                continue
        elif row["field"] in KNOWN_CLASSES and value not in KNOWN_CLASSES[row["field"]]:
            allowed = ", ".join(KNOWN_CLASSES[row["field"]])
            problems.add(audit_csv, f"{row['field']} value {value!r} is not one of {allowed}", line)
            continue
        elif not value:
            problems.add(audit_csv, "confirmed row with an empty value", line)
            continue
        rows.append((row["fix_id"], row["field"], value))
    problems.raise_if_any(f"{audit_csv}: {len(problems.items)} problem(s); nothing was written")
    return pd.DataFrame(rows, columns=list(FIX_COLUMNS))


def write_fixes(audit_csv: Path, out: Path) -> tuple[int, int]:
    """Add the confirmed rows to the fixes file `out` (created if absent); (rows confirmed, rows in the file)."""
    new = confirmed_fixes(audit_csv)
    if new.empty:
        raise AutomlError(f"{audit_csv}: no row has confirm = yes; mark the labels you checked, then run again")
    old = read_csv_strict(out, FIX_COLUMNS, "label-fixes file")[list(FIX_COLUMNS)] if out.exists() else None
    merged = new if old is None else pd.concat([old, new], ignore_index=True)
    merged = merged.drop_duplicates(["id", "field"], keep="last")
    write_csv_atomic(merged, out)
    return len(new), len(merged)
