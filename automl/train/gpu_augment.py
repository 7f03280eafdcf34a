"""Images on the training device (`augment_device: gpu`, the default on CUDA): a worker uploads its image set once,
and every fold and trial draws batches from it by index, augmented and normalised on the device. A CPU cannot feed
a fast GPU: albumentations costs about a millisecond per image per core.

Every image of a batch draws its own crop box, flip, affine warp, jitter factors, noise and holes, as albumentations
does per image (torchvision's v2 transforms draw one set of parameters for a whole batch tensor): crops and
resizing are one `roi_align` call over the batch's boxes, the affine warp one `grid_sample`, the rest tensor
arithmetic, all with the parameters of the albumentations pipeline (augment.py). Mixing (mixup, cutmix) is the same
code on both paths (mixing.py). Validation crops the same eval view as the CPU transform, in batches of one shape.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor
from torchvision.ops import roi_align

from automl.errors import AutomlError
from automl.train.augment import (
    AFFINE_SCALE,
    AFFINE_SHIFT,
    CENTER_SHIFT,
    CROP_RATIO,
    HOLE_SIDE,
    HOLES,
    NOISE_STD,
    eval_resize,
)
from automl.train.params import TrainParams
from automl.train.samplers import EpochOrder

#: The augmentations the batched path has; the others need albumentations (augment_device cpu).
GPU_AUGMENTATIONS = ("hflip", "affine", "color_jitter", "gauss_noise", "cutout")
CPU_ONLY_AUGMENTATIONS = ("clahe", "perspective")
#: Images copied to the device per chunk when an image set is uploaded.
UPLOAD_CHUNK = 512


def cpu_only_augmentations(params: TrainParams) -> list[str]:
    """The augmentations `params` switches on that only albumentations has."""
    return [name for name in CPU_ONLY_AUGMENTATIONS if getattr(params, name) > 0]


def resolve_augment_device(params: TrainParams, device: torch.device) -> str:
    """Where a fold's training batches are augmented: `gpu` (batched on the training device) or `cpu`
    (albumentations). `auto` takes the batched path on CUDA when it has every augmentation the trial draws, and
    albumentations on a CPU, where it is several times faster than batched tensor code."""
    missing = cpu_only_augmentations(params)
    if params.augment_device == "gpu":
        _refuse(missing)
        return "gpu"
    if params.augment_device == "auto" and device.type == "cuda" and not missing:
        return "gpu"
    return "cpu"


def _refuse(missing: list[str]) -> None:
    if missing:
        raise AutomlError(
            f"augment_device gpu has crops, {', '.join(GPU_AUGMENTATIONS)} and mixing, not {', '.join(missing)}; "
            f"set {' and '.join(f'{name}: 0' for name in missing)}, or augment_device: auto (or cpu)"
        )


class DeviceImages:
    """A whole image set as uint8 on the device, padded to the largest height and width (each keeps its size)."""

    def __init__(self, arrays: Sequence[np.ndarray], device: torch.device):
        heights, widths = [a.shape[0] for a in arrays], [a.shape[1] for a in arrays]
        self.sizes = torch.tensor(list(zip(heights, widths, strict=True)), dtype=torch.float32, device=device)
        self.pixels = torch.zeros(
            (len(arrays), max(heights, default=1), max(widths, default=1), 3), dtype=torch.uint8, device=device
        )
        same = len(set(heights)) <= 1 and len(set(widths)) <= 1
        for start in range(0, len(arrays), UPLOAD_CHUNK):
            chunk = arrays[start : start + UPLOAD_CHUNK]
            if same:
                self.pixels[start : start + len(chunk)] = torch.from_numpy(np.stack(chunk)).to(device)
            else:
                for offset, array in enumerate(chunk):
                    self.pixels[start + offset, : array.shape[0], : array.shape[1]] = torch.from_numpy(array.copy())

    @property
    def device(self) -> torch.device:
        return self.pixels.device

    @property
    def nbytes(self) -> int:
        return self.pixels.numel()

    def __len__(self) -> int:
        return len(self.pixels)

    def eval_batches(
        self, rows: np.ndarray, params: TrainParams, batch_size: int, zoom: float = 1.0
    ) -> Iterator[tuple[Tensor, int]]:
        """The eval view of `rows` (as build_eval_transform crops it, with `zoom`), normalised, in batches of
        `batch_size` images: the last one padded by repeating its last image, so that every batch has one shape
        (cuDNN tunes once). Yields (images, how many of them are real)."""
        index = torch.as_tensor(rows, dtype=torch.long, device=self.device)
        normalise = Normalise(params, self.device)
        for start in range(0, len(index), batch_size):
            batch = index[start : start + batch_size]
            count = len(batch)
            if count < batch_size:
                batch = torch.cat([batch, batch[-1:].expand(batch_size - count)])
            yield normalise(self.crop(batch, eval_boxes(self.sizes[batch], params, zoom), params.image_size)), count

    def crop(self, index: Tensor, boxes: Tensor, size: int) -> Tensor:
        """The images `index`, each cut to its box (x0, y0, x1, y1, in its pixels) and resized to size x size, in
        [0, 1] (N, 3, size, size)."""
        pixels = self.pixels[index].permute(0, 3, 1, 2).float()
        rois = torch.cat([torch.arange(len(index), device=pixels.device, dtype=torch.float32)[:, None], boxes], 1)
        # Adaptive sampling averages several points per output pixel when shrinking, like an area resize; a box as
        # large as the output samples each pixel's centre exactly.
        x = roi_align(pixels, rois, (size, size), sampling_ratio=0, aligned=True) / 255.0
        return x.clamp(0.0, 1.0)


class Normalise:
    """(x - mean) / std with the parameters' normalisation (ImageNet's by default)."""

    def __init__(self, params: TrainParams, device: torch.device):
        mean = params.mean if params.mean is not None else IMAGENET_DEFAULT_MEAN
        std = params.std if params.std is not None else IMAGENET_DEFAULT_STD
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1)

    def __call__(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class GpuBatches:
    """One epoch of augmented, normalised training batches (images, targets) of a fold's `rows` of the set.

    Batches follow `order` (the fold's sampler over positions in `rows`, batched as the CPU loader batches); each
    epoch's order is drawn on the host and sent to the device once. The augmentations draw from one generator on the
    device, seeded by the trial.
    """

    def __init__(
        self, images: DeviceImages, rows: np.ndarray, targets: np.ndarray, params: TrainParams, order: EpochOrder,
        seed: int,
    ):  # fmt: skip
        _refuse(cpu_only_augmentations(params))
        device = images.device
        self.images, self.params, self.order = images, params, order
        self.rows = torch.as_tensor(rows, dtype=torch.long, device=device)
        self.targets = torch.as_tensor(targets).to(device)
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.normalise = Normalise(params, device)

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        positions = torch.from_numpy(self.order.draw()).to(self.images.device, non_blocking=True)
        size = self.order.batch_size
        for step in range(len(self)):
            batch = positions[step * size : (step + 1) * size]
            yield self.augment(self.rows[batch]), self.targets[batch]

    def augment(self, index: Tensor) -> Tensor:
        """The images `index` of the set: cropped, flipped, warped, jittered, noised, holed, normalised."""
        p = self.params
        x = self.images.crop(index, crop_boxes(self.images.sizes[index], p, self._uniform), p.image_size)
        if p.hflip > 0:
            flip = self._uniform(len(x)) < p.hflip
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if p.affine > 0:
            x = affine(x, p.affine, p.rotate_limit, self._uniform)
        if p.color_jitter > 0:
            x = color_jitter(x, p.color_jitter, self._uniform)
        if p.gauss_noise > 0:
            x = gauss_noise(x, p.gauss_noise, self._uniform, self.generator)
        if p.cutout > 0:
            x = cutout(x, p.cutout, self._uniform)
        return self.normalise(x)

    def _uniform(self, *shape: int) -> Tensor:
        return torch.rand(shape, generator=self.generator, device=self.generator.device)


def _resized(widths: Tensor, heights: Tensor, resize_to: float) -> tuple[Tensor, Tensor]:
    """`SmallestMaxSize(resize_to)`'s output pixels per image pixel, across and down: each side is rounded to whole
    pixels, so the two differ slightly."""
    scale = resize_to / torch.minimum(heights, widths)
    return torch.round(widths * scale) / widths, torch.round(heights * scale) / heights


def _centred(widths: Tensor, heights: Tensor, resize_to: float, side: int) -> Tensor:
    """The box of `SmallestMaxSize(resize_to)` then `CenterCrop(side)`, in the image's own pixels."""
    across, down = _resized(widths, heights, resize_to)
    x0 = torch.floor((torch.round(widths * across) - side) / 2) / across
    y0 = torch.floor((torch.round(heights * down) - side) / 2) / down
    return torch.stack([x0, y0, x0 + side / across, y0 + side / down], 1)


def eval_boxes(sizes: Tensor, p: TrainParams, zoom: float = 1.0) -> Tensor:
    """The box of each image that the eval transform keeps (`zoom` > 1 resizes larger first: TTA's crop view)."""
    return _centred(sizes[:, 1], sizes[:, 0], eval_resize(p, zoom), p.image_size)


def crop_boxes(sizes: Tensor, p: TrainParams, uniform) -> Tensor:
    """Each image's crop box (x0, y0, x1, y1) in its pixels, drawn as the albumentations crop of `p.crop` draws it."""
    heights, widths = sizes[:, 0], sizes[:, 1]
    if p.crop == "random_resized":
        return _random_resized_boxes(heights, widths, p.crop_scale_min, uniform)
    if p.crop == "center_weighted":
        # Shorter side resized to size + 2 margins, the centred square of that, then a random square of `size`.
        margin = max(1, round(p.image_size * CENTER_SHIFT))
        outer = _centred(widths, heights, p.image_size + 2 * margin, p.image_size + 2 * margin)
        across, down = _resized(widths, heights, p.image_size + 2 * margin)
        shift = torch.floor(uniform(len(sizes), 2) * (2 * margin + 1))
        x0, y0 = outer[:, 0] + shift[:, 0] / across, outer[:, 1] + shift[:, 1] / down
        return torch.stack([x0, y0, x0 + p.image_size / across, y0 + p.image_size / down], 1)
    if p.crop == "none":
        return _centred(widths, heights, p.image_size, p.image_size)
    raise AutomlError(f"unknown crop {p.crop!r}")


def _random_resized_boxes(heights: Tensor, widths: Tensor, scale_min: float, uniform, tries: int = 10) -> Tensor:
    """RandomResizedCrop's draw for every image at once: up to `tries` (area, ratio) draws, the first that fits;
    else the centred crop of the whole image clamped to the ratio range."""
    n = len(heights)
    area = heights * widths
    log_low, log_high = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    target = area[:, None] * (scale_min + (1.0 - scale_min) * uniform(n, tries))
    ratio = torch.exp(log_low + (log_high - log_low) * uniform(n, tries))
    w = torch.round(torch.sqrt(target * ratio))
    h = torch.round(torch.sqrt(target / ratio))
    fits = (w > 0) & (h > 0) & (w <= widths[:, None]) & (h <= heights[:, None])
    first = torch.argmax(fits.int(), dim=1)  # the first draw that fits (0 when none does)
    w, h = w.gather(1, first[:, None])[:, 0], h.gather(1, first[:, None])[:, 0]
    found = fits.any(1)
    # Fallback: the whole image, cut to the nearest allowed ratio.
    in_ratio = widths / heights
    fallback_w = torch.where(in_ratio > CROP_RATIO[1], torch.round(heights * CROP_RATIO[1]), widths)
    fallback_h = torch.where(in_ratio < CROP_RATIO[0], torch.round(widths / CROP_RATIO[0]), heights)
    w, h = torch.where(found, w, fallback_w), torch.where(found, h, fallback_h)
    offsets = uniform(n, 2)
    x0 = torch.where(found, torch.floor(offsets[:, 0] * (widths - w + 1)), torch.floor((widths - w) / 2))
    y0 = torch.where(found, torch.floor(offsets[:, 1] * (heights - h + 1)), torch.floor((heights - h) / 2))
    return torch.stack([x0, y0, x0 + w, y0 + h], 1)


def affine(x: Tensor, probability: float, rotate_limit: float, uniform) -> Tensor:
    """albumentations' Affine as augment.py sets it, per image with `probability`: a rotation within
    +-`rotate_limit` degrees, a scale within AFFINE_SCALE and a shift within AFFINE_SHIFT of each side, about the
    centre, borders reflected. One `grid_sample` for the batch; an image left alone gets the identity."""
    n = len(x)
    active = (uniform(n) < probability).to(x.dtype)
    angle = torch.deg2rad(rotate_limit * (2.0 * uniform(n) - 1.0)) * active
    scale = 1.0 + (AFFINE_SCALE[0] + (AFFINE_SCALE[1] - AFFINE_SCALE[0]) * uniform(n) - 1.0) * active
    shift = AFFINE_SHIFT * (2.0 * uniform(n, 2) - 1.0) * 2.0 * active[:, None]  # in [-1, 1] grid units
    # The grid maps each output pixel to where it comes from: the inverse of rotate-and-scale, then the shift undone.
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    inverse = torch.stack([torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)], 1)  # (n, 2, 2)
    offset = -(inverse @ shift[:, :, None])
    grid = F.affine_grid(torch.cat([inverse, offset], 2), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def gauss_noise(x: Tensor, probability: float, uniform, generator: torch.Generator) -> Tensor:
    """GaussNoise as augment.py sets it: zero-mean noise of a standard deviation within NOISE_STD (of the full
    range), per pixel and channel, on an image with `probability`."""
    n = len(x)
    std = (NOISE_STD[0] + (NOISE_STD[1] - NOISE_STD[0]) * uniform(n)) * (uniform(n) < probability)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x + noise * std.view(n, 1, 1, 1)).clamp(0.0, 1.0)


