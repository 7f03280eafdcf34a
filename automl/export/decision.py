"""A macro-F1 decision rule: one weight per class, predict argmax(p * w).

Argmax of probabilities maximises accuracy, not macro F1: on imbalanced classes (the >=60 age group is ~7% of people)
a small class is worth as much to macro F1 as a large one, so raising its weight pays. The weights are learnt by
coordinate ascent on out-of-fold predictions (each class in turn takes the grid value that maximises macro F1, the
others held), cross-fitted for the honest figure.

One ascent follows a handful of rows of a small class (the face crops' `incorrect` class has ~50): a grid step that
wins two of them is taken, and a new image set will not repeat it. So the weights are bagged: the ascent runs on
bootstrap resamples of the rows (each class resampled within itself) and the rule takes their geometric mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from automl.export.crossfit import macro_f1, macro_f1_each

#: The weights one class may take, relative to the others (log-spaced, 1 in the middle).
GRID = np.geomspace(0.25, 4.0, 17)
ROUNDS = 3
#: Bootstrap resamples the weights are averaged over; 1: one ascent on the rows themselves.
BAGS = 16


def decide(probs: np.ndarray, weights: Sequence[float] | None) -> np.ndarray:
    """The predicted class of each row: argmax(p * w), or plain argmax without weights."""
    probs = np.asarray(probs, dtype=np.float64)
    return (probs if weights is None else probs * np.asarray(weights, dtype=np.float64)).argmax(1)


def fit_class_weights(
    probs: np.ndarray, labels: np.ndarray, rounds: int = ROUNDS, bags: int = BAGS, seed: int = 0
) -> list[float]:
    """Per-class weights for argmax(p * w) that maximise macro F1 on these rows, bagged over `bags` resamples;
    all 1 when nothing beats argmax. Deterministic for a seed."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    if bags <= 1:
        weights = ascend(probs, labels, rounds)
    else:
        rng = np.random.default_rng(seed)
        classes = [np.flatnonzero(labels == c) for c in np.unique(labels)]
        logs = []
        for _ in range(bags):
            rows = np.concatenate([rng.choice(members, len(members)) for members in classes])
            logs.append(np.log(ascend(probs[rows], labels[rows], rounds)))
        weights = np.exp(np.mean(logs, axis=0))
    return (weights / weights.max()).round(6).tolist()


def ascend(probs: np.ndarray, labels: np.ndarray, rounds: int = ROUNDS) -> np.ndarray:
    """Coordinate ascent from all-ones weights: each class in turn takes the first grid value with the highest
    macro F1, the others held; a weight changes only for a strict gain, so ties keep the plain argmax."""
    weights = np.ones(probs.shape[1])
    best = macro_f1(labels, decide(probs, weights))
    rows = np.arange(len(labels))
    for _ in range(rounds):
        improved = False
        for k in range(len(weights)):
            # With the others held, row i predicts k when w_k * p_ik beats the best other class (argmax takes the
            # first of equals): every grid value of w_k is scored in one pass.
            others = probs * weights
            others[:, k] = -np.inf
            runner_up = others.argmax(1)
            bar = others[rows, runner_up]
            scaled = GRID[:, None] * probs[None, :, k]
            wins = (scaled > bar) | ((scaled == bar) & (k < runner_up))
            scores = macro_f1_each(labels, np.where(wins, k, runner_up))
            pick = int(np.argmax(scores))
            if scores[pick] > best + 1e-12:
                best, weights[k], improved = float(scores[pick]), GRID[pick], True
        if not improved:
            break
    return weights
