"""The CPU feed: loader processes started once and kept for every fold and trial, batches that do not depend on
them, and the cores shared among search workers, their training loops and their loader processes."""

from __future__ import annotations

import os
from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch

from automl.train.loader import CpuFeed, share_cores
from automl.train.params import TrainParams
from automl.train.samplers import EpochOrder

PARAMS = TrainParams(image_size=32, hflip=0.5, affine=0.5, clahe=0.5, cutout=0.5, mean=(0.5,) * 3, std=(0.25,) * 3)
IMAGES = [np.random.default_rng(k).integers(0, 255, (32, 40, 3), dtype=np.uint8) for k in range(24)]


@pytest.mark.parametrize("gpu", [True, False])
def test_workers_and_their_loaders_add_up_to_the_cores(gpu: bool) -> None:
    for cores in range(1, 65):
        for workers in range(1, min(cores, 8) + 1):
            share = share_cores(cores, workers, gpu)
            assert workers * (share.threads + share.loader_workers) <= cores, (cores, workers, share)
            assert share.threads >= 1
            assert share.loader_workers == (cores // workers - 1 if gpu else 0)
    assert share_cores(16, 1, gpu=True).loader_workers == 15
    assert share_cores(16, 3, gpu=True).loader_workers == 4  # 3 workers x (1 + 4) = 15 of 16 cores


def test_the_user_sets_the_loader_processes() -> None:
    share = share_cores(16, 2, gpu=True, loader_workers=3)
    assert (share.threads, share.loader_workers) == (5, 3)
    assert share_cores(4, 1, gpu=False, loader_workers=2).loader_workers == 2


def epoch(feed: CpuFeed, params: TrainParams, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    rows = np.arange(len(IMAGES))
    order = EpochOrder(len(rows), 8, seed)
    return list(feed.training(IMAGES, rows, rows % 3, params, order, seed))


@pytest.fixture
def forks() -> list[int]:
    """Every fork of this process from now on (DataLoader's loader processes are forked)."""
    seen: list[int] = []
    os.register_at_fork(after_in_parent=lambda: seen.append(1))
    return seen


@pytest.mark.timeout(180)
def test_loader_processes_serve_every_fold_and_trial(forks: list[int]) -> None:
    feed = CpuFeed(workers=2)
    try:
        for trial in range(3):  # three trials of two folds, each fold two epochs and a validation pass
            params = replace(PARAMS, seed=trial, cutout=0.1 * trial)
            for fold in range(2):
                for _ in range(2):
                    assert [tuple(x.shape) for x, _ in epoch(feed, params, fold)] == [(8, 3, 32, 32)] * 3
                evaluated = list(feed.evaluation(IMAGES, np.arange(5, 15), params, batch_size=4))
                assert [count for _, count in evaluated] == [4, 4, 2]
    finally:
        feed.close()
    assert len(forks) == 2  # the two loader processes, once


@pytest.mark.timeout(180)
def test_batches_depend_on_the_seed_not_on_the_loader_processes() -> None:
    alone, pooled = CpuFeed(workers=0), CpuFeed(workers=2)
    try:
        first = epoch(alone, PARAMS, seed=4)
        for x, y in zip(first, epoch(pooled, PARAMS, seed=4), strict=True):
            assert torch.equal(x[0], y[0]) and torch.equal(x[1], y[1])
        assert not torch.equal(first[0][0], epoch(alone, PARAMS, seed=5)[0][0])
    finally:
        pooled.close()


@pytest.mark.timeout(180)
def test_loader_processes_run_opencv_after_the_parent_used_its_threads() -> None:
    """fork copies OpenCV's thread pool half-made; a loader process must still resize (it once deadlocked)."""
    for _ in range(5):  # the parent resizes on OpenCV's threads, as the image cache does
        cv2.resize(np.zeros((2000, 2000, 3), dtype=np.uint8), (1000, 1000), interpolation=cv2.INTER_AREA)
    params = TrainParams(image_size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), crop="center_weighted")
    feed = CpuFeed(workers=1)
    try:
        images = [np.zeros((36, 48, 3), dtype=np.uint8)] * 8
        assert [tuple(x.shape) for x, _ in feed.evaluation(images, np.arange(8), params, 4)] == [(4, 3, 32, 32)] * 2
    finally:
        feed.close()