def color_jitter(x: Tensor, strength: float, uniform) -> Tensor:
    """ColorJitter(brightness, contrast, saturation = strength, hue = strength / 5) with factors per image, on
    images in [0, 1]; brightness, contrast and saturation as torchvision defines them, hue as a rotation of the
    chroma plane (YIQ), which matches an HSV hue shift closely for small shifts."""
    n = len(x)
    factors = 1.0 + strength * (2.0 * uniform(n, 3) - 1.0)
    brightness, contrast, saturation = (factors[:, k].view(n, 1, 1, 1) for k in range(3))
    x = (x * brightness).clamp(0.0, 1.0)
    gray = _gray(x)
    x = ((x - gray.mean(dim=(1, 2, 3), keepdim=True)) * contrast + gray.mean(dim=(1, 2, 3), keepdim=True)).clamp(0, 1)
    gray = _gray(x)
    x = ((x - gray) * saturation + gray).clamp(0.0, 1.0)
    angle = (strength / 5) * (2.0 * uniform(n) - 1.0) * 2 * math.pi
    return _rotate_hue(x, angle).clamp(0.0, 1.0)


_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _gray(x: Tensor) -> Tensor:
    weights = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * weights).sum(1, keepdim=True)


def _rotate_hue(x: Tensor, angle: Tensor) -> Tensor:
    to_yiq = _RGB_TO_YIQ.to(x.device, x.dtype)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.zeros((len(x), 3, 3), device=x.device, dtype=x.dtype)
    rotation[:, 0, 0] = 1.0
    rotation[:, 1, 1], rotation[:, 1, 2], rotation[:, 2, 1], rotation[:, 2, 2] = cos, -sin, sin, cos
    matrix = torch.linalg.inv(to_yiq) @ rotation @ to_yiq  # (n, 3, 3): RGB -> YIQ, rotate I and Q, -> RGB
    return torch.einsum("nij,njhw->nihw", matrix, x)


