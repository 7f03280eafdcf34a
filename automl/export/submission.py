"""Prediction tables and competition submissions, and the 18 classes composed from mask, gender and age exports.

`predictions.csv`: image_id, class (the code), label (the name), then `prob_<class>` for every class.
`submission.csv`: exactly `ImageID,ans` with one row per `eval/info.csv` row, in its order.
Combining: P(mask, gender, age) = P(mask) P(gender) P(age), so the 18-class answer is `mask*6 + gender*3 + age`
of the three exports' own answers, and its probabilities sit beside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from automl.atomic import write_csv_atomic
from automl.data.tasks import COMBINED_PARTS, GENDER_CLASSES, MASK_CLASSES
from automl.errors import AutomlError
from automl.export.bundle import PREDICTIONS_FILE, read_export

PROB_PREFIX = "prob_"


def predictions_table(
    image_ids: Sequence[str], probs: np.ndarray, classes: Sequence[str], codes: np.ndarray | None = None
) -> pd.DataFrame:
    """The table of predictions; `codes` are the predicted classes (the export's decision rule), default argmax."""
    codes = probs.argmax(1) if codes is None else np.asarray(codes)
    table = pd.DataFrame({"image_id": list(image_ids), "class": codes, "label": np.asarray(classes)[codes]})
    for k, name in enumerate(classes):
        table[f"{PROB_PREFIX}{name}"] = np.round(probs[:, k], 6)
    return table


def write_submission(image_ids: Sequence[str], codes: np.ndarray, path: Path) -> None:
    write_csv_atomic(pd.DataFrame({"ImageID": list(image_ids), "ans": np.asarray(codes, dtype=np.int64)}), path)


def read_predictions(export: Path) -> tuple[pd.DataFrame, list[str]]:
    """An export's eval predictions and its classes."""
    info = read_export(export)
    path = export / PREDICTIONS_FILE
    if not path.is_file():
        raise AutomlError(f"{export} has no {PREDICTIONS_FILE}: its data had no eval images to predict")
    table = pd.read_csv(path, dtype={"image_id": str})
    return table, info.classes


def combine_parts(parts: Mapping[str, Path]) -> tuple[list[str], np.ndarray, list[str]]:
    """(image ids, 18-class probabilities, class names) from the eval predictions of mask, gender, age exports."""
    missing = [p for p in COMBINED_PARTS if p not in parts]
    if missing:
        raise AutomlError(f"--combine needs exports of {', '.join(COMBINED_PARTS)}; missing {', '.join(missing)}")
    ids: list[str] | None = None
    probs, names = [], [""]
    for part in COMBINED_PARTS:
        table, classes = read_predictions(parts[part])
        expected = {"mask": MASK_CLASSES, "gender": GENDER_CLASSES}.get(part)
        if (expected is not None and tuple(classes) != expected) or (part == "age" and len(classes) != 3):
            raise AutomlError(f"export {parts[part]} has classes {classes}, not those of the {part} task")
        if ids is None:
            ids = list(table["image_id"])
        elif list(table["image_id"]) != ids:
            raise AutomlError(f"export {parts[part]} predicted other eval images than {parts[COMBINED_PARTS[0]]}")
        probs.append(table[[f"{PROB_PREFIX}{c}" for c in classes]].to_numpy(dtype=np.float64))
        names = [f"{prefix}/{c}" if prefix else c for prefix in names for c in classes]
    assert ids is not None
    joint = probs[0]
    for part_probs in probs[1:]:  # mixed radix: the last part varies fastest, as in mask*6 + gender*3 + age
        joint = (joint[:, :, None] * part_probs[:, None, :]).reshape(len(ids), -1)
    return ids, joint, names
