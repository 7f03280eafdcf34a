"""Batch-level mixing: mixup, cutmix and the vertical half-and-half cutmix of two faces.

`mix_batch` returns two targets and a ratio; the caller's loss is `lam * L(out, a) + (1 - lam) * L(out, b)`, so it
works with every loss that takes class indices (timm's Mixup makes soft one-hot targets and has no vertical cut).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from automl.registry import Registry
from automl.train.params import TrainParams

#: Mix name -> `(images, permutation, alpha, rng) -> (mixed images, lam)`; `none` mixes nothing.
MIXES: Registry[Callable[[Tensor, Tensor, float, np.random.Generator], tuple[Tensor, float]] | None] = Registry("mix")
MIXES.register("none")(None)

#: vcutmix splits at a column drawn uniformly within this share of the width either side of the middle.
VCUTMIX_JITTER = 0.0625


@MIXES.register("mixup")
def _mixup(images: Tensor, perm: Tensor, alpha: float, rng: np.random.Generator) -> tuple[Tensor, float]:
    lam = float(rng.beta(alpha, alpha))
    # lerp(b, a, lam) = lam * a + (1 - lam) * b
    return torch.lerp(images[perm], images, lam), lam


@MIXES.register("cutmix")
def _cutmix(images: Tensor, perm: Tensor, alpha: float, rng: np.random.Generator) -> tuple[Tensor, float]:
    height, width = images.shape[-2:]
    cut = math.sqrt(1.0 - float(rng.beta(alpha, alpha)))
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    # A box centred anywhere, clipped at the border: its real area decides lam.
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    mixed = images.clone()
    mixed[:, :, y0:y1, x0:x1] = images[perm, :, y0:y1, x0:x1]
    return mixed, 1.0 - (y1 - y0) * (x1 - x0) / (height * width)


@MIXES.register("vcutmix")
def _vcutmix(images: Tensor, perm: Tensor, alpha: float, rng: np.random.Generator) -> tuple[Tensor, float]:
    width = images.shape[-1]
    jitter = round(width * VCUTMIX_JITTER)
    split = min(max(width // 2 + int(rng.integers(-jitter, jitter + 1)), 0), width)
    mixed = images.clone()
    mixed[..., split:] = images[perm, ..., split:]
    return mixed, split / width


def mix_batch(
    images: Tensor, target: Tensor, params: TrainParams, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor, float]:
    """Mix a batch (N, C, H, W) with a permutation of itself, with probability `params.mix_prob`.

    Returns (images, target_a, target_b, lam). An unmixed batch comes back as the same objects with
    target_b = target_a and lam = 1.0; a mixed one is a new tensor (the input is never modified).
    All randomness comes from `generator` (CPU or on the images' device), so a seed reproduces the batch.
    """
    mixer = MIXES.get(params.mix)
    if mixer is None:
        return images, target, target, 1.0
    draw = generator.device
    if float(torch.rand(1, generator=generator, device=draw)) >= params.mix_prob:
        return images, target, target, 1.0
    perm = torch.randperm(images.shape[0], generator=generator, device=draw)
    # torch has no seeded Beta sampler: seed numpy from the generator for lam and the box.
    rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator, device=draw)))
    mixed, lam = mixer(images, perm.to(images.device), params.mix_alpha, rng)
    return mixed, target, target[perm.to(target.device)], lam
