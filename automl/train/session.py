"""What a search worker (or an export) keeps from fold to fold and trial to trial, so that a fold costs its epochs:
the image sets it uploaded to the device, its CPU loader processes, and the runtime they were made for.

A fold never uploads images, forks a process or frees memory for itself. The first fold that needs an image set on
the device uploads it (uint8: the competition's 18,900 images at 224 px are under 4 GB); later folds and trials index
into it. The first fold augmented by albumentations starts the loader processes; they serve every later one. Memory
is freed only when it runs short: an out-of-memory retry drops the sets no fold is using.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from automl.train.device import resolve_device
from automl.train.gpu_augment import DeviceImages
from automl.train.loader import CpuFeed, default_workers


@dataclass
class TimeSpent:
    """Seconds a session spent in training epochs and in validation passes, added up as folds run."""

    training: float = 0.0
    validating: float = 0.0


@dataclass(frozen=True)
class Runtime:
    """How to run, not what to learn: the same trial gives the same model on any of these."""

    device: str = "auto"
    num_workers: int | None = None  # CPU loader processes of a worker; None: loader.default_workers
    amp: bool = True  # mixed precision on CUDA
    channels_last: bool = True  # on CUDA


class TrainSession:
    """A worker's device-resident image sets and loader processes, for `runtime`. Close it (or use it as a context
    manager) to stop the loader processes."""

    def __init__(self, runtime: Runtime = Runtime()):
        self.runtime = runtime
        self.device = resolve_device(runtime.device)
        self.loader_workers = default_workers(self.device) if runtime.num_workers is None else runtime.num_workers
        # Keyed by the identity of the arrays' list (an ImageSets list lives as long as the study's data); the list is
        # held too, so that its id cannot be reused by another while the entry lives.
        self._sets: dict[int, tuple[Sequence[np.ndarray], DeviceImages]] = {}
        self._feed: CpuFeed | None = None
        self.uploads = 0  # image sets uploaded, for the tests and the benchmarks
        self.spent = TimeSpent()  # the search takes each trial's share from it, whether the trial ends or not

    def device_images(self, arrays: Sequence[np.ndarray]) -> DeviceImages:
        """`arrays` on the device: uploaded by the first fold that asks, then shared."""
        entry = self._sets.get(id(arrays))
        if entry is None:
            entry = self._sets[id(arrays)] = (arrays, DeviceImages(arrays, self.device))
            self.uploads += 1
        return entry[1]

    def cpu_feed(self) -> CpuFeed:
        """The worker's albumentations feed, its loader processes started on first use."""
        if self._feed is None:
            self._feed = CpuFeed(self.loader_workers, pin_memory=self.device.type == "cuda")
        return self._feed

    def free_memory(self, keep: Sequence[np.ndarray] | None = None) -> None:
        """Drop the device's image sets but `keep`'s and return the cached memory (after running out of it)."""
        self._sets = {key: entry for key, entry in self._sets.items() if entry[0] is keep}
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def close(self) -> None:
        if self._feed is not None:
            self._feed.close()
            self._feed = None
        self._sets.clear()

    def __enter__(self) -> TrainSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
