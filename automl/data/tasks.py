"""Tasks: which label column a model learns and its ordered class list.

A task turns the dataset table into integer class codes. The competition tasks are `mask`, `gender`, `age`
(binned years) and `all` (the 18 classes `mask*6 + gender*3 + age`); any other label column is a task whose
classes are its distinct values.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from automl.errors import AutomlError

MASK_CLASSES = ("wear", "incorrect", "not_wear")
GENDER_CLASSES = ("male", "female")
DEFAULT_AGE_BINS = (30, 60)
#: Label columns whose class order is fixed by the competition, so codes match across data sets.
KNOWN_CLASSES = {"mask": MASK_CLASSES, "gender": GENDER_CLASSES}
#: The 18-class task and the tasks it combines, in the order of its mixed-radix code.
COMBINED_TASK = "all"
COMBINED_PARTS = ("mask", "gender", "age")


class Task(ABC):
    """A named classification target over the dataset table."""

    name: str
    classes: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @abstractmethod
    def labels(self, table: pd.DataFrame) -> np.ndarray:
        """The class code (0..num_classes-1) of every row of `table`."""


@dataclass(frozen=True)
class CategoricalTask(Task):
    """A label column whose values are the class names."""

    name: str
    classes: tuple[str, ...]

    def labels(self, table: pd.DataFrame) -> np.ndarray:
        codes = pd.Categorical(table[self.name].astype(str), categories=self.classes).codes
        if (codes < 0).any():
            unknown = sorted(set(table[self.name].astype(str)) - set(self.classes))
            raise AutomlError(f"task {self.name!r}: values {unknown} are not among its classes {self.classes}")
        return codes.astype(np.int64)


@dataclass(frozen=True)
class AgeTask(Task):
    """Age in years, binned at `bins`: (30, 60) gives the classes <30, 30-59 and >=60."""

    bins: tuple[int, ...] = DEFAULT_AGE_BINS
    name: str = "age"

    @property
    def classes(self) -> tuple[str, ...]:  # type: ignore[override]
        return age_class_names(self.bins)

    def labels(self, table: pd.DataFrame) -> np.ndarray:
        return age_groups(table["age"].to_numpy(), self.bins)


@dataclass(frozen=True)
class CombinedTask(Task):
    """The product of several tasks, coded like digits: for mask, gender, age that is mask*6 + gender*3 + age."""

    name: str
    parts: tuple[Task, ...]

    @property
    def classes(self) -> tuple[str, ...]:  # type: ignore[override]
        return combined_names([part.classes for part in self.parts])

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(part.num_classes for part in self.parts)

    def labels(self, table: pd.DataFrame) -> np.ndarray:
        return combined_codes([part.labels(table) for part in self.parts], self.sizes)


# The mixed-radix code of a combined task, in one place for the task's labels, the multitask head and the 18 classes
# composed from three exports: the parts are digits, the last one varying fastest (mask*6 + gender*3 + age).


def combined_codes(part_codes: Sequence[np.ndarray], sizes: Sequence[int]) -> np.ndarray:
    """The combined class of each row from its part classes (`sizes`: each part's number of classes)."""
    code = np.zeros(len(part_codes[0]), dtype=np.int64)
    for codes, size in zip(part_codes, sizes, strict=True):
        code = code * size + np.asarray(codes, dtype=np.int64)
    return code


def part_codes(codes: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    """Each part's class of every combined class: the inverse of combined_codes."""
    codes, parts = np.asarray(codes, dtype=np.int64), []
    for size in reversed(sizes):
        parts.append(codes % size)
        codes = codes // size
    return parts[::-1]


def combined_names(part_classes: Sequence[Sequence[str]]) -> tuple[str, ...]:
    """The combined class names in code order: `wear/male/<30`, `wear/male/30-59`, ..."""
    names = [""]
    for classes in part_classes:
        names = [f"{prefix}/{c}" if prefix else c for prefix in names for c in classes]
    return tuple(names)


Probs = TypeVar("Probs")  # (rows, classes) probabilities: a numpy array or a torch tensor, both index alike


def joint_probs(part_probs: Sequence[Probs]) -> Probs:
    """P(combined class) as the product of the parts' probabilities (taken as independent), in code order."""
    joint: Any = part_probs[0]
    for probs in part_probs[1:]:
        joint = (joint[:, :, None] * probs[:, None, :]).reshape(len(joint), -1)  # type: ignore[index]
    return joint


def marginal_probs(probs: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    """Each part's probabilities from the combined classes' (rows, prod(sizes)): summed over the other parts."""
    cube = probs.reshape(len(probs), *sizes)
    axes = range(1, len(sizes) + 1)
    return [cube.sum(axis=tuple(a for a in axes if a != i + 1)) for i in range(len(sizes))]


def age_class_names(bins: Sequence[int]) -> tuple[str, ...]:
    """`(30, 60)` -> `('<30', '30-59', '>=60')`."""
    names = [f"<{bins[0]}"]
    names += [f"{lo}-{hi - 1}" for lo, hi in zip(bins[:-1], bins[1:], strict=True)]
    names.append(f">={bins[-1]}")
    return tuple(names)


def age_groups(ages: np.ndarray, bins: Sequence[int]) -> np.ndarray:
    """The age group of each age: the number of bin edges at or below it."""
    return np.searchsorted(np.asarray(bins), np.asarray(ages, dtype=np.int64), side="right").astype(np.int64)


def parse_age_bins(text: str) -> tuple[int, ...]:
    """Parse `--age-bins 30,60` into increasing integer edges, with a clear error otherwise."""
    try:
        bins = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise AutomlError(
            f"--age-bins {text!r} is not a list of whole numbers; write the group edges like 30,60"
        ) from None
    if not bins or any(b <= a for a, b in zip(bins[:-1], bins[1:], strict=True)):
        raise AutomlError(f"--age-bins {text!r} must be increasing edges, like 30,60 (<30 / 30-59 / >=60)")
    return bins


def build_tasks(table: pd.DataFrame, label_columns: Sequence[str], age_bins: Sequence[int]) -> dict[str, Task]:
    """Every task the table supports, by name."""
    tasks: dict[str, Task] = {}
    for column in label_columns:
        values = set(table[column].astype(str))
        if column == "age" and pd.api.types.is_integer_dtype(table[column]):
            tasks[column] = AgeTask(bins=tuple(age_bins))
        elif column in KNOWN_CLASSES and values <= set(KNOWN_CLASSES[column]):
            tasks[column] = CategoricalTask(column, KNOWN_CLASSES[column])
        else:
            tasks[column] = CategoricalTask(column, tuple(sorted(values)))
    if all(part in tasks for part in COMBINED_PARTS):
        tasks[COMBINED_TASK] = CombinedTask(COMBINED_TASK, tuple(tasks[p] for p in COMBINED_PARTS))
    return tasks
