"""Training batches augmented on the training device (`augment_device: gpu`): the fold's cached images are moved
to the device once, and crops, flips, colour jitter and cutout run on whole batches there, with the parameters of
the albumentations pipeline (augment.py). For small images a CPU cannot feed a fast GPU: albumentations costs about
a millisecond per image per core.

Every image of a batch draws its own crop box, flip, jitter factors and holes, as albumentations does per image
(torchvision's v2 transforms draw one set of parameters for a whole batch tensor): crops and resizing are one
`roi_align` call over the batch's boxes, the rest are tensor arithmetic. Mixing (mixup, cutmix) is the same code on
both paths (mixing.py). Validation keeps the CPU eval transform, the one the export predicts with.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor
from torch.utils.data import BatchSampler, RandomSampler, Sampler
from torchvision.ops import roi_align

from automl.errors import AutomlError
from automl.train.augment import CENTER_SHIFT, CROP_RATIO, HOLE_SIDE, HOLES
from automl.train.params import TrainParams

#: The augmentations the batched path has; the others (clahe, affine, perspective, gauss_noise) need `cpu`.
GPU_AUGMENTATIONS = ("hflip", "color_jitter", "cutout")
#: Images copied to the device per chunk when the fold's images are uploaded.
UPLOAD_CHUNK = 512


def check_gpu_augment(params: TrainParams) -> None:
    """Raise an AutomlError for an augmentation the batched path does not have."""
    if params.augment_device != "gpu":
        return
    missing = [name for name in ("clahe", "affine", "perspective", "gauss_noise") if getattr(params, name) > 0]
    if missing:
        raise AutomlError(
            f"augment_device gpu has crops, {', '.join(GPU_AUGMENTATIONS)} and mixing, not {', '.join(missing)}; "
            f"set {' and '.join(f'{name}: 0' for name in missing)}, or augment_device: cpu"
        )


class DeviceImages:
    """Uint8 images on the device, padded to the largest height and width (each keeps its own size)."""

    def __init__(self, arrays: Sequence[np.ndarray], device: torch.device):
        heights, widths = [a.shape[0] for a in arrays], [a.shape[1] for a in arrays]
        self.sizes = torch.tensor(list(zip(heights, widths, strict=True)), dtype=torch.float32, device=device)
        self.pixels = torch.zeros((len(arrays), max(heights), max(widths), 3), dtype=torch.uint8, device=device)
        same = len(set(heights)) == 1 and len(set(widths)) == 1
        for start in range(0, len(arrays), UPLOAD_CHUNK):
            chunk = arrays[start : start + UPLOAD_CHUNK]
            if same:
                self.pixels[start : start + len(chunk)] = torch.from_numpy(np.stack(chunk)).to(device)
            else:
                for offset, array in enumerate(chunk):
                    self.pixels[start + offset, : array.shape[0], : array.shape[1]] = torch.from_numpy(array.copy())

    def __len__(self) -> int:
        return len(self.pixels)


class GpuBatches:
    """One epoch of augmented, normalised training batches (images, targets), all on the device.

    Batches follow `sampler` (the fold's weighted or oversampling sampler; a seeded shuffle without one), with
    drop_last as the CPU loader has it. Randomness comes from one generator on the device, seeded by the trial.
    """

    def __init__(
        self,
        images: DeviceImages,
        targets: np.ndarray,
        params: TrainParams,
        batch_size: int,
        seed: int,
        sampler: Sampler | None = None,
    ):
        check_gpu_augment(params)
        device = images.pixels.device
        self.images, self.params = images, params
        self.targets = torch.as_tensor(targets).to(device)
        shuffle = RandomSampler(range(len(images)), generator=torch.Generator().manual_seed(seed))
        self.batches = BatchSampler(sampler or shuffle, batch_size, drop_last=len(images) > batch_size)
        self.generator = torch.Generator(device=device).manual_seed(seed)
        mean = params.mean if params.mean is not None else IMAGENET_DEFAULT_MEAN
        std = params.std if params.std is not None else IMAGENET_DEFAULT_STD
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for rows in self.batches:
            index = torch.as_tensor(rows, device=self.images.pixels.device)
            yield self.augment(index), self.targets[index]

    def augment(self, index: Tensor) -> Tensor:
        """The batch of images `index`: cropped, flipped, jittered, holed, normalised (N, 3, size, size)."""
        p = self.params
        boxes = crop_boxes(self.images.sizes[index], p, self._uniform)
        pixels = self.images.pixels[index].permute(0, 3, 1, 2).float()
        rois = torch.cat([torch.arange(len(index), device=pixels.device, dtype=torch.float32)[:, None], boxes], 1)
        # Adaptive sampling averages several points per output pixel when shrinking, like an area resize.
        x = roi_align(pixels, rois, (p.image_size, p.image_size), sampling_ratio=0, aligned=True) / 255.0
        x = x.clamp(0.0, 1.0)
        if p.hflip > 0:
            flip = self._uniform(len(x)) < p.hflip
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if p.color_jitter > 0:
            x = color_jitter(x, p.color_jitter, self._uniform)
        if p.cutout > 0:
            x = cutout(x, p.cutout, self._uniform)
        return (x - self.mean) / self.std

    def _uniform(self, *shape: int) -> Tensor:
        return torch.rand(shape, generator=self.generator, device=self.generator.device)


def crop_boxes(sizes: Tensor, p: TrainParams, uniform) -> Tensor:
    """Each image's crop box (x0, y0, x1, y1) in its pixels, drawn as the albumentations crop of `p.crop` draws it."""
    heights, widths = sizes[:, 0], sizes[:, 1]
    short = torch.minimum(heights, widths)
    if p.crop == "random_resized":
        return _random_resized_boxes(heights, widths, p.crop_scale_min, uniform)
    if p.crop == "center_weighted":
        # Shorter side resized to size + 2 margins, the centred square of that, then a random square of `size`.
        margin = max(1, round(p.image_size * CENTER_SHIFT))
        scale = (p.image_size + 2 * margin) / short  # output pixels per image pixel
        shift = torch.floor(uniform(len(sizes), 2) * (2 * margin + 1)) / scale[:, None]
        x0 = (widths - short) / 2 + shift[:, 0]
        y0 = (heights - short) / 2 + shift[:, 1]
        side = p.image_size / scale
        return torch.stack([x0, y0, x0 + side, y0 + side], 1)
    if p.crop == "none":
        x0, y0 = (widths - short) / 2, (heights - short) / 2
        return torch.stack([x0, y0, x0 + short, y0 + short], 1)
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
    x0 = torch.where(found, torch.floor(offsets[:, 0] * (widths - w + 1)), (widths - w) / 2)
    y0 = torch.where(found, torch.floor(offsets[:, 1] * (heights - h + 1)), (heights - h) / 2)
    return torch.stack([x0, y0, x0 + w, y0 + h], 1)


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
