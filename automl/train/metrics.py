"""The score of a task: macro F1 over classes (accuracy beside it), always on the true labels."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score


def macro_f1(true: np.ndarray, predicted: np.ndarray) -> float:
    """Macro F1 over the classes present in either array, as the competition scored it."""
    return float(f1_score(true, predicted, average="macro", zero_division=0))


def per_class_f1(true: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    return f1_score(true, predicted, average=None, labels=np.arange(num_classes), zero_division=0)


def accuracy(true: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean(true == predicted))
