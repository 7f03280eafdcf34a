"""Greedy ensemble selection with replacement (Caruana et al., "Ensemble selection from libraries of models", 2004).

From a library of models' out-of-fold probabilities: start from the best few models (sorted initialisation), then
repeatedly add the model (any, again if it helps: with replacement) whose addition gives the soft vote the best
macro F1, up to a size cap, and keep the best ensemble seen on the way. Bagging repeats this on random halves of
the library and adds the results up, which makes it harder to overfit the selection rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from automl.export.crossfit import macro_f1


@dataclass(frozen=True)
class GreedyOptions:
    size: int = 10  # at most this many picks (a model picked twice counts twice)
    init: int = 3  # sorted initialisation: the best 1..init models, as many as score best together
    bags: int = 0  # 0: one run on the whole library; n: n runs on random subsets, their picks added up
    bag_fraction: float = 0.5
    seed: int = 0


def greedy_selection(
    probs: Sequence[np.ndarray], labels: np.ndarray, options: GreedyOptions = GreedyOptions()
) -> np.ndarray:
    """How many times each model is picked (its weight in the soft vote); the order of `probs` breaks ties."""
    n = len(probs)
    if options.bags <= 0:
        return _one_run(probs, labels, np.arange(n), options)
    rng = np.random.default_rng(options.seed)
    counts = np.zeros(n, dtype=np.int64)
    take = max(1, round(options.bag_fraction * n))
    for _ in range(options.bags):
        library = np.sort(rng.choice(n, size=take, replace=False))
        counts += _one_run(probs, labels, library, options)
    return counts


def _one_run(
    probs: Sequence[np.ndarray], labels: np.ndarray, library: np.ndarray, options: GreedyOptions
) -> np.ndarray:
    single = np.array([macro_f1(labels, probs[i].argmax(1)) for i in library])
    ranked = library[np.argsort(-single, kind="stable")]
    counts = np.zeros(len(probs), dtype=np.int64)
    # Sorted initialisation: the best n models together, n in 1..init chosen by their vote's F1 (ties: fewer).
    total, best_init = None, (-1.0, 0)
    running = np.zeros_like(probs[ranked[0]], dtype=np.float64)
    for n_init, index in enumerate(ranked[: max(1, options.init)], start=1):
        running = running + probs[index]
        score = macro_f1(labels, running.argmax(1))
        if score > best_init[0] + 1e-12:
            best_init, total = (score, n_init), running.copy()
    assert total is not None
    counts[ranked[: best_init[1]]] += 1
    best = (best_init[0], counts.copy())
    # Hill climbing with replacement, keeping the best ensemble seen (ties: the smaller one, seen first).
    while counts.sum() < options.size:
        scores = [macro_f1(labels, (total + probs[i]).argmax(1)) for i in ranked]
        pick = ranked[int(np.argmax(scores))]
        total = total + probs[pick]
        counts[pick] += 1
        if max(scores) > best[0] + 1e-12:
            best = (max(scores), counts.copy())
    return best[1]
