"""An image folder: one sub-folder per class, e.g. `DATA/cat/1.jpg`, `DATA/dog/2.png`.

There is no person information, so every image is its own group.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from automl.data.images import is_image_file
from automl.data.layouts.common import LayoutRead
from automl.errors import AutomlError

LABEL_COLUMN = "label"


def class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def read_image_folder(root: Path) -> LayoutRead:
    rows = [
        {"image_id": str(file.relative_to(root)), "path": str(file), LABEL_COLUMN: folder.name}
        for folder in class_folders(root)
        for file in sorted(folder.rglob("*"))
        if is_image_file(file) and file.is_file()
    ]
    if not rows:
        raise AutomlError(f"{root} holds no images in class sub-folders (expected {root}/<class>/<image>.jpg)")
    train = pd.DataFrame(rows)
    train.insert(2, "group", train["image_id"])
    notes = [
        f"{root} is an image folder: every image is its own group, so related images can land in "
        "different folds; use a CSV with a group column to keep them together"
    ]
    return LayoutRead("folder", train, (LABEL_COLUMN,), None, notes)
