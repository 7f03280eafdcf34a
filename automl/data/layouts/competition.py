"""The competition layout: `train/train.csv` + one folder of 7 photos per person, and `eval/info.csv`.

```
DATA/train/train.csv          id,gender,race,age,path
DATA/train/images/<path>/     mask1..mask5, incorrect_mask, normal  (.jpg / .jpeg / .png)
DATA/eval/info.csv            ImageID,ans
DATA/eval/images/<ImageID>
```
One row per photo; the group is the person's folder (ids are not unique, folders are).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from automl.data.images import is_image_file
from automl.data.layouts.common import (
    LayoutRead,
    csv_line,
    parse_age,
    read_csv_strict,
    report_duplicates,
    resolve_inside,
)
from automl.data.tasks import GENDER_CLASSES
from automl.errors import AutomlError, Problems

#: Photo file stem -> mask status.
PHOTO_MASK = {
    "mask1": "wear",
    "mask2": "wear",
    "mask3": "wear",
    "mask4": "wear",
    "mask5": "wear",
    "incorrect_mask": "incorrect",
    "normal": "not_wear",
}
TRAIN_COLUMNS = ("id", "gender", "age", "path")
LABEL_COLUMNS = ("mask", "gender", "age")


def is_competition_layout(root: Path) -> bool:
    return root.is_dir() and (root / "train").is_dir()


def read_competition(root: Path) -> LayoutRead:
    """Read the whole layout, reporting every problem at once."""
    csv_path = root / "train" / "train.csv"
    people = read_csv_strict(csv_path, TRAIN_COLUMNS, "train/train.csv")
    if people.empty:
        raise AutomlError(f"{csv_path} has no rows: the data set is empty")
    problems, notes = Problems(), []
    report_duplicates(people["path"], problems, csv_path, "path")
    images_root = root / "train" / "images"
    rows = []
    for index, person in people.iterrows():
        rows += _person_photos(images_root, person, csv_path, csv_line(index), problems, notes)
    problems.raise_if_any(f"{csv_path}: {len(problems.items)} problem(s); fix them and run again")
    train = pd.DataFrame(rows)
    train["age"] = train["age"].astype("int64")
    return LayoutRead("competition", train, LABEL_COLUMNS, _read_eval(root / "eval", notes), notes)


def _person_photos(
    images_root: Path, person: pd.Series, csv_path: Path, line: int, problems: Problems, notes: list[str]
) -> list[dict]:
    gender = person["gender"].lower()
    if gender not in GENDER_CLASSES:
        problems.add(csv_path, f"unknown gender {person['gender']!r}; expected male or female", line)
    age = parse_age(person["age"], problems, csv_path, line)
    folder = resolve_inside(images_root, person["path"], problems, csv_path, line)
    if folder is None:
        return []
    if not folder.is_dir():
        problems.add(csv_path, f"folder {folder} does not exist", line)
        return []
    photos: dict[str, Path] = {}
    for file in sorted(folder.iterdir()):
        if not is_image_file(file):
            continue
        if file.stem not in PHOTO_MASK:
            notes.append(f"{file}: not one of {', '.join(PHOTO_MASK)}; skipped")
        elif file.stem in photos:
            problems.add(
                csv_path,
                f"two photos for {file.stem} in {folder}: {photos[file.stem].name}, {file.name}; keep one",
                line,
            )
        else:
            photos[file.stem] = file
    if not photos:
        problems.add(csv_path, f"folder {folder} holds no photos ({', '.join(PHOTO_MASK)})", line)
    elif len(photos) < len(PHOTO_MASK):
        missing = ", ".join(stem for stem in PHOTO_MASK if stem not in photos)
        notes.append(f"{folder}: {len(photos)} of {len(PHOTO_MASK)} photos (missing {missing})")
    return [
        {
            "image_id": f"{person['path']}/{stem}",
            "path": str(file),
            "group": person["path"],
            "id": person["id"],
            "mask": PHOTO_MASK[stem],
            "gender": gender,
            "age": age,
            "race": person.get("race", ""),
        }
        for stem, file in photos.items()
    ]


def _read_eval(eval_root: Path, notes: list[str]) -> pd.DataFrame | None:
    """The unlabelled prediction set, in info.csv order (the submission must keep it)."""
    if not eval_root.is_dir():
        notes.append(f"no {eval_root} folder: there is no prediction set")
        return None
    csv_path = eval_root / "info.csv"
    info = read_csv_strict(csv_path, ("ImageID",), "eval/info.csv")
    if info.empty:
        raise AutomlError(f"{csv_path} has no rows; remove the eval folder or list its images")
    problems = Problems()
    report_duplicates(info["ImageID"], problems, csv_path, "ImageID")
    paths = []
    for index, image_id in enumerate(info["ImageID"]):
        path = resolve_inside(eval_root / "images", image_id, problems, csv_path, csv_line(index))
        if path is not None and not path.is_file():
            problems.add(csv_path, f"image {path} does not exist", csv_line(index))
        paths.append(str(path))
    problems.raise_if_any(f"{csv_path}: {len(problems.items)} problem(s); fix them and run again")
    return pd.DataFrame({"image_id": info["ImageID"], "path": paths})
