"""Which given labels the out-of-fold predictions contradict: confident learning (Northcutt et al., 2021).

Per class k, the threshold t_k is the mean predicted probability of k over the rows labelled k (the class's
self-confidence). A row is flagged when the probability of its given label is below that label's threshold while
another class reaches its own threshold; the suggestion is the most probable such class. Rows are ranked by the
margin p(suggested) - p(given).

The unit a label belongs to decides where the audit works: a field that is the same on every image of a person
(gender, age in the competition layout) is audited per person, on the mean probabilities of the person's images
(one wrong label, seven pieces of evidence); a field that differs between a person's images (mask) is audited per
image. The 18-class task is audited field by field, on its probabilities summed to each field's classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from automl.data.tasks import AgeTask, CombinedTask, Task

#: The audit table's columns, in order; `value` is the label fix the row proposes, `confirm` is for the user.
COLUMNS = (
    "rank", "person", "image", "field", "given", "suggested", "confidence", "given_probability", "margin",
    "images", "fix_id", "value", "confirm",
)  # fmt: skip


@dataclass
class ConfidentLearning:
    thresholds: np.ndarray  # (classes,) mean self-confidence; +inf for a class nobody has
    suggested: np.ndarray  # (rows,) the most probable other class (preferring those above their threshold)
    flagged: np.ndarray  # (rows,) bool
    margin: np.ndarray  # (rows,) p(suggested) - p(given)


def confident_learning(probs: np.ndarray, given: np.ndarray) -> ConfidentLearning:
    """Flag rows whose given label the probabilities contradict (see the module's docstring)."""
    probs = np.asarray(probs, dtype=np.float64)
    given = np.asarray(given, dtype=np.int64)
    rows, num_classes = np.arange(len(given)), probs.shape[1]
    thresholds = np.full(num_classes, np.inf)
    for k in range(num_classes):
        if (given == k).any():
            thresholds[k] = probs[given == k, k].mean()
    others = probs.copy()
    others[rows, given] = -np.inf
    above = others >= thresholds[None, :]
    any_above = above.any(1)
    suggested = np.where(any_above, np.where(above, others, -np.inf).argmax(1), others.argmax(1))
    p_given = probs[rows, given]
    flagged = (p_given < thresholds[given]) & any_above
    return ConfidentLearning(thresholds, suggested, flagged, probs[rows, suggested] - p_given)


def field_parts(task: Task) -> list[Task]:
    """The label fields a task's classes are made of: itself, or the parts of a combined task."""
    return list(task.parts) if isinstance(task, CombinedTask) else [task]


def part_probabilities(task: Task, probs: np.ndarray) -> list[np.ndarray]:
    """Each field's probabilities: the combined task's classes summed over the other fields."""
    parts = field_parts(task)
    if len(parts) == 1:
        return [probs]
    cube = probs.reshape(len(probs), *[p.num_classes for p in parts])
    axes = range(1, len(parts) + 1)
    return [cube.sum(axis=tuple(a for a in axes if a != i + 1)) for i in range(len(parts))]


def is_per_person(train: pd.DataFrame, column: str) -> bool:
    """A field is a person's when every person's images agree on it."""
    return bool((train.groupby("group")[column].nunique(dropna=False) <= 1).all())


def audit_field(train: pd.DataFrame, part: Task, probs: np.ndarray) -> pd.DataFrame:
    """Every unit (person or image) of one field with its suggestion and margin; `flagged` marks the issues."""
    given = part.labels(train)
    column = part.name
    if is_per_person(train, column):
        groups = train["group"].to_numpy()
        people, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
        counts = np.bincount(inverse)
        unit_probs = np.zeros((len(people), probs.shape[1]))
        np.add.at(unit_probs, inverse, probs)
        unit_probs /= counts[:, None]
        rows = first
        units = pd.DataFrame({"person": people, "image": "", "images": counts, "fix_id": people})
    else:
        unit_probs, rows = probs, np.arange(len(train))
        units = pd.DataFrame({"person": train["group"].to_numpy(), "image": train["image_id"].to_numpy(), "images": 1})
        units["fix_id"] = units["image"]
    unit_given = given[rows]
    found = confident_learning(unit_probs, unit_given)
    classes = np.asarray(part.classes)
    index = np.arange(len(rows))
    units["field"] = column
    units["given"] = classes[unit_given]
    units["suggested"] = classes[found.suggested]
    units["confidence"] = unit_probs[index, found.suggested].round(4)
    units["given_probability"] = unit_probs[index, unit_given].round(4)
    units["margin"] = found.margin.round(4)
    units["flagged"] = found.flagged
    units["value"] = _fix_values(part, train[column].to_numpy()[rows], found.suggested)
    return units


def _fix_values(part: Task, given_values: np.ndarray, suggested: np.ndarray) -> list[str]:
    """The label-fix value of each suggestion: the class name; for age, the nearest age in the suggested group
    (the fixes file takes years; the user can write the real age instead)."""
    if not isinstance(part, AgeTask):
        return [part.classes[k] for k in suggested]
    edges = [-np.inf, *part.bins, np.inf]
    out = []
    for age, k in zip(given_values.astype(int), suggested, strict=True):
        low, high = edges[k], edges[k + 1]
        out.append(str(int(low) if age < low else int(high) - 1 if age >= high else age))
    return out


def audit(train: pd.DataFrame, task: Task, probs: np.ndarray) -> pd.DataFrame:
    """Every unit of every field of the task, flagged ones first, each ranked by margin (largest first)."""
    parts = zip(field_parts(task), part_probabilities(task, probs), strict=True)
    tables = [audit_field(train, part, p) for part, p in parts]
    table = pd.concat(tables, ignore_index=True)
    table = table.sort_values(["flagged", "margin"], ascending=[False, False], kind="stable").reset_index(drop=True)
    table["rank"] = np.arange(1, len(table) + 1)
    table["confirm"] = ""
    return table[[*COLUMNS, "flagged"]]


def rank_people(table: pd.DataFrame) -> pd.DataFrame:
    """People ranked by the evidence against their labels: flagged people first, by the sum of their flagged
    margins (a person's wrong labels often touch several photos, e.g. swapped incorrect_mask and normal photos,
    where a model's own mistakes tend to be one photo), then the others by their largest margin."""
    flagged_margin = table["margin"].where(table["flagged"], 0.0)
    people = (
        table.assign(flagged_margin=flagged_margin)
        .groupby("person", sort=False)
        .agg(
            flagged=("flagged", "any"),
            evidence=("flagged_margin", "sum"),
            margin=("margin", "max"),
            issues=("flagged", "sum"),
        )  # fmt: skip
    )
    order = ["flagged", "evidence", "margin"]
    return people.sort_values(order, ascending=[False] * 3, kind="stable").reset_index()


def precision_recall_at_k(ranked_people: Sequence[str], planted: set[str], k: int) -> tuple[float, float]:
    """Of the top-k people, the share planted (precision); of the planted, the share in the top k (recall)."""
    top = set(list(ranked_people)[:k])
    hits = len(top & planted)
    return hits / max(k, 1), hits / max(len(planted), 1)
