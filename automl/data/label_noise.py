"""Planted label noise for the demo data: a known share of people get a wrong label, recorded beside the data.

The photos always show the truth; only the labels change, as in the competition's mislabelled people:
- `gender`: the person's gender is swapped in train.csv (and in the folder name, which repeats it);
- `age`: the person's age moves to an adjacent age group (<30 / 30-59 / >=60);
- `mask`: the person's `incorrect_mask` and `normal` photos swap file names.
`label_noise.csv` lists every planted label: person (the folder as written), id, field, image (the photo for mask,
empty for a person's field), true and given value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from automl.errors import AutomlError

NOISE_FILE = "label_noise.csv"
NOISE_COLUMNS = ("person", "id", "field", "image", "true", "given")
NOISE_FIELDS = ("gender", "age", "mask")
#: The photo names a mask swap exchanges, and the status each shows.
MASK_SWAP = {"incorrect_mask": "normal", "normal": "incorrect_mask"}
_SHOWN = {"incorrect_mask": "incorrect", "normal": "not_wear"}
_AGE_GROUPS = ((18, 29), (30, 59), (60, 60))  # the demo's ages (18..60) in the default bins


@dataclass
class PlantedNoise:
    given: pd.DataFrame  # the people table to write: wrong gender / age where planted, folder names to match
    mask_swapped: set[int] = field(default_factory=set)  # rows whose incorrect_mask and normal photos swap names
    records: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(NOISE_COLUMNS)))


def check_noise(share: float, fields: Sequence[str]) -> None:
    if not 0 <= share <= 1:
        raise AutomlError(f"--label-noise {share}: a share of people between 0 and 1 (0.05 is 5%)")
    unknown = [f for f in fields if f not in NOISE_FIELDS]
    if unknown or not fields:
        raise AutomlError(f"--noise-fields {','.join(fields)}: choose among {', '.join(NOISE_FIELDS)}")


def plant_label_noise(
    people: pd.DataFrame, share: float, fields: Sequence[str], rng: np.random.Generator
) -> PlantedNoise:
    """Give `round(share * people)` people (at least one when share > 0) one wrong label each; fields take turns."""
    check_noise(share, fields)
    given = people.copy()
    count = 0 if share == 0 else max(1, round(share * len(people)))
    chosen = np.sort(rng.choice(len(people), count, replace=False))
    swapped, planted = set(), []
    for turn, row in enumerate(chosen):
        name = fields[turn % len(fields)]
        if name == "gender":
            old = given.at[row, "gender"]
            given.at[row, "gender"] = "male" if old == "female" else "female"
            planted.append((row, name, "", old, given.at[row, "gender"]))
        elif name == "age":
            old = int(given.at[row, "age"])
            group = next(k for k, (low, high) in enumerate(_AGE_GROUPS) if low <= old <= high)
            neighbours = [k for k in (group - 1, group + 1) if 0 <= k < len(_AGE_GROUPS)]
            low, high = _AGE_GROUPS[neighbours[rng.integers(len(neighbours))]]
            given.at[row, "age"] = int(rng.integers(low, high + 1))
            planted.append((row, name, "", str(old), str(given.at[row, "age"])))
        else:
            swapped.add(int(row))
            for stem, other in MASK_SWAP.items():  # the file `stem` shows what `other` should: its true status
                planted.append((row, name, stem, _SHOWN[other], _SHOWN[stem]))
    given["path"] = [
        f"{i}_{g}_{r}_{a}" for i, g, r, a in zip(given["id"], given["gender"], given["race"], given["age"], strict=True)
    ]
    records = pd.DataFrame(
        [
            (given.at[row, "path"], given.at[row, "id"], name, f"{given.at[row, 'path']}/{stem}" if stem else "", t, g)
            for row, name, stem, t, g in planted
        ],
        columns=list(NOISE_COLUMNS),
    )
    return PlantedNoise(given, swapped, records)


def read_label_noise(path: Path) -> pd.DataFrame:
    """A data set's planted labels (written by `automl demo-data --label-noise`)."""
    if not path.is_file():
        raise AutomlError(f"{path} not found: make the data with automl demo-data DIR --label-noise 0.05")
    return pd.read_csv(path, dtype=str, keep_default_na=False)
