"""Training labels: the true labels, bent only where a trial asks (the age options).

In the competition, training labels that call 58+ "old", or that drop borderline ages, helped the >=60 group.
These options change what the model is trained on; validation and the score always use the true labels.
Heads trained on ages (bins, regression) see the same options: `age_drop_borderline` leaves the rows out, and
`age_train_threshold` trains the ages from the threshold up to the oldest group's edge as that edge (58 and 59 as 60).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from automl.data.tasks import AgeTask, CombinedTask, Task
from automl.errors import AutomlError
from automl.train.params import TrainParams

LEFT_OUT = -1


def training_labels(task: Task, table: pd.DataFrame, params: TrainParams) -> np.ndarray:
    """The label each row is trained on; `LEFT_OUT` (-1) for rows that training must skip."""
    labels = _with_age_threshold(task, params.age_train_threshold).labels(table)
    if params.age_drop_borderline is not None and age_part(task) is not None:
        low, high = params.age_drop_borderline
        labels = np.where(table["age"].between(low, high).to_numpy(), LEFT_OUT, labels)
    return labels


def training_ages(task: Task, table: pd.DataFrame, params: TrainParams) -> np.ndarray | None:
    """Each row's age in years as the age heads train on it (see `age_train_threshold`); None without ages."""
    age = age_part(task)
    if age is None or "age" not in table or not pd.api.types.is_numeric_dtype(table["age"]):
        return None
    ages = table["age"].to_numpy(dtype=np.float64)
    threshold = params.age_train_threshold
    if threshold is not None:
        _with_age_threshold(age, threshold)  # the same check as for the labels
        oldest = age.bins[-1]
        ages = np.where((ages >= threshold) & (ages < oldest), oldest, ages)
    return ages


def age_part(task: Task | None) -> AgeTask | None:
    """The task's age part: the age task itself, or the age part of a combined task; None if it has none."""
    if isinstance(task, AgeTask):
        return task
    if isinstance(task, CombinedTask):
        return next(filter(None, map(age_part, task.parts)), None)
    return None


def _with_age_threshold(task: Task, threshold: int | None) -> Task:
    """The task with its oldest-group edge moved to `threshold` (e.g. 60 -> 58)."""
    if threshold is None:
        return task
    if isinstance(task, AgeTask):
        if len(task.bins) > 1 and threshold <= task.bins[-2]:
            raise AutomlError(f"age_train_threshold {threshold} must be above the previous age edge {task.bins[-2]}")
        return replace(task, bins=(*task.bins[:-1], threshold))
    if isinstance(task, CombinedTask):
        return replace(task, parts=tuple(_with_age_threshold(part, threshold) for part in task.parts))
    return task
