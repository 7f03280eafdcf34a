"""A macro-F1 decision rule: one weight per class, predict argmax(p * w).

Argmax of probabilities maximises accuracy, not macro F1: on imbalanced classes (the >=60 age group is ~7% of people)
a small class is worth as much to macro F1 as a large one, so raising its weight pays. The weights are learnt by
coordinate ascent on out-of-fold predictions (each class in turn takes the grid value that maximises macro F1, the
others held), cross-fitted for the honest figure.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from automl.export.crossfit import macro_f1

#: The weights one class may take, relative to the others (log-spaced, 1 in the middle).
GRID = tuple(float(x) for x in np.geomspace(0.25, 4.0, 17))
ROUNDS = 3


def decide(probs: np.ndarray, weights: Sequence[float] | None) -> np.ndarray:
    """The predicted class of each row: argmax(p * w), or plain argmax without weights."""
    probs = np.asarray(probs, dtype=np.float64)
    return (probs if weights is None else probs * np.asarray(weights, dtype=np.float64)).argmax(1)


def fit_class_weights(probs: np.ndarray, labels: np.ndarray, rounds: int = ROUNDS) -> list[float]:
    """Per-class weights that maximise macro F1 of argmax(p * w) on these rows; all 1 when nothing beats argmax.

    A weight changes only for a strict gain, so ties keep the plain argmax.
    """
    weights = np.ones(probs.shape[1])
    best = macro_f1(labels, decide(probs, weights))
    for _ in range(rounds):
        improved = False
        for k in range(len(weights)):
            for value in GRID:
                trial = weights.copy()
                trial[k] = value
                score = macro_f1(labels, decide(probs, trial))
                if score > best + 1e-12:
                    best, weights, improved = score, trial, True
        if not improved:
            break
    return (weights / weights.max()).round(6).tolist()
