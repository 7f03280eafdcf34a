"""Feeding a fold: cached arrays -> albumentations -> batches, seeded, with pinned memory on CUDA."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence

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


def default_workers(device: torch.device) -> int:
    """Loader processes: none on CPU, where the model already uses every core; several on a GPU."""
    return 0 if device.type == "cpu" else min(8, max(1, (os.cpu_count() or 2) - 1))


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
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
