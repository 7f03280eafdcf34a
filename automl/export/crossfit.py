"""Cross-fitting: an honest figure for anything chosen on out-of-fold predictions.

A choice (members, votes, TTA views, class weights...) made and scored on the same predictions scores itself: that
is a selection score. Cross-fitting makes the choice once per fold k on the other folds only, applies it to fold k,
and scores the concatenated fold-k results on the true labels: the honest estimate of the whole choosing procedure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

Choice = TypeVar("Choice")
#: choose(rows, labels of those rows) -> a choice; it sees no other labels.
Choose = Callable[[np.ndarray, np.ndarray], Choice]
#: apply(choice, rows) -> the predicted class of each row.
Apply = Callable[[Choice, np.ndarray], np.ndarray]


def macro_f1(true: np.ndarray, predicted: np.ndarray) -> float:
    """Macro F1 over the classes present in either array (sklearn's f1_score, average="macro"), without its
    per-call checks: selection scores thousands of candidates."""
    true, predicted = np.asarray(true, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    return 0.0 if len(true) == 0 else float(macro_f1_each(true, predicted[None])[0])


def macro_f1_each(true: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """`macro_f1` of each row of `predicted` (candidates, rows) against `true`, at once."""
    candidates = len(predicted)
    n = int(max(true.max(), predicted.max())) + 1
    codes = predicted + n * np.arange(candidates)[:, None]
    hits = np.bincount(codes[predicted == true], minlength=candidates * n).reshape(candidates, n)
    guessed = np.bincount(codes.ravel(), minlength=candidates * n).reshape(candidates, n)
    total = np.bincount(true, minlength=n) + guessed
    present = total > 0
    return (2 * hits / np.maximum(total, 1)).sum(1) / present.sum(1)


@dataclass
class Fitted(Generic[Choice]):
    """A choice made on every row (what the export uses) with both of its figures."""

    choice: Choice
    selection_f1: float  # chosen and scored on the same labels: optimistic
    honest_f1: float  # cross-fitted
    fold_choices: list[Choice]  # fold k's choice, made without fold k's labels


def cross_fit(labels: np.ndarray, folds: np.ndarray, choose: Choose, apply: Apply) -> tuple[np.ndarray, list[Choice]]:
    """Each fold's predictions from a choice made on the other folds; (predictions of every row, fold choices)."""
    predicted = np.full(len(labels), -1, dtype=np.int64)
    choices = []
    for fold in np.unique(folds):
        inside = np.flatnonzero(folds == fold)
        outside = np.flatnonzero(folds != fold)
        choice = choose(outside, labels[outside])
        predicted[inside] = apply(choice, inside)
        choices.append(choice)
    return predicted, choices


def fit(labels: np.ndarray, folds: np.ndarray, choose: Choose, apply: Apply) -> Fitted:
    """The choice made on every row, its selection F1 (scored on those rows) and its cross-fitted honest F1."""
    rows = np.arange(len(labels))
    choice = choose(rows, labels)
    honest, fold_choices = cross_fit(labels, folds, choose, apply)
    return Fitted(choice, macro_f1(labels, apply(choice, rows)), macro_f1(labels, honest), fold_choices)
