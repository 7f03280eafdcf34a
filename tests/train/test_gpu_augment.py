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
from automl.train.augment import build_eval_transform, build_train_transform
from automl.train.gpu_augment import DeviceImages, GpuBatches, resolve_augment_device
from automl.train.params import TrainParams
from automl.train.samplers import EpochOrder

SIZE, SAMPLES = 32, 600
PARAMS = TrainParams(
    image_size=SIZE, crop="random_resized", crop_scale_min=0.4, hflip=0.5, color_jitter=0.3, cutout=0.5,
    affine=0.5, rotate_limit=20.0, gauss_noise=0.5, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
)  # fmt: skip
CPU = torch.device("cpu")


def batches(images: list[np.ndarray], targets: np.ndarray, params: TrainParams, batch: int, seed: int, sampler=None):
    order = EpochOrder(len(images), batch, seed, sampler)
    return GpuBatches(DeviceImages(images, CPU), np.arange(len(images)), targets, params, order, seed)


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
    epoch = batches(images * 40, np.zeros(len(images) * 40), params, 100, seed=1)
    out = []
    while sum(len(b) for b in out) < SAMPLES:
        out += [x for x, _ in epoch]
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
    params = replace(PARAMS, crop="none", hflip=0.0, color_jitter=0.0, cutout=0.0, affine=0.0, gauss_noise=0.0)
    image = face_image(SIZE, 42)  # as the image cache stores it: the shorter side is the image size
    cpu = cpu_batches(params, [image])[0]
    gpu = gpu_batches(params, [image])[0]
    assert gpu.shape == cpu.shape == (3, SIZE, SIZE)
    assert (gpu - cpu).abs().max() < 1e-6  # the same centred square, pixel for pixel
    smaller = face_image(40, 52)  # resized on the way: resampled differently (area vs averaged bilinear)
    assert (gpu_batches(params, [smaller])[0] - cpu_batches(params, [smaller])[0]).abs().mean() < 0.03


@pytest.mark.parametrize("crop", ["none", "center_weighted", "random_resized"])
@pytest.mark.parametrize("shape", [(SIZE, 42), (43, SIZE), (SIZE, SIZE), (SIZE, 45)])  # as the cache stores them
def test_validation_on_the_device_is_the_eval_transform(crop: str, shape: tuple[int, int]) -> None:
    """The eval view cut on the device is the CPU eval transform's, in batches of one shape (the last padded)."""
    params = replace(PARAMS, crop=crop, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    images = [np.roll(face_image(*shape), k, axis=1) for k in range(5)]
    transform = build_eval_transform(params)
    expected = torch.stack([transform(image=image)["image"] for image in images])
    found = list(DeviceImages(images, CPU).eval_batches(np.arange(5), params, batch_size=2))
    assert [(tuple(x.shape), count) for x, count in found] == [((2, 3, SIZE, SIZE), 2)] * 2 + [((2, 3, SIZE, SIZE), 1)]
    on_device = torch.cat([x[:count] for x, count in found])
    error = ((on_device - expected) * torch.tensor(params.std).view(1, 3, 1, 1)).abs()  # in [0, 1] pixel units
    if crop == "center_weighted":  # resampled (roi_align against OpenCV's resize, which rounds to whole grey levels)
        assert error.mean() < 1 / 255 and error.max() < 0.1
    else:  # the centred square of the cached image, pixel for pixel
        assert error.max() < 1e-6


def test_batches_follow_the_sampler_and_the_seed() -> None:
    images = [face_image()] * 10
    targets = np.arange(10)
    first = batches(images, targets, PARAMS, 4, seed=3)
    second = batches(images, targets, PARAMS, 4, seed=3)
    assert len(first) == 2  # drop_last, as the CPU loader
    for (x1, y1), (x2, y2) in zip(first, second, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert sorted(torch.cat([y for _, y in first]).tolist()) != list(range(8))  # shuffled each epoch ...
    sampler = [9, 9, 9, 9, 1, 1, 1, 1]
    fixed = batches(images, targets, PARAMS, 4, seed=3, sampler=sampler)
    assert [y.tolist() for _, y in fixed] == [[9, 9, 9, 9], [1, 1, 1, 1]]  # ... or drawn by the fold's sampler


def test_where_batches_are_augmented() -> None:
    cuda, cpu = torch.device("cuda"), CPU
    assert resolve_augment_device(PARAMS, cuda) == "gpu"  # auto: batched on a GPU ...
    assert resolve_augment_device(PARAMS, cpu) == "cpu"  # ... albumentations on a CPU, where it is faster
    assert resolve_augment_device(replace(PARAMS, clahe=0.2), cuda) == "cpu"  # what only albumentations has
    assert resolve_augment_device(replace(PARAMS, augment_device="gpu"), cpu) == "gpu"
    assert resolve_augment_device(replace(PARAMS, augment_device="cpu"), cuda) == "cpu"
    with pytest.raises(AutomlError, match="clahe: 0 and perspective: 0, or augment_device: auto"):
        resolve_augment_device(replace(PARAMS, augment_device="gpu", clahe=0.2, perspective=0.3), cuda)
