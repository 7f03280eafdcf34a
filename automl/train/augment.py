"""Image transforms for training and evaluation, built with albumentations from a trial's `TrainParams`.

Inputs are cached RGB uint8 arrays (H, W, 3) of any aspect ratio whose shorter side is about `image_size`;
outputs are normalised float32 tensors (3, image_size, image_size).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
from albumentations.pytorch import ToTensorV2
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.utils.data import get_worker_info

from automl.errors import AutomlError
from automl.registry import Registry
from automl.train.params import TrainParams

#: Centre-weighted crops move at most this share of the side away from the centre.
CENTER_SHIFT = 0.0625
#: RandomResizedCrop's aspect ratios and CoarseDropout's holes (count, side as a share of the image); the GPU path
#: (gpu_augment.py) draws the same.
CROP_RATIO = (3 / 4, 4 / 3)
HOLES, HOLE_SIDE = (1, 3), (0.125, 0.25)
#: Affine's scale range and largest shift (a share of each side); GaussNoise's standard deviation range as a share of
#: the full range (the library default, 0.2-0.44, would bury a 64-pixel face).
AFFINE_SCALE, AFFINE_SHIFT = (0.9, 1.1), 0.0625
NOISE_STD = (0.02, 0.08)


class SeededCompose(A.Compose):
    """A Compose whose transforms share one random stream, reseeded once in each DataLoader worker.

    albumentations 2 gives every transform its own generator and seeds them all alike, so with a seed their
    draws coincide (a p=0.5 flip and a p=0.5 CLAHE fire together); and a forked worker inherits the parent's
    state, so without reseeding every worker repeats the same augmentations.
    """

    def __init__(self, transforms: Sequence[A.BasicTransform], seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(list(transforms), **kwargs)
        # Owned by this process outside any loader worker: the first call in a worker reseeds from its seed.
        self._owner: tuple[int, int | None] = (os.getpid(), None)
        self.set_random_state(np.random.default_rng(seed), random.Random(seed))

    def reseed(self, seed: int | None) -> None:
        """Restart the shared random stream from `seed` (None: fresh entropy), here and now: calls in this process
        (or loader worker) go on from it."""
        self._owner = _owner()
        self.set_random_state(np.random.default_rng(seed), random.Random(seed))

    def __call__(self, *args: Any, force_apply: bool = False, **data: Any) -> dict[str, Any]:
        owner = _owner()
        if owner != self._owner:
            # First call in a new process, or in a loader worker (even one that built this pipeline itself).
            # torch's worker seed differs by worker and by epoch and follows the loader's generator.
            self.reseed(owner[1])
        return super().__call__(*args, force_apply=force_apply, **data)


def _owner() -> tuple[int, int | None]:
    """This process, and the seed of the loader worker it is (None outside one)."""
    info = get_worker_info()
    return os.getpid(), None if info is None else info.seed


def _center_margin(size: int) -> int:
    return max(1, round(size * CENTER_SHIFT))


def _shorter_side_and_center(resize_to: int, crop: int) -> list[A.BasicTransform]:
    """Scale the shorter side to `resize_to`, then take the centred `crop` square."""
    return [
        A.SmallestMaxSize(max_size=resize_to, area_for_downscale="image"),
        A.CenterCrop(crop, crop),
    ]


#: Crop name -> `params -> the albumentations steps that crop a training image to image_size`.
CROPS: Registry[Callable[[TrainParams], list[A.BasicTransform]]] = Registry("crop")


@CROPS.register("random_resized")
def _random_resized(p: TrainParams) -> list[A.BasicTransform]:
    size = p.image_size
    return [
        A.RandomResizedCrop(
            size=(size, size), scale=(p.crop_scale_min, 1.0), ratio=CROP_RATIO, area_for_downscale="image"
        )
    ]


@CROPS.register("center_weighted")
def _center_weighted(p: TrainParams) -> list[A.BasicTransform]:
    size = p.image_size
    outer = size + 2 * _center_margin(size)
    return [*_shorter_side_and_center(outer, outer), A.RandomCrop(size, size)]


@CROPS.register("none")
def _no_crop(p: TrainParams) -> list[A.BasicTransform]:
    return _shorter_side_and_center(p.image_size, p.image_size)


# Applied in this order, each only when its probability (color_jitter: strength) is above 0: geometry first,
# then colour and noise, and holes last so they stay clean rectangles.
_AUGMENTATIONS: dict[str, Callable[[TrainParams], A.BasicTransform]] = {
    "hflip": lambda p: A.HorizontalFlip(p=p.hflip),
    "affine": lambda p: A.Affine(
        scale=AFFINE_SCALE,
        translate_percent=(-AFFINE_SHIFT, AFFINE_SHIFT),
        rotate=(-p.rotate_limit, p.rotate_limit),
        border_mode=cv2.BORDER_REFLECT_101,
        p=p.affine,
    ),
    "perspective": lambda p: A.Perspective(scale=(0.02, 0.06), border_mode=cv2.BORDER_REFLECT_101, p=p.perspective),
    "color_jitter": lambda p: A.ColorJitter(
        brightness=p.color_jitter, contrast=p.color_jitter, saturation=p.color_jitter, hue=p.color_jitter / 5, p=1.0
    ),
    # Small tiles: the default 8x8 grid gives 8-pixel tiles at 64 px, which mostly amplifies noise.
    "clahe": lambda p: A.CLAHE(clip_limit=(1.0, 3.0), tile_grid_size=(4, 4), p=p.clahe),
    "gauss_noise": lambda p: A.GaussNoise(std_range=NOISE_STD, p=p.gauss_noise),
    "cutout": lambda p: A.CoarseDropout(
        num_holes_range=HOLES, hole_height_range=HOLE_SIDE, hole_width_range=HOLE_SIDE, fill=0, p=p.cutout
    ),
}
#: The optional augmentations: `TrainParams` fields holding a probability (color_jitter: a strength), 0 = off.
AUGMENTATIONS: tuple[str, ...] = tuple(_AUGMENTATIONS)


def _normalize(p: TrainParams) -> list[A.BasicTransform]:
    mean = p.mean if p.mean is not None else IMAGENET_DEFAULT_MEAN
    std = p.std if p.std is not None else IMAGENET_DEFAULT_STD
    return [A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0), ToTensorV2()]


def _build(make: Callable[[], list[A.BasicTransform]]) -> list[A.BasicTransform]:
    try:
        return make()
    except ValueError as error:  # albumentations' pydantic validation of out-of-range settings
        raise AutomlError(f"bad augmentation setting: {error}") from error


def build_train_transform(params: TrainParams, seed: int | None = None) -> A.Compose:
    """The training pipeline: crop, the augmentations switched on in `params`, normalise, to tensor.

    `seed` (default `params.seed`) makes the sequence of augmentations reproducible in one process;
    DataLoader workers reseed themselves from torch's per-worker seed.
    """

    def make() -> list[A.BasicTransform]:
        steps = CROPS.create(params.crop, params)
        steps += [build(params) for name, build in _AUGMENTATIONS.items() if getattr(params, name) > 0]
        return steps + _normalize(params)

    return SeededCompose(_build(make), seed=params.seed if seed is None else seed)


def eval_resize(params: TrainParams, zoom: float = 1.0) -> int:
    """The shorter side the eval transform resizes to before it takes the centred square of `image_size`: a
    centre-weighted model was trained on a slightly zoomed view, and is evaluated at the same scale. `zoom` > 1
    resizes larger (test-time augmentation's closer view)."""
    size = params.image_size
    return round((size + 2 * _center_margin(size) if params.crop == "center_weighted" else size) * zoom)


def build_eval_transform(params: TrainParams, zoom: float = 1.0) -> A.Compose:
    """The deterministic pipeline: the centred view of the training crop (`zoom`: of a larger resize), normalise,
    to tensor."""
    size = params.image_size
    return A.Compose(_build(lambda: _shorter_side_and_center(eval_resize(params, zoom), size) + _normalize(params)))
