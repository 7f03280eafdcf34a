"""Which given labels the out-of-fold predictions contradict: confident learning (Northcutt et al., 2021).

Per class k, the threshold t_k is the mean predicted probability of k over the rows labelled k (the class's
self-confidence). A row is flagged when the probability of its given label is below that label's threshold while
another class reaches its own threshold; the suggestion is the most probable such class. A row's evidence is
log p(suggested) - log p(given), the log-likelihood its fix would gain.

The unit a label belongs to decides where the audit works: a field that is the same on every image of a person
(gender, age in the competition layout) is audited per person, on the mean probabilities of the person's images
(one wrong label, seven pieces of evidence); a field that differs between a person's images (mask) is audited per
image. The 18-class task is audited field by field, on its probabilities summed to each field's classes.

A per-image field is also checked for swaps: photos filed under each other's names (a person's `incorrect_mask` and
`normal`, the competition's typical mistake) keep the person's set of labels but put two of them on the wrong
photos. Comparing a person's photos with each other sees that far better than per-photo thresholds, which a model's
doubts about one odd-looking person also cross: the person's own labels are reassigned among their photos to
maximise the summed log-probability (an assignment problem), and every photo whose label moves is flagged. The
evidence of a swap's photos sums to what the rearrangement gains, so swaps and single contradictions rank on one
scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from automl.data.tasks import AgeTask, CombinedTask, Task, marginal_probs

#: The audit table's columns, in order; `value` is the label fix the row proposes, `confirm` is for the user.
COLUMNS = (
    "rank", "person", "image", "field", "given", "suggested", "confidence", "given_probability", "evidence",
    "reason", "images", "fix_id", "value", "confirm",
)  # fmt: skip
#: Why a row is flagged: its probabilities cross the thresholds, or its label belongs to another of the person's photos.
THRESHOLD_REASON, SWAP_REASON = "below threshold", "swapped with {}"
#: Probabilities are clipped here before logs: a model's 0 is not infinite evidence.
MIN_PROBABILITY = 1e-6
#: Swaps are searched among a person's photos; a larger group (not a person, or a data set without people) is
#: skipped, as the assignment's cost grows with the cube of its size.
MAX_SWAP_GROUP = 64


@dataclass
class ConfidentLearning:
    thresholds: np.ndarray  # (classes,) mean self-confidence; +inf for a class nobody has
    suggested: np.ndarray  # (rows,) the most probable other class (preferring those above their threshold)
    flagged: np.ndarray  # (rows,) bool


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
    return ConfidentLearning(thresholds, suggested, flagged)


def swapped_labels(probs: np.ndarray, given: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Per row, the row whose given label it should carry (itself when none): each group's labels reassigned
    among its rows to maximise the summed log-probability, kept as given unless that strictly gains."""
    log_probs = _log(probs)
    given = np.asarray(given, dtype=np.int64)
    source = np.arange(len(given))
    for rows in pd.Series(source).groupby(groups, sort=False).indices.values():
        labels = given[rows]
        if len(rows) > MAX_SWAP_GROUP or len(np.unique(labels)) < 2:
            continue
        cost = -log_probs[rows][:, labels]  # cost[i, j]: row i takes the label row j was given
        takers, slots = linear_sum_assignment(cost)
        if cost[takers, slots].sum() < np.trace(cost) - 1e-9:
            moved = labels[slots] != labels[takers]
            source[rows[takers[moved]]] = rows[slots[moved]]
    return source


def field_parts(task: Task) -> list[Task]:
    """The label fields a task's classes are made of: itself, or the parts of a combined task."""
    return list(task.parts) if isinstance(task, CombinedTask) else [task]


def part_probabilities(task: Task, probs: np.ndarray) -> list[np.ndarray]:
    """Each field's probabilities: the combined task's classes summed over the other fields."""
    parts = field_parts(task)
    if len(parts) == 1:
        return [probs]
    return marginal_probs(probs, [p.num_classes for p in parts])


def is_per_person(train: pd.DataFrame, column: str) -> bool:
    """A field is a person's when every person's images agree on it."""
    return bool((train.groupby("group")[column].nunique(dropna=False) <= 1).all())


