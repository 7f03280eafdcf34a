from __future__ import annotations

from dataclasses import fields, replace

import albumentations as A
import numpy as np
import pytest
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.utils.data import DataLoader, Dataset

from automl.errors import AutomlError
from automl.train.augment import (
    AUGMENTATIONS,
    CROPS,
    SeededCompose,
    build_eval_transform,
    build_train_transform,
)
from automl.train.params import TrainParams

# Deprecated albumentations arguments warn: any warning fails these tests.
pytestmark = pytest.mark.filterwarnings("error")

SIZE = 48
# (height, width): a cached portrait face, a landscape crop, a tiny crop smaller than SIZE, an exact square.
SHAPES = [(85, 64), (64, 85), (20, 30), (SIZE, SIZE)]
# Each augmentation fully on (color_jitter is a strength).
FULL = {
    "hflip": 1.0,
    "color_jitter": 0.5,
    "clahe": 1.0,
    "cutout": 1.0,
    "affine": 1.0,
    "perspective": 1.0,
    "gauss_noise": 1.0,
}
OFF = dict.fromkeys(AUGMENTATIONS, 0.0)


def image(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def unnormalise(tensor: torch.Tensor, params: TrainParams) -> torch.Tensor:
    mean = torch.tensor(params.mean or IMAGENET_DEFAULT_MEAN).view(3, 1, 1)
    std = torch.tensor(params.std or IMAGENET_DEFAULT_STD).view(3, 1, 1)
    return tensor * std + mean


def check_output(tensor: torch.Tensor, params: TrainParams) -> None:
    assert isinstance(tensor, torch.Tensor)
    assert tensor.shape == (3, params.image_size, params.image_size)
    assert tensor.dtype == torch.float32
    pixels = unnormalise(tensor, params)
    assert pixels.min() >= -1e-4 and pixels.max() <= 1 + 1e-4


def test_names_match_train_params() -> None:
    names = {f.name for f in fields(TrainParams)}
    assert set(AUGMENTATIONS) == set(FULL) and set(AUGMENTATIONS) <= names
    assert CROPS.names() == ("random_resized", "center_weighted", "none")


@pytest.mark.parametrize("crop", CROPS)
@pytest.mark.parametrize("augmentation", [None, *AUGMENTATIONS, "all"])
def test_every_setting_gives_a_normalised_square(crop: str, augmentation: str | None) -> None:
    on = FULL if augmentation == "all" else {augmentation: FULL[augmentation]} if augmentation else {}
    params = TrainParams(image_size=SIZE, crop=crop, **{**OFF, **on})
    train, evaluate = build_train_transform(params), build_eval_transform(params)
    for shape in SHAPES:
        for seed in range(3):
            check_output(train(image=image(shape, seed))["image"], params)
        check_output(evaluate(image=image(shape))["image"], params)


def test_own_mean_and_std() -> None:
    params = TrainParams(image_size=SIZE, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), **FULL)
    for build in (build_train_transform, build_eval_transform):
        check_output(build(params)(image=image((85, 64)))["image"], params)


@pytest.mark.parametrize("crop", CROPS)
def test_eval_is_deterministic(crop: str) -> None:
    params = TrainParams(image_size=SIZE, crop=crop, **FULL)
    for shape in SHAPES:
        picture = image(shape)
        first = build_eval_transform(params)(image=picture)["image"]
        again = build_eval_transform(params)(image=picture.copy())["image"]
        assert torch.equal(first, again)


@pytest.mark.parametrize("shape", [(85, 64), (64, 85), (64, 64)])
def test_eval_without_crop_is_the_centre_square(shape: tuple[int, int]) -> None:
    params = TrainParams(image_size=64, crop="none")
    picture = image(shape)
    top, left = (shape[0] - 64) // 2, (shape[1] - 64) // 2
    expected = torch.from_numpy(picture[top : top + 64, left : left + 64].astype(np.float32) / 255).permute(2, 0, 1)
    assert torch.allclose(
        unnormalise(build_eval_transform(params)(image=picture)["image"], params), expected, atol=1e-5
    )


def test_any_shorter_side_fills_the_square() -> None:
    for crop in CROPS:
        params = TrainParams(image_size=SIZE, crop=crop)
        train, evaluate = build_train_transform(params), build_eval_transform(params)
        for side in range(7, 400, 3):
            for transform in (train, evaluate):
                check_output(transform(image=image((side, side + 17)))["image"], params)


@pytest.mark.parametrize("crop", CROPS)
def test_train_is_reproducible_with_a_seed(crop: str) -> None:
    params = TrainParams(image_size=SIZE, crop=crop, crop_scale_min=0.3, **FULL)
    pictures = [image((85, 64), seed) for seed in range(4)]
    runs = [[t(image=p)["image"] for p in pictures] for t in (build_train_transform(params, seed=7) for _ in range(2))]
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))
    other = [build_train_transform(params, seed=8)(image=p)["image"] for p in pictures]
    assert not all(torch.equal(a, b) for a, b in zip(runs[0], other, strict=True))
    assert torch.equal(build_train_transform(replace(params, seed=7))(image=pictures[0])["image"], runs[0][0])


def test_seeded_transforms_draw_independently() -> None:
    # albumentations 2 seeds each transform alike: two p=0.5 flips would then always fire together.
    compose = SeededCompose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)], seed=1)
    picture = image((8, 8))
    outcomes = set()
    for _ in range(64):
        out = compose(image=picture)["image"]
        outcomes.add((np.array_equal(out, picture[:, ::-1]), np.array_equal(out, picture[::-1])))
    assert len(outcomes) >= 3


class _Same(Dataset):
    """One picture four times; the pipeline is built here (pickled into the workers) or lazily in each worker."""

    def __init__(self, params: TrainParams, lazy: bool) -> None:
        self.params = params
        self.transform = None if lazy else build_train_transform(params)
        self.picture = image((85, 64))

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        if self.transform is None:
            self.transform = build_train_transform(self.params)
        return self.transform(image=self.picture)["image"]


@pytest.mark.parametrize("lazy", [False, True])
def test_dataloader_workers_draw_different_augmentations(lazy: bool) -> None:
    dataset = _Same(TrainParams(image_size=SIZE, crop_scale_min=0.3, gauss_noise=1.0), lazy)

    def load(seed: int) -> list[torch.Tensor]:
        loader = DataLoader(dataset, batch_size=1, num_workers=2, generator=torch.Generator().manual_seed(seed))
        return [batch[0] for batch in loader]

    first = load(0)
    # Samples 0 and 1 are each the first call in its own worker: inherited or rebuilt state would make them equal.
    assert not torch.equal(first[0], first[1])
    assert all(torch.equal(a, b) for a, b in zip(first, load(0), strict=True))
    assert not torch.equal(first[0], load(1)[0])


def test_bad_settings_are_user_errors() -> None:
    with pytest.raises(AutomlError, match="unknown crop"):
        build_train_transform(TrainParams(crop="zoom"))
    with pytest.raises(AutomlError):
        build_train_transform(TrainParams(hflip=1.5))
