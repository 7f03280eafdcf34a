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
from torch.utils.data import Dataset

from automl.train.augment import build_eval_transform
from automl.train.device import amp_dtype, memory_format
from automl.train.heads import HeadedModel
from automl.train.loader import make_loader
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


class ViewImages(Dataset):
    """Each image under every transform view at once (views, C, H, W): one loader pass feeds all the views."""

    def __init__(self, arrays: Sequence[np.ndarray], transforms: Sequence[A.Compose]):
        self.arrays, self.transforms = arrays, transforms

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.stack([transform(image=self.arrays[index])["image"] for transform in self.transforms])


@torch.no_grad()
def predict_views(
    model: HeadedModel,
    arrays: Sequence[np.ndarray],
    params: TrainParams,
    views: Sequence[str],
    device: torch.device,
    loader_workers: int | None = None,
) -> dict[str, np.ndarray]:
    """Class probabilities (len(arrays), classes) of `model` (its head's, whatever the head) for each view.

    As in training: loader processes (`loader_workers`; default: on a GPU, every core but one), pinned memory,
    channels-last and mixed precision on CUDA. Every view of a batch goes through the model in one forward pass,
    and the probabilities are read back from the device once, at the end.
    """
    model = model.to(device).eval()
    layout = memory_format(device)
    model = model.to(memory_format=layout)
    dtype = amp_dtype(device)
    transform_views = list(dict.fromkeys(CROP if v == CROP else PLAIN for v in views))
    dataset = ViewImages(list(arrays), [view_transform(params, view) for view in transform_views])
    loader = make_loader(dataset, BATCH_SIZE, train=False, device=device, seed=0, num_workers=loader_workers)
    flip = FLIP in views
    plain = transform_views.index(PLAIN) if flip else 0
    names = transform_views + ([FLIP] if flip else [])
    batches = []
    for x in loader:
        x = x.to(device, non_blocking=True)  # (batch, transform views, C, H, W)
        count = x.shape[0]
        x = x.transpose(0, 1).flatten(0, 1)  # view-major: the rows of view v are v * count ... (v + 1) * count - 1
        if flip:
            x = torch.cat([x, torch.flip(x[plain * count : (plain + 1) * count], dims=[3])])  # plain, mirrored
        x = x.contiguous(memory_format=layout)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            outputs = model(x)
        batches.append(model.head.probs(outputs.float()).unflatten(0, (len(names), count)))
    if not batches:
        return {view: np.zeros((0, 0), dtype=np.float32) for view in views}
    probs = torch.cat(batches, dim=1).cpu().numpy()  # (views, images, classes)
    out = dict(zip(names, probs, strict=True))
    return {view: out[view] for view in views}


def combine_views(probs: dict[str, np.ndarray], views: Sequence[str]) -> np.ndarray:
    """The mean of the chosen views' probabilities."""
    return np.mean([probs[v] for v in views], axis=0)