def cutout(x: Tensor, probability: float, uniform) -> Tensor:
    """CoarseDropout with 1-3 black holes of 1/8 to 1/4 of each side, per image with `probability`."""
    n, _, height, width = x.shape
    holes = HOLES[1]
    count = HOLES[0] + torch.floor(uniform(n) * (HOLES[1] - HOLES[0] + 1))
    active = (torch.arange(holes, device=x.device)[None, :] < count[:, None]) & (uniform(n)[:, None] < probability)
    low, high = HOLE_SIDE
    hole_h = torch.floor(height * (low + (high - low) * uniform(n, holes)))
    hole_w = torch.floor(width * (low + (high - low) * uniform(n, holes)))
    y0 = torch.floor(uniform(n, holes) * (height - hole_h + 1))
    x0 = torch.floor(uniform(n, holes) * (width - hole_w + 1))
    ys = torch.arange(height, device=x.device, dtype=x.dtype).view(1, 1, height, 1)
    xs = torch.arange(width, device=x.device, dtype=x.dtype).view(1, 1, 1, width)
    inside = (
        (ys >= y0[..., None, None])
        & (ys < (y0 + hole_h)[..., None, None])
        & (xs >= x0[..., None, None])
        & (xs < (x0 + hole_w)[..., None, None])
        & active[..., None, None]
    )  # (n, holes, height, width)
    return x.masked_fill(inside.any(1, keepdim=True), 0.0)
