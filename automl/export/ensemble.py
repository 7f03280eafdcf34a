"""Combining members: soft voting (mean probabilities, plain or weighted by out-of-fold F1) and hard voting.

The method is chosen by out-of-fold macro F1 on the true labels. With SINGLE among the methods a vote must at
least match the best member or the ensemble is that member alone; the export's top_k_vote leaves SINGLE out (the
best alone is its best_trial method, and `auto` compares the two by their honest figures).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from automl.train.metrics import macro_f1

SOFT, WEIGHTED, HARD, SINGLE = "soft", "soft_weighted", "hard", "best_member"
METHODS = (SOFT, WEIGHTED, HARD, SINGLE)


@dataclass
class EnsembleChoice:
    method: str
    members: list[int]  # indexes of the members used
    weights: list[float]  # one per used member
    oof_f1: float
    candidates: dict[str, float] = field(default_factory=dict)  # every method's out-of-fold macro F1

    def to_dict(self) -> dict:
        return vars(self)


def combine(method: str, probs: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """The ensemble's probabilities from its members' (each (n, classes)).

    Hard voting returns vote shares, with the weighted mean probability added at 1e-6 scale to break ties.
    """
    stack = np.stack([np.asarray(p, dtype=np.float64) for p in probs])
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    mean = np.tensordot(w, stack, axes=1)
    if method in (SOFT, WEIGHTED, SINGLE):
        return mean
    if method == HARD:
        votes = np.zeros_like(mean)
        rows = np.arange(mean.shape[0])
        for member in stack:
            votes[rows, member.argmax(1)] += 1.0
        return votes / len(stack) + 1e-6 * mean
    raise ValueError(f"unknown ensemble method {method!r}")


def choose_ensemble(
    probs: Sequence[np.ndarray], true: np.ndarray, member_f1: Sequence[float], methods: Sequence[str] = METHODS
) -> EnsembleChoice:
    """The method of `methods` with the best out-of-fold macro F1; with SINGLE among them, the best member alone
    unless a vote does at least as well."""
    n = len(probs)
    best = int(np.argmax(member_f1))
    f1 = np.clip(np.asarray(member_f1, dtype=np.float64), 1e-6, None)
    options = {
        SOFT: (list(range(n)), [1.0] * n),
        WEIGHTED: (list(range(n)), (f1 / f1.sum()).tolist()),
        HARD: (list(range(n)), [1.0] * n),
        SINGLE: ([best], [1.0]),
    }
    scores = {}
    for method in methods:
        used, weights = options[method]
        combined = combine(method, [probs[i] for i in used], weights)
        scores[method] = macro_f1(true, combined.argmax(1))
    # Ties go to the earlier method (a vote rather than one member); the best member is the floor.
    method = max(methods, key=lambda m: scores[m])
    used, weights = options[method]
    return EnsembleChoice(method, used, list(weights), scores[method], scores)
