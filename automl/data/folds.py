"""Cross-validation folds stratified by the task's label and grouped by person.

A person's 7 photos in two folds would leak the person into validation and inflate macro F1, so folds are
built with scikit-learn's `StratifiedGroupKFold`: no group in two folds, class shares close to the whole.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from automl.errors import AutomlError


def assign_folds(labels: np.ndarray, groups: np.ndarray, n_folds: int = 5, seed: int = 0) -> np.ndarray:
    """The fold (0..n_folds-1) of every image; the same inputs give the same folds on every machine."""
    if n_folds < 2:
        raise AutomlError(f"--folds {n_folds}: cross-validation needs at least 2 folds")
    n_groups = len(np.unique(groups))
    if n_groups < n_folds:
        raise AutomlError(f"only {n_groups} people (groups) for {n_folds} folds; use fewer folds or more data")
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = np.full(len(labels), -1, dtype=np.int64)
    with warnings.catch_warnings():
        # "The least populated class has only N members": shown by `fold_class_counts`, not as a warning.
        warnings.simplefilter("ignore", UserWarning)
        for fold, (_, val_index) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
            folds[val_index] = fold
    return folds


def fold_class_counts(labels: np.ndarray, folds: np.ndarray, num_classes: int) -> np.ndarray:
    """A (n_folds, num_classes) table of image counts, to show how even the folds are."""
    counts = np.zeros((folds.max() + 1, num_classes), dtype=np.int64)
    np.add.at(counts, (folds, labels), 1)
    return counts
