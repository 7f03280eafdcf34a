"""Batches made by albumentations on the CPU (`augment_device: cpu`, and every augmentation the batched path lacks):
in this process, or in loader processes that live as long as the search worker, whatever folds and trials ask.

A fold does not get a DataLoader of its own, whose processes would be forked and joined fold after fold: the
worker's one `CpuFeed` takes requests, one per batch (which images, their targets, the transform's parameters and a
seed), so its processes serve every fold and trial of the worker. Each batch's augmentations follow from its seed,
whichever process makes it: the same trial gives the same batches with any number of loader processes.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from automl.train.augment import build_eval_transform, build_train_transform
from automl.train.params import TrainParams
from automl.train.samplers import EpochOrder

#: Transforms a loader process keeps built (a worker runs one trial at a time; a few cover its train and eval).
KEPT_TRANSFORMS = 8


@dataclass(frozen=True)
class CoreShare:
    """One search worker's part of the machine's cores."""

    threads: int  # PyTorch threads of the worker's own process (the training loop)
    loader_workers: int  # its loader processes (CPU augmentation), shared by all its folds and trials


def usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):  # Linux: the cores this process may use, not all the machine's
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def share_cores(cores: int, workers: int, gpu: bool, loader_workers: int | None = None) -> CoreShare:
    """Share `cores` among `workers` search workers so that their processes add up to at most the cores.

    On CPU the model itself uses the worker's cores and images are fed in its process (no loader processes).
    On a GPU the model needs one core to drive it and the loader processes get the rest of the worker's share.
    `loader_workers` (the user's choice, per worker) overrides the share; the threads then get what is left.
    """
    share = max(1, cores // max(1, workers))
    if loader_workers is None:
        loader_workers = share - 1 if gpu else 0
    return CoreShare(threads=max(1, share - loader_workers), loader_workers=loader_workers)


def default_workers(device: torch.device) -> int:
    """A worker's loader processes when nobody shared the cores: none on CPU, where the model already uses every
    core; on a GPU, every core but the one that drives it."""
    return share_cores(usable_cores(), 1, device.type == "cuda").loader_workers


@dataclass(frozen=True)
class BatchRequest:
    """One batch for the feed to make: the images (cached uint8 arrays), their targets, and how to transform them."""

    arrays: Sequence[np.ndarray]
    targets: np.ndarray
    params: TrainParams
    train: bool  # the training pipeline (augmentations, drawn from `seed`) or the eval transform
    seed: int = 0
    zoom: float = 1.0  # the eval transform's (test-time augmentation's closer view)


class _MakeBatch(Dataset):
    """A request -> (images, targets): the "dataset" of the feed's loader, which hands it requests as indexes."""

    def __init__(self) -> None:
        self._transforms: dict[tuple[TrainParams, bool, float], object] = {}

    def __getitem__(self, request: BatchRequest) -> tuple[torch.Tensor, torch.Tensor]:
        key = (request.params, request.train, request.zoom)
        transform = self._transforms.get(key)
        if transform is None:
            if len(self._transforms) >= KEPT_TRANSFORMS:
                self._transforms.clear()
            if request.train:
                transform = build_train_transform(request.params)
            else:
                transform = build_eval_transform(request.params, request.zoom)
            self._transforms[key] = transform
        if request.train:
            transform.reseed(request.seed)
        images = torch.stack([transform(image=array)["image"] for array in request.arrays])
        # Class codes batch as int64, a head's float targets (ages, several tasks) as float32.
        return images, torch.as_tensor(np.ascontiguousarray(request.targets))


class _Requests(Sampler):
    """The requests of the epoch being fed: the loader's "sampler", refilled before each pass."""

    def __init__(self) -> None:
        self.current: list[BatchRequest] = []

    def __iter__(self) -> Iterator[BatchRequest]:
        return iter(self.current)

    def __len__(self) -> int:
        return len(self.current)


class CpuFeed:
    """Makes batches from requests with albumentations: in this process (`workers` 0), or in that many loader
    processes, started at the first request and kept until the feed is closed."""

    def __init__(self, workers: int, pin_memory: bool = False):
        self.workers = workers
        self._requests = _Requests()
        self._loader = DataLoader(
            _MakeBatch(),
            batch_size=None,  # each request is a whole batch
            sampler=self._requests,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=pin_memory,
            worker_init_fn=_quiet_opencv,
            generator=torch.Generator().manual_seed(0),  # not the global stream: training's draws stay the same
        )

    def run(self, requests: Sequence[BatchRequest]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of `requests`, in order (the next pass may start before this one is consumed: it is
        dropped)."""
        self._requests.current = list(requests)
        return iter(self._loader)

    def close(self) -> None:
        """Stop the loader processes."""
        iterator = getattr(self._loader, "_iterator", None)
        if iterator is not None:
            iterator._shutdown_workers()
            self._loader._iterator = None

    def training(
        self,
        arrays: Sequence[np.ndarray],
        rows: np.ndarray,
        targets: np.ndarray,
        params: TrainParams,
        order: EpochOrder,
        seed: int,
    ) -> CpuBatches:
        return CpuBatches(self, arrays, rows, targets, params, order, seed)

    def evaluation(
        self, arrays: Sequence[np.ndarray], rows: np.ndarray, params: TrainParams, batch_size: int, zoom: float = 1.0
    ) -> Iterator[tuple[torch.Tensor, int]]:
        """The eval view of `rows`, normalised, in batches: (images, how many), as DeviceImages.eval_batches."""
        no_targets = np.zeros(0, dtype=np.int64)
        requests = [
            BatchRequest([arrays[i] for i in rows[start : start + batch_size]], no_targets, params, False, zoom=zoom)
            for start in range(0, len(rows), batch_size)
        ]
        return ((images, len(images)) for images, _ in self.run(requests))


class CpuBatches:
    """One epoch of a fold's training batches (images, targets), made by the feed; `len` is the steps."""

    def __init__(
        self,
        feed: CpuFeed,
        arrays: Sequence[np.ndarray],
        rows: np.ndarray,
        targets: np.ndarray,
        params: TrainParams,
        order: EpochOrder,
        seed: int,
    ):
        self.feed, self.arrays, self.rows, self.targets, self.params, self.order = (
            feed, arrays, rows, targets, params, order,
        )  # fmt: skip
        self.seeds = np.random.default_rng(seed)  # one seed per batch, drawn here: any process makes the same batch

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        requests = []
        for positions in self.order.epoch():
            arrays = [self.arrays[i] for i in self.rows[positions]]
            seed = int(self.seeds.integers(2**63))
            requests.append(BatchRequest(arrays, self.targets[positions], self.params, train=True, seed=seed))
        return self.feed.run(requests)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _quiet_opencv(worker_id: int) -> None:
    # One core per loader process: OpenCV would start a thread per core in each. 0 turns its threads off without
    # touching the pool that fork copied from the parent (setNumThreads(1) deadlocked once the parent had used it).
    cv2.setNumThreads(0)