def audit_field(train: pd.DataFrame, part: Task, probs: np.ndarray) -> pd.DataFrame:
    """Every unit (person or image) of one field with its suggestion and evidence; `flagged` marks the issues."""
    given = part.labels(train)
    column = part.name
    per_person = is_per_person(train, column)
    if per_person:
        groups = train["group"].to_numpy()
        people, rows, inverse = np.unique(groups, return_index=True, return_inverse=True)
        counts = np.bincount(inverse)
        unit_probs = np.zeros((len(people), probs.shape[1]))
        np.add.at(unit_probs, inverse, probs)
        unit_probs /= counts[:, None]
        units = pd.DataFrame({"person": people, "image": "", "images": counts, "fix_id": people})
    else:
        unit_probs, rows = probs, np.arange(len(train))
        images = train["image_id"].to_numpy()
        units = pd.DataFrame({"person": train["group"].to_numpy(), "image": images, "images": 1, "fix_id": images})
    unit_given = given[rows]
    found = confident_learning(unit_probs, unit_given)
    suggested, flagged = found.suggested, found.flagged
    reason = np.where(flagged, THRESHOLD_REASON, "").astype(object)
    index = np.arange(len(rows))
    if not per_person:
        source = swapped_labels(unit_probs, unit_given, units["person"].to_numpy())
        swapped = source != index
        suggested = np.where(swapped, unit_given[source], suggested)
        flagged = flagged | swapped
        reason[swapped] = [SWAP_REASON.format(image) for image in images[source[swapped]]]
    classes = np.asarray(part.classes)
    units["field"] = column
    units["given"] = classes[unit_given]
    units["suggested"] = classes[suggested]
    units["confidence"] = unit_probs[index, suggested].round(4)
    units["given_probability"] = unit_probs[index, unit_given].round(4)
    units["evidence"] = (_log(unit_probs[index, suggested]) - _log(unit_probs[index, unit_given])).round(4)
    units["reason"] = reason
    units["flagged"] = flagged
    units["value"] = _fix_values(part, train[column].to_numpy()[rows], suggested)
    return units


def _log(probs: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), MIN_PROBABILITY, 1.0))


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
    """Every unit of every field of the task: flagged ones first, in the order of `rank_people` (a person's rows
    together, so the two photos of a swap sit side by side), each person's by evidence (largest first)."""
    parts = zip(field_parts(task), part_probabilities(task, probs), strict=True)
    table = pd.concat([audit_field(train, part, p) for part, p in parts], ignore_index=True)
    people = rank_people(table)["person"]
    table["person_rank"] = table["person"].map(pd.Series(np.arange(len(people)), index=people))
    order = ["flagged", "person_rank", "evidence"]
    table = table.sort_values(order, ascending=[False, True, False], kind="stable").reset_index(drop=True)
    table["rank"] = np.arange(1, len(table) + 1)
    table["confirm"] = ""
    return table[[*COLUMNS, "flagged"]]


def rank_people(table: pd.DataFrame) -> pd.DataFrame:
    """People ranked by the evidence against their labels: flagged people first, by the summed evidence of their
    flagged labels (a swap's two photos add up to what the swap gains), then the others by their strongest row."""
    flagged_evidence = table["evidence"].where(table["flagged"], 0.0)
    people = (
        table.assign(flagged_evidence=flagged_evidence)
        .groupby("person", sort=False)
        .agg(
            flagged=("flagged", "any"),
            evidence=("flagged_evidence", "sum"),
            strongest=("evidence", "max"),
            issues=("flagged", "sum"),
        )  # fmt: skip
    )
    order = ["flagged", "evidence", "strongest"]
    return people.sort_values(order, ascending=[False] * 3, kind="stable").reset_index()


def precision_recall_at_k(ranked_people: Sequence[str], planted: set[str], k: int) -> tuple[float, float]:
    """Of the top-k people, the share planted (precision); of the planted, the share in the top k (recall)."""
    top = set(list(ranked_people)[:k])
    hits = len(top & planted)
    return hits / max(k, 1), hits / max(len(planted), 1)
