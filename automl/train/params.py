"""The concrete parameters of one trial: everything that decides how a fold is trained.

The search turns a search-space file into one `TrainParams` per trial; the training code reads only this.
Names match the keys of search-space files.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from automl.data.face_crop import FaceCrop
from automl.errors import AutomlError


@dataclass(frozen=True)
class TrainParams:
    # Backbone (any timm.list_models() name) and input.
    backbone: str = "resnet18"
    pretrained: bool = False
    weights_file: str | None = None  # a local checkpoint; else the timm / Hugging Face cache
    image_size: int = 64
    mean: tuple[float, float, float] | None = None  # None: ImageNet's, or the pretrained backbone's own
    std: tuple[float, float, float] | None = None
    drop_rate: float = 0.0

    # Optimisation.
    optimizer: str = "adamw"  # sgd | adam | adamw | adamp
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9  # sgd only
    nesterov: bool = True  # sgd only
    schedule: str = "cosine"  # cosine | step | onecycle | constant
    warmup_epochs: float = 0.0  # cosine only: linear warm-up from 0
    step_epochs: int = 5  # step only: decay every so many epochs
    step_gamma: float = 0.1  # step only
    epochs: int = 10
    batch_size: int = 64
    patience: int = 5  # early stopping: epochs without a better validation macro F1
    grad_clip: float | None = 1.0  # max gradient norm; None to disable
    ema: bool = False
    ema_decay: float = 0.998

    # Loss.
    loss: str = "ce"  # ce | focal | f1 | lade | ldam | "a+b" for a weighted sum
    loss_weight: float = 0.5  # "a+b": weight of a (b gets 1 - weight)
    label_smoothing: float = 0.0  # ce
    focal_gamma: float = 2.0  # focal
    focal_alpha: str = "none"  # focal: none | balanced (inverse class frequency)
    ldam_max_margin: float = 0.5  # ldam
    ldam_scale: float = 5.0  # ldam: the paper's 30 assumes a cosine classifier; a plain head needs less
    lade_alpha: float = 0.1  # lade: weight of the LADER regulariser

    # Face crop, before the image cache and the same at train and test time (automl/data/face_crop.py). Not
    # `crop`, which is the augmentation's crop below.
    face_crop: str = "none"  # none | center (the prior box) | face (a detected face, else the prior box)
    face_crop_margin: float = 0.2  # share of the box's width / height added on each side
    face_crop_box: tuple[float, float, float, float] | None = None  # the prior: shares of the image; None: learned

    # Augmentation (albumentations) and batch mixing.
    crop: str = "random_resized"  # random_resized | center_weighted | none
    crop_scale_min: float = 0.6  # random_resized: smallest area share kept
    hflip: float = 0.5  # probability
    color_jitter: float = 0.0  # strength 0..0.5 (brightness, contrast, saturation; hue a fifth)
    clahe: float = 0.0  # probability
    cutout: float = 0.0  # probability of coarse dropout
    affine: float = 0.0  # probability of a small rotation / shift / scale
    rotate_limit: float = 10.0  # degrees, for affine
    perspective: float = 0.0  # probability
    gauss_noise: float = 0.0  # probability
    mix: str = "none"  # none | mixup | cutmix | vcutmix (vertical half-and-half of two faces)
    mix_alpha: float = 1.0  # Beta(alpha, alpha) for the mixing ratio (not vcutmix)
    mix_prob: float = 0.5  # share of batches mixed
    # Where training batches are augmented: cpu (albumentations in loader processes, every augmentation) | gpu
    # (the fold's images moved to the training device once; crops, hflip, color_jitter, cutout and mixing batched
    # there: for small images, where the CPU cannot keep a fast GPU busy). Validation is the same for both.
    augment_device: str = "cpu"

    # Sampling.
    sampler: str = "none"  # none | weighted | oversample
    sampler_power: float = 1.0  # weighted: weight = (1 / class count) ** power
    oversample_classes: tuple[int, ...] = ()  # oversample: class codes to repeat
    oversample_factor: float = 2.0  # oversample: how many times those classes are drawn

    # Age task: training labels only; validation always uses the true labels.
    age_train_threshold: int | None = None  # e.g. 58: train ages >= 58 as the oldest group
    age_drop_borderline: tuple[int, int] | None = None  # e.g. (57, 59): drop these ages from training

    # Head: what sits on the backbone's features (automl/train/heads.py); drop_rate is the dropout on the features.
    head_hidden: int = 0  # 0: the output layer alone; else a Linear + BatchNorm1d + ReLU hidden layer this wide
    head_dropout: float = 0.0  # dropout after the hidden layer (head_hidden > 0 only)
    head_init: str = "default"  # the head's linear layers: default (PyTorch's) | xavier | normal | zeros (output layer)

    # Age heads (task age, and all with multitask): every head is scored on the true groups' macro F1.
    age_head: str = "groups"  # groups | bins | regression | ordinal
    age_bin_width: int = 5  # bins: years per fine bin, nested inside the group edges
    age_regression_loss: str = "l1"  # regression: l1 | smooth_l1
    age_boundary_offset: float = 0.0  # regression: years added to the group edges when a predicted age becomes a group

    # Task all: one backbone with mask, gender and age heads, their probabilities multiplied into the 18 classes.
    multitask: bool = False
    mask_loss_weight: float = 1.0  # multitask: the loss is the weighted sum of the three heads' losses
    gender_loss_weight: float = 1.0
    age_loss_weight: float = 1.0

    # Resolved at training time from the task and the data (like mean and std), so a saved model rebuilds its head.
    age_group_edges: tuple[int, ...] = ()  # the task's age group edges, for the age heads
    age_bin_edges: tuple[int, ...] = ()  # bins: the fine bin edges

    seed: int = 0

    @property
    def image_crop(self) -> FaceCrop:
        """The face crop of the images this trial trains and predicts on."""
        return FaceCrop(self.face_crop, self.face_crop_margin, self.face_crop_box)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainParams:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise AutomlError(f"unknown training parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        tuples = {k: tuple(v) for k, v in values.items() if isinstance(v, list)}
        return cls(**{**values, **tuples})
