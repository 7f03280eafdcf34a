from __future__ import annotations

import pytest
import torch

from automl.errors import AutomlError
from automl.train.mixing import MIXES, VCUTMIX_JITTER, mix_batch
from automl.train.params import TrainParams

N, H, W = 8, 16, 20


def batch(device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.rand(N, 3, H, W, generator=torch.Generator().manual_seed(0)).to(device)
    # target i is sample i, so target_b reveals the permutation.
    return images, torch.arange(N, device=device)


def mix(mode: str, seed: int, prob: float = 1.0, alpha: float = 1.0, device: str = "cpu"):
    images, target = batch(device)
    params = TrainParams(mix=mode, mix_prob=prob, mix_alpha=alpha)
    return images, target, mix_batch(images, target, params, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("mode", MIXES.names()[1:])
def test_shapes_and_lam(mode: str) -> None:
    for seed in range(10):
        images, target, (mixed, target_a, target_b, lam) = mix(mode, seed)
        assert mixed.shape == images.shape and mixed.dtype == images.dtype
        assert torch.equal(target_a, target)
        assert sorted(target_b.tolist()) == list(range(N))
        assert isinstance(lam, float) and 0.0 <= lam <= 1.0


def test_vcutmix_left_from_a_right_from_b() -> None:
    jitter = round(W * VCUTMIX_JITTER)
    splits = set()
    for seed in range(20):
        images, _, (mixed, _, perm, lam) = mix("vcutmix", seed)
        split = round(lam * W)
        assert split / W == pytest.approx(lam) and abs(split - W // 2) <= jitter
        assert torch.equal(mixed[..., :split], images[..., :split])
        assert torch.equal(mixed[..., split:], images[perm][..., split:])
        splits.add(split)
    assert W // 2 in splits or len(splits) > 1


def test_cutmix_box_comes_from_the_permuted_image() -> None:
    boxes = 0
    for seed in range(20):
        images, _, (mixed, _, perm, lam) = mix("cutmix", seed)
        other = images[perm]
        inside = (mixed != images).any(dim=(0, 1))  # samples with perm[i] != i differ everywhere inside the box
        rows, cols = inside.any(dim=1).nonzero().flatten(), inside.any(dim=0).nonzero().flatten()
        if len(rows) == 0:
            assert lam == 1.0 and torch.equal(mixed, images)
            continue
        boxes += 1
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        assert bool(inside[y0:y1, x0:x1].all()) and int(inside.sum()) == (y1 - y0) * (x1 - x0)
        assert torch.equal(mixed[:, :, y0:y1, x0:x1], other[:, :, y0:y1, x0:x1])
        outside = torch.ones(H, W, dtype=torch.bool)
        outside[y0:y1, x0:x1] = False
        assert torch.equal(mixed[..., outside], images[..., outside])
        assert lam == pytest.approx(1 - (y1 - y0) * (x1 - x0) / (H * W))
    assert boxes >= 10


def test_mixup_is_the_convex_combination() -> None:
    for seed in range(5):
        images, _, (mixed, _, perm, lam) = mix("mixup", seed, alpha=0.4)
        assert 0.0 < lam < 1.0
        assert torch.allclose(mixed, lam * images + (1 - lam) * images[perm], atol=1e-6)


@pytest.mark.parametrize("mode", MIXES.names())
def test_unmixed_batch_is_returned_as_is(mode: str) -> None:
    for seed in range(5):
        images, target, (mixed, target_a, target_b, lam) = mix(mode, seed, prob=0.0)
        assert mixed is images and target_a is target and target_b is target and lam == 1.0
    images, target, (mixed, _, target_b, lam) = mix("none", 0, prob=1.0)
    assert mixed is images and target_b is target and lam == 1.0


def test_mix_prob_is_the_share_of_mixed_batches() -> None:
    generator = torch.Generator().manual_seed(0)
    images, target = batch()
    params = TrainParams(mix="vcutmix", mix_prob=0.3)
    mixed = sum(mix_batch(images, target, params, generator)[0] is not images for _ in range(400))
    assert 80 <= mixed <= 160


@pytest.mark.parametrize("mode", MIXES.names()[1:])
def test_same_seed_same_result_and_input_untouched(mode: str) -> None:
    images, target, (mixed, _, target_b, lam) = mix(mode, 3)
    original, _ = batch()
    assert torch.equal(images, original) and torch.equal(target, torch.arange(N))
    _, _, (again, _, again_b, again_lam) = mix(mode, 3)
    assert torch.equal(mixed, again) and torch.equal(target_b, again_b) and lam == again_lam
    results = [mix(mode, seed)[2] for seed in range(4, 8)]
    assert any(not torch.equal(r[0], mixed) for r in results)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("mode", MIXES.names()[1:])
def test_cuda_matches_cpu(mode: str) -> None:
    _, _, (cpu, _, cpu_b, cpu_lam) = mix(mode, 5)
    _, _, (gpu, _, gpu_b, gpu_lam) = mix(mode, 5, device="cuda")
    assert gpu.is_cuda and gpu_b.is_cuda and gpu_lam == cpu_lam
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-6) and torch.equal(gpu_b.cpu(), cpu_b)


def test_an_unknown_mix_names_the_allowed_ones() -> None:
    images, target = batch()
    allowed = r"unknown mix 'fmix'; did you mean mixup, cutmix\? allowed: none, mixup, cutmix, vcutmix"
    with pytest.raises(AutomlError, match=allowed):
        mix_batch(images, target, TrainParams(mix="fmix"), torch.Generator().manual_seed(0))
