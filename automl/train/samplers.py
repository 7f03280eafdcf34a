"""Training samplers against class imbalance, looked up by their search-space names."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import RandomSampler, Sampler, WeightedRandomSampler

from automl.errors import AutomlError
from automl.registry import Registry
from automl.train.params import TrainParams

#: Sampler name -> `(labels, params, generator, num_classes) -> Sampler or None` (None: shuffle).
SAMPLERS: Registry[Callable[..., Sampler[int] | None]] = Registry("sampler")


def _as_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not len(labels):
        raise AutomlError(f"a sampler needs a non-empty 1-d array of class codes, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise AutomlError(f"class codes must be integers, got {labels.dtype}")
    if labels.min() < 0:
        raise AutomlError(f"class codes must be >= 0, got {labels.min()}")
    return labels.astype(np.int64, copy=False)


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """How many of `labels` fall in each class `0 .. num_classes - 1` (zeros included)."""
    labels = _as_labels(labels)
    if labels.max() >= num_classes:
        raise AutomlError(f"class code {labels.max()} is outside 0..{num_classes - 1}")
    return np.bincount(labels, minlength=num_classes)


class OversampleSampler(Sampler[int]):
    """Each image of `classes` is drawn `factor` times per epoch in expectation, every other image once; shuffled.

    `factor = k + f` gives every chosen image k copies, and an extra copy to round(f * n) of a class's n images,
    picked afresh each epoch. Picking a fixed number (rather than flipping a coin per image) keeps the epoch length
    the same every epoch, so `len(loader)` and per-step schedules sized from it stay exact.
    """

    def __init__(self, labels: np.ndarray, classes: tuple[int, ...], factor: float, generator: torch.Generator):
        labels = _as_labels(labels)
        self.generator = generator
        self.factor = factor
        chosen = np.isin(labels, classes)
        self._others = torch.from_numpy(np.flatnonzero(~chosen))
        self._chosen = [torch.from_numpy(np.flatnonzero(labels == c)) for c in sorted(set(classes))]
        whole = math.floor(factor)
        self._whole = whole
        self._extra = [round((factor - whole) * len(idx)) for idx in self._chosen]
        self._length = len(self._others) + sum(
            whole * len(idx) + k for idx, k in zip(self._chosen, self._extra, strict=True)
        )

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[int]:
        parts = [self._others]
        for idx, extra in zip(self._chosen, self._extra, strict=True):
            parts.extend([idx] * self._whole)
            if extra:
                parts.append(idx[torch.randperm(len(idx), generator=self.generator)[:extra]])
        epoch = torch.cat(parts)
        epoch = epoch[torch.randperm(len(epoch), generator=self.generator)]
        return iter(epoch.tolist())


@SAMPLERS.register("none")
def _none(labels: np.ndarray, params: TrainParams, generator: torch.Generator, num_classes: int | None) -> None:
    return None


@SAMPLERS.register("weighted")
def _weighted(
    labels: np.ndarray, params: TrainParams, generator: torch.Generator, num_classes: int | None
) -> WeightedRandomSampler:
    labels = _as_labels(labels)
    counts = np.bincount(labels)
    weights = (1.0 / counts[labels]) ** params.sampler_power
    return WeightedRandomSampler(
        torch.from_numpy(weights), num_samples=len(labels), replacement=True, generator=generator
    )


@SAMPLERS.register("oversample")
def _oversample(
    labels: np.ndarray, params: TrainParams, generator: torch.Generator, num_classes: int | None
) -> OversampleSampler:
    labels = _as_labels(labels)
    if not params.oversample_classes:
        raise AutomlError("sampler 'oversample' needs oversample_classes: the class codes to repeat")
    # Without the task's class count, the labels' own range is all that is known.
    top = (num_classes if num_classes is not None else int(labels.max()) + 1) - 1
    outside = [c for c in params.oversample_classes if not 0 <= c <= top]
    if outside:
        raise AutomlError(
            f"oversample_classes {', '.join(map(str, outside))} outside the class codes 0..{top} of these labels"
        )
    return OversampleSampler(labels, params.oversample_classes, params.oversample_factor, generator)


def create_sampler(
    labels: np.ndarray, params: TrainParams, generator: torch.Generator, num_classes: int | None = None
) -> Sampler[int] | None:
    """The training sampler named by `params.sampler` over `labels` (one class code per image), or None to shuffle.

    weighted: WeightedRandomSampler with replacement, `len(labels)` draws an epoch, weight of an image
    `(1 / count of its class) ** sampler_power` (0: the data's shares, 1: balanced classes).
    oversample: `OversampleSampler` over `oversample_classes`, `oversample_factor` times each.
    `num_classes` (the task's) lets a class that is absent from these labels still be named.
    """
    return SAMPLERS.create(params.sampler, labels, params, generator, num_classes)


class EpochOrder:
    """The positions of every training batch of an epoch: drawn by a fold's sampler (a seeded shuffle without one),
    `batch_size` at a time, the last partial batch dropped when there is more than one batch (a batch of one breaks
    batch norm), as a DataLoader with drop_last does."""

    def __init__(self, count: int, batch_size: int, seed: int, sampler: Sampler[int] | None = None):
        self.batch_size = batch_size
        self.sampler = sampler or RandomSampler(range(count), generator=torch.Generator().manual_seed(seed))
        self.drop_last = count > batch_size

    def __len__(self) -> int:
        draws = len(self.sampler)
        return draws // self.batch_size if self.drop_last else math.ceil(draws / self.batch_size)

    def draw(self) -> np.ndarray:
        """One epoch's positions, in order, the dropped ones left out: `len(self) * batch_size` at most."""
        positions = np.fromiter(iter(self.sampler), dtype=np.int64, count=len(self.sampler))
        return positions[: len(self) * self.batch_size]

    def epoch(self) -> list[np.ndarray]:
        """One epoch's batches of positions."""
        positions = self.draw()
        return [positions[start : start + self.batch_size] for start in range(0, len(positions), self.batch_size)]
