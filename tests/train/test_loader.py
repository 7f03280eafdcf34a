"""Sharing the cores: search workers, their training loops and their loader processes add up to the cores."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from automl.train.augment import build_eval_transform
from automl.train.engine import FoldData, FoldRun, Runtime
from automl.train.loader import CachedImages, make_loader, share_cores, split_loader_workers
from automl.train.params import TrainParams


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


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_a_fold_splits_its_loader_processes_between_its_two_loaders() -> None:
    for total in range(0, 33):
        train, validation = split_loader_workers(total)
        assert train + validation == total and train >= validation >= 0
    images = [np.zeros((32, 32, 3), dtype=np.uint8)] * 40
    labels = np.arange(40) % 2
    data = FoldData(images, labels, labels, np.arange(32), np.arange(32, 40), num_classes=2)
    params = TrainParams(backbone="test_resnet", image_size=32, batch_size=8)
    run = FoldRun(data, params, Runtime(device="cpu", num_workers=5))
    assert (run.train_loader.num_workers, run.val_loader.num_workers) == (4, 1)


@pytest.mark.timeout(180)
def test_loader_processes_run_opencv_after_the_parent_used_its_threads() -> None:
    """fork copies OpenCV's thread pool half-made; a loader process must still resize (it once deadlocked)."""
    for _ in range(5):  # the parent resizes on OpenCV's threads, as the image cache does
        cv2.resize(np.zeros((2000, 2000, 3), dtype=np.uint8), (1000, 1000), interpolation=cv2.INTER_AREA)
    params = TrainParams(image_size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), crop="center_weighted")
    images = [np.zeros((36, 48, 3), dtype=np.uint8)] * 8
    dataset = CachedImages(images, np.zeros(8, dtype=np.int64), build_eval_transform(params))
    loader = make_loader(dataset, 4, train=True, device=torch.device("cpu"), seed=0, num_workers=1)
    assert [tuple(x.shape) for x, _ in loader] == [(4, 3, 32, 32)] * 2
