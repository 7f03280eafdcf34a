"""`augment_device: gpu`: batched augmentation on the training device gives batches like the CPU pipeline's.

Run here on CPU tensors (the same code runs on a GPU). Each test image has a bright left half, a mid-grey frame
around a centred dark square and no black pixel, so simple per-image statistics measure what each augmentation
did: the left-right difference (flips), the share of the dark square (crop scale), the brightness and contrast
(colour jitter), and the share of black pixels (cutout holes).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp

from automl.errors import AutomlError
from automl.train.augment import build_train_transform
from automl.train.gpu_augment import DeviceImages, GpuBatches, check_gpu_augment
from automl.train.params import TrainParams

SIZE, SAMPLES = 32, 600
PARAMS = TrainParams(
    image_size=SIZE, crop="random_resized", crop_scale_min=0.4, hflip=0.5, color_jitter=0.3, cutout=0.5,
    mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
)  # fmt: skip


def face_image(height: int = 40, width: int = 52) -> np.ndarray:
    image = np.full((height, width, 3), 120, dtype=np.uint8)
    image[:, : width // 2] = (220, 190, 160)  # bright, warm left half
    top, left = height // 4, width // 4
    image[top : height - top, left : width - left] = (40, 60, 90)  # a dark, cool centre
    return image


def statistics(batch: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-image figures of a batch of (N, 3, SIZE, SIZE) images in [0, 1]."""
    x = batch.double()
    gray = x.mean(1)
    half = SIZE // 2
    return {
        "left_minus_right": (gray[:, :, :half].mean((1, 2)) - gray[:, :, half:].mean((1, 2))).numpy(),
        "dark_share": ((x[:, 2] > x[:, 0] + 0.05) & (gray < 0.45)).double().mean((1, 2)).numpy(),
        "brightness": gray.mean((1, 2)).numpy(),
        "contrast": gray.std((1, 2)).numpy(),
        "black_share": (x.amax(1) < 1e-6).double().mean((1, 2)).numpy(),
    }


def cpu_batches(params: TrainParams, images: list[np.ndarray]) -> torch.Tensor:
    transform = build_train_transform(params, seed=1)
    return torch.stack([transform(image=images[k % len(images)])["image"] for k in range(SAMPLES)])


def gpu_batches(params: TrainParams, images: list[np.ndarray]) -> torch.Tensor:
    batches = GpuBatches(DeviceImages(images, torch.device("cpu")), np.zeros(len(images)), params, 100, seed=1)
    out = []
    while sum(len(b) for b in out) < SAMPLES:
        out += [x for x, _ in batches]
    return torch.cat(out)[:SAMPLES]


@pytest.mark.parametrize("crop", ["random_resized", "center_weighted", "none"])
def test_gpu_and_cpu_augmentation_give_statistically_similar_batches(crop: str) -> None:
    params = replace(PARAMS, crop=crop)
    images = [face_image(), face_image(52, 40), face_image(40, 40)]  # both orientations, and a square
    on_cpu, on_gpu = statistics(cpu_batches(params, images)), statistics(gpu_batches(params, images))
    for name in on_cpu:
        test = ks_2samp(on_cpu[name], on_gpu[name])
        summary = f"{name}: cpu mean {on_cpu[name].mean():.4f} sd {on_cpu[name].std():.4f}, " + (
            f"gpu mean {on_gpu[name].mean():.4f} sd {on_gpu[name].std():.4f}, KS {test.statistic:.3f}"
        )
        # Resampling differs slightly (an area resize against averaged bilinear samples), and crop offsets are
        # drawn from a few pixels, so distributions are compared with some slack; a missing or mis-scaled
        # augmentation moves a mean by several tenths of a standard deviation or changes the spread.
        assert test.statistic < 0.25, summary
        assert abs(on_cpu[name].mean() - on_gpu[name].mean()) <= 0.25 * on_cpu[name].std() + 0.005, summary
        assert 0.8 < on_gpu[name].std() / on_cpu[name].std() < 1.25, summary


def test_without_augmentation_the_batches_are_the_cpu_crop() -> None:
    params = replace(PARAMS, crop="none", hflip=0.0, color_jitter=0.0, cutout=0.0)
    image = face_image(40, 52)
    cpu = cpu_batches(params, [image])[0]
    gpu = gpu_batches(params, [image])[0]
    assert gpu.shape == cpu.shape == (3, SIZE, SIZE)
    assert (gpu - cpu).abs().mean() < 0.03  # resampled differently (area vs averaged bilinear), same picture


def test_batches_follow_the_sampler_and_the_seed() -> None:
    images = [face_image()] * 10
    targets = np.arange(10)
    first = GpuBatches(DeviceImages(images, torch.device("cpu")), targets, PARAMS, 4, seed=3)
    second = GpuBatches(DeviceImages(images, torch.device("cpu")), targets, PARAMS, 4, seed=3)
    assert len(first) == 2  # drop_last, as the CPU loader
    for (x1, y1), (x2, y2) in zip(first, second, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert sorted(torch.cat([y for _, y in first]).tolist()) != list(range(8))  # shuffled each epoch ...
    sampler = [9, 9, 9, 9, 1, 1, 1, 1]
    fixed = GpuBatches(DeviceImages(images, torch.device("cpu")), targets, PARAMS, 4, seed=3, sampler=sampler)
    assert [y.tolist() for _, y in fixed] == [[9, 9, 9, 9], [1, 1, 1, 1]]  # ... or drawn by the fold's sampler


def test_cpu_only_augmentations_are_refused_on_the_gpu_path() -> None:
    with pytest.raises(AutomlError, match="clahe: 0 and affine: 0, or augment_device: cpu"):
        check_gpu_augment(replace(PARAMS, augment_device="gpu", clahe=0.2, affine=0.3))
