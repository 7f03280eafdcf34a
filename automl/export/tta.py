"""Test-time augmentation: each model also sees a mirrored and a slightly zoomed view of every image.

`plain` is the model's own eval transform. `flip` mirrors it left to right; `crop` looks at a centred crop of a
slightly larger resize (the middle ~89% of the face). A combination of views averages their probabilities; the
export keeps one only when it raises out-of-fold macro F1.
"""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2

from automl.train.augment import build_eval_transform
from automl.train.heads import HeadedModel
from automl.train.loader import CachedImages, make_loader
from automl.train.params import TrainParams

PLAIN, FLIP, CROP = "plain", "flip", "crop"
VIEWS = (PLAIN, FLIP, CROP)
#: The view combinations tried, plain alone first: it stays unless another raises out-of-fold F1.
COMBINATIONS: tuple[tuple[str, ...], ...] = ((PLAIN,), (PLAIN, FLIP), (PLAIN, CROP), (PLAIN, FLIP, CROP))
#: The crop view resizes to this much more than the eval transform, then takes the same centred square.
CROP_ZOOM = 1.125
BATCH_SIZE = 64


def view_transform(params: TrainParams, view: str) -> A.Compose:
    """The transform of one view (flip is applied on the batch, after the plain transform)."""
    if view != CROP:
        return build_eval_transform(params)
    size = params.image_size
    plain = build_eval_transform(params)
    resize_to = plain.transforms[0].max_size
    resize_to = resize_to[0] if isinstance(resize_to, Sequence) else resize_to
    return A.Compose(
        [
            A.SmallestMaxSize(max_size=round(resize_to * CROP_ZOOM), area_for_downscale="image"),
            A.CenterCrop(size, size),
            A.Normalize(mean=tuple(params.mean), std=tuple(params.std), max_pixel_value=255.0),
            ToTensorV2(),
        ]
    )


@torch.no_grad()
def predict_views(
    model: HeadedModel, arrays: Sequence[np.ndarray], params: TrainParams, views: Sequence[str], device: torch.device
) -> dict[str, np.ndarray]:
    """Class probabilities (len(arrays), classes) of `model` (its head's, whatever the head) for each view."""
    model = model.to(device).eval()
    out: dict[str, np.ndarray] = {}
    for transform_view in dict.fromkeys(CROP if v == CROP else PLAIN for v in views):
        loader = make_loader(
            CachedImages(list(arrays), np.zeros(len(arrays), dtype=np.int64), view_transform(params, transform_view)),
            BATCH_SIZE, train=False, device=device, seed=0, num_workers=0,
        )  # fmt: skip
        plain, flipped = [], []
        for x, _ in loader:
            x = x.to(device)
            plain.append(model.probs(x).cpu().numpy())
            if transform_view == PLAIN and FLIP in views:
                flipped.append(model.probs(torch.flip(x, dims=[3])).cpu().numpy())
        out[transform_view] = np.concatenate(plain) if plain else np.zeros((0, 0), dtype=np.float32)
        if flipped:
            out[FLIP] = np.concatenate(flipped)
    return {view: out[view] for view in views}


def combine_views(probs: dict[str, np.ndarray], views: Sequence[str]) -> np.ndarray:
    """The mean of the chosen views' probabilities."""
    return np.mean([probs[v] for v in views], axis=0)
