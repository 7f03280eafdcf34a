"""Test-time augmentation: each model also sees a mirrored and a slightly zoomed view of every image
(`automl.train.inference` predicts the views). A combination of views averages their probabilities; the export keeps
one only when it raises out-of-fold macro F1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from automl.train.inference import CROP, FLIP, PLAIN, VIEWS

__all__ = ["COMBINATIONS", "CROP", "FLIP", "PLAIN", "VIEWS", "combine_views"]

#: The view combinations tried, plain alone first: it stays unless another raises out-of-fold F1.
COMBINATIONS: tuple[tuple[str, ...], ...] = ((PLAIN,), (PLAIN, FLIP), (PLAIN, CROP), (PLAIN, FLIP, CROP))


def combine_views(probs: dict[str, np.ndarray], views: Sequence[str]) -> np.ndarray:
    """The mean of the chosen views' probabilities."""
    return np.mean([probs[v] for v in views], axis=0)
