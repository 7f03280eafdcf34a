"""A study remembers its data: on a CSV of absolute paths, export-best, report and audit need no --data."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import write_image
from tests.search.helpers import FAST, automl, load

CLASSES = ("wear", "incorrect", "not_wear")


def _absolute_csv(root: Path, flip: int | None = None) -> Path:
    """9 people x 3 photos, one per mask class; the CSV names them by absolute path, from another folder."""
    rows = ["path,mask,group"]
    for person in range(9):
        for k, label in enumerate(CLASSES):
            image = write_image(root / "photos" / f"p{person}" / f"{k}.png", seed=person * 3 + k, size=(24, 32))
            if flip == person * 3 + k:
                label = CLASSES[(k + 1) % 3]
            rows.append(f"{image.absolute()},{label},p{person}")
    table = root / "tables" / ("labels.csv" if flip is None else "flipped.csv")
    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_text("\n".join(rows) + "\n")
    return table


def test_export_report_and_audit_use_the_studys_own_data(tmp_path: Path) -> None:
    table = _absolute_csv(tmp_path)
    home = tmp_path / "home"
    search = ("search", "--task", "mask", "--trials", "2", *FAST, "--home", home)
    code, out = automl(*search, "--data", table, "--labels", "mask", "--group-column", "group")
    assert code == 0, out
    recorded = load(home).user_attrs["data_source"]
    assert recorded["path"] == str(table) and recorded["labels"] == ["mask"] and recorded["group_column"] == "group"

    code, out = automl("export-best", "--task", "mask", "--top-k", "1", "--home", home)
    assert code == 0, out
    assert (home / "exports" / "mask" / "export.json").exists()
    code, out = automl("report", "--task", "mask", "--home", home)
    assert code == 0, out
    code, out = automl("audit", "--task", "mask", "--home", home)
    assert code == 0, out

    other = _absolute_csv(tmp_path, flip=4)
    code, out = automl("export-best", "--task", "mask", "--home", home, "--data", other, "--labels", "mask")
    assert code == 2 and "searched on other images, labels or folds" in out
    code, out = automl("report", "--task", "mask", "--home", home, "--labels", "gender")
    assert code == 2 and "--labels describe a --data" in out and f"--data {table}" in out
