"""Feeding a fold: cached arrays -> albumentations -> batches, seeded, with pinned memory on CUDA."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class CachedImages(Dataset):
    """Images already decoded by the image cache, each transformed when it is drawn."""

    def __init__(self, arrays: Sequence[np.ndarray], labels: np.ndarray, transform: Callable[..., dict]):
        self.arrays, self.labels, self.transform = arrays, labels, transform

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, np.ndarray]:
        # A numpy scalar or row: class codes batch as int64, a head's float targets (ages, several tasks) as float32.
        return self.transform(image=self.arrays[index])["image"], self.labels[index]


@dataclass(frozen=True)
class CoreShare:
    """One search worker's part of the machine's cores."""

    threads: int  # PyTorch threads of the worker's own process (the training loop)
    loader_workers: int  # loader processes of the worker's fold: its training and validation loaders together


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


def split_loader_workers(total: int) -> tuple[int, int]:
    """A fold's loader processes for (training, validation). The two loaders never run at once, but both keep
    their processes (persistent workers); validation has no augmentation and a fifth of the images, so a quarter."""
    validation = total // 4
    return total - validation, validation


def default_workers(device: torch.device) -> int:
    """A fold's loader processes when nobody shared the cores: none on CPU, where the model already uses every
    core; on a GPU, every core but the one that drives it."""
    return share_cores(usable_cores(), 1, device.type == "cuda").loader_workers


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    train: bool,
    device: torch.device,
    seed: int,
    sampler: Sampler | None = None,
    num_workers: int | None = None,
) -> DataLoader:
    workers = default_workers(device) if num_workers is None else num_workers
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        drop_last=train and len(dataset) > batch_size,  # a batch of one breaks batch norm
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=device.type == "cuda",
        generator=generator,
        worker_init_fn=_seed_worker,
    )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; Python and NumPy follow from it.
    # One core per loader process: OpenCV would start a thread per core in each. 0 turns its threads off without
    # touching the pool that fork copied from the parent (setNumThreads(1) deadlocked once the parent had used it).
    cv2.setNumThreads(0)
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
