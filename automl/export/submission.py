"""Prediction tables and competition submissions, and the 18 classes composed from mask, gender and age exports.

`predictions.csv`: image_id, class (the code), label (the name), then `prob_<class>` for every class.
`submission.csv`: exactly `ImageID,ans` with one row per `eval/info.csv` row, in its order.
Combining: P(mask, gender, age) = P(mask) P(gender) P(age). The 18-class answer is the argmax of those
probabilities, times per-class weights when a macro-F1 decision rule over the 18 classes (learnt on the three
exports' out-of-fold probabilities of the training images, cross-fitted) has the better honest F1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from automl.atomic import write_csv_atomic
from automl.data.tasks import COMBINED_PARTS, GENDER_CLASSES, MASK_CLASSES, combined_codes, combined_names, joint_probs
from automl.errors import AutomlError
from automl.export.bundle import OOF_FILE, PREDICTIONS_FILE, read_export
from automl.export.crossfit import fit, macro_f1
from automl.export.decision import decide, fit_class_weights

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


def read_predictions(export: Path, file: str = PREDICTIONS_FILE) -> tuple[pd.DataFrame, list[str]]:
    """An export's eval predictions (or out-of-fold ones) and its classes."""
    info = read_export(export)
    path = export / file
    if not path.is_file():
        raise AutomlError(f"{export} has no {file}: its data had no eval images to predict")
    table = pd.read_csv(path, dtype={"image_id": str})
    return table, info.classes


def combine_parts(parts: Mapping[str, Path], file: str = PREDICTIONS_FILE) -> tuple[list[str], np.ndarray, list[str]]:
    """(image ids, 18-class probabilities, class names) from the eval predictions of mask, gender, age exports
    (or, with file OOF_FILE, their out-of-fold predictions of the training images)."""
    ids, probs, classes = _read_parts(parts, file)
    return ids, joint_probs(probs), list(combined_names(classes))


def _read_parts(parts: Mapping[str, Path], file: str) -> tuple[list[str], list[np.ndarray], list[list[str]]]:
    """The image ids, and each part's probabilities and classes, in the order of COMBINED_PARTS."""
    missing = [p for p in COMBINED_PARTS if p not in parts]
    if missing:
        raise AutomlError(f"--combine needs exports of {', '.join(COMBINED_PARTS)}; missing {', '.join(missing)}")
    ids: list[str] | None = None
    probs, part_classes = [], []
    for part in COMBINED_PARTS:
        table, classes = read_predictions(parts[part], file)
        expected = {"mask": MASK_CLASSES, "gender": GENDER_CLASSES}.get(part)
        if (expected is not None and tuple(classes) != expected) or (part == "age" and len(classes) != 3):
            raise AutomlError(f"export {parts[part]} has classes {classes}, not those of the {part} task")
        if ids is None:
            ids = list(table["image_id"])
        elif list(table["image_id"]) != ids:
            raise AutomlError(f"export {parts[part]} predicted other images than {parts[COMBINED_PARTS[0]]} ({file})")
        probs.append(table[[f"{PROB_PREFIX}{c}" for c in classes]].to_numpy(dtype=np.float64))
        part_classes.append(list(classes))
    assert ids is not None
    return ids, probs, part_classes


@dataclass
class CombinedRule:
    """The 18-class decision rule and its figures on the out-of-fold predictions of the training images."""

    class_weights: list[float] | None  # None: plain argmax had the better honest F1
    argmax_f1: float  # nothing chosen for the 18 classes: the argmax of the combined probabilities
    selection_f1: float  # the rule learnt and scored on every training image
    honest_f1: float  # the rule learnt on the other folds (the age export's person-grouped folds)


def combined_rule(parts: Mapping[str, Path]) -> CombinedRule:
    """Learn the 18-class rule on the parts' out-of-fold probabilities; keep it when its honest F1 is higher."""
    ids, part_probs, _ = _read_parts(parts, OOF_FILE)
    probs = joint_probs(part_probs)
    tables = {p: pd.read_csv(parts[p] / OOF_FILE, dtype={"image_id": str}).set_index("image_id") for p in parts}
    if any(not {"true", "fold"} <= set(t.columns) for t in tables.values()):
        raise AutomlError(
            f"the exports' {OOF_FILE} lack the true classes; export the parts again (automl export-best) to combine"
        )
    true = combined_codes(
        [tables[p].loc[ids, "true"].to_numpy() for p in COMBINED_PARTS], [p.shape[1] for p in part_probs]
    )
    folds = tables["age"].loc[ids, "fold"].to_numpy()
    fitted = fit(true, folds, lambda rows, y: fit_class_weights(probs[rows], y), lambda w, rows: decide(probs[rows], w))
    argmax_f1 = macro_f1(true, probs.argmax(1))
    weights = fitted.choice if fitted.honest_f1 > argmax_f1 else None
    return CombinedRule(weights, argmax_f1, fitted.selection_f1, fitted.honest_f1)
