"""The concrete parameters of one trial, and the schema of each: everything that decides how a fold is trained.

The search turns a search-space file into one `TrainParams` per trial; the training code reads only this.
Names match the keys of search-space files. Each field is declared once, with `param`: its default, the numbers
or names it allows and a one-line description. The search-space loader, `--set` and `automl params` read these
rules; the factories (losses, optimizers, ...) rely on them and do not check them again.
"""

from __future__ import annotations

import importlib
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, NamedTuple

from automl.data.face_crop import DEFAULT_PICK, DEFAULT_THRESHOLD, MAX_MARGIN, FaceCrop, check_box
from automl.errors import AutomlError


class Bound(NamedTuple):
    """Allowed numbers: `low` / `high` (None: unbounded), each closed unless marked open."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def contains(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"within {left}{self.low:g}, {self.high:g}{right}"


UNIT = Bound(0, 1)
POSITIVE = Bound(0, low_open=True)
NON_NEGATIVE = Bound(0)
AT_LEAST_ONE = Bound(1)
SHARE = Bound(0, 1, high_open=True)


@dataclass(frozen=True)
class Rule:
    """What a field allows beyond its type. `registry` is the dotted path of the `automl.registry.Registry` whose
    names it takes (`joined`: or two of them joined by it); `allowed` says it in words where the rest cannot
    (`{names}` stands for the names); `check` raises ValueError with the whole message for a bad value."""

    help: str
    bound: Bound | None = None
    choices: tuple[str, ...] = ()
    registry: str | None = None
    joined: str | None = None
    allowed: str | None = None
    check: Callable[[Any], None] | None = None

    def names(self) -> tuple[str, ...]:
        """The allowed names: the fixed choices, or the registry's (imported here so that it is filled)."""
        if self.registry is None:
            return self.choices
        module, _, attribute = self.registry.rpartition(".")
        return getattr(importlib.import_module(module), attribute).names()


def param(default: Any, help: str, **rule: Any) -> Any:
    """A TrainParams field: its default and its `Rule`."""
    return field(default=default, metadata={"rule": Rule(help, **rule)})


def _timm_model(name: str) -> None:
    from automl.train.backbone import check_backbone_name  # backbone.py imports this module

    try:
        check_backbone_name(name)
    except AutomlError as error:
        raise ValueError(f"{error} (any timm.list_models() name)") from None


def _low_age_first(ages: tuple[int, ...]) -> None:
    if ages[0] > ages[1]:
        raise ValueError(f"{ages!r} is not {allowed('age_drop_borderline')} (low age first)")


def _face_box(box: tuple[float, ...]) -> None:
    try:
        check_box(box)
    except AutomlError:
        raise ValueError(f"{box!r} is not {allowed('face_crop_box')}") from None


@dataclass(frozen=True)
class TrainParams:
    # Backbone and input.
    backbone: str = param(
        "resnet18", "any timm.list_models() name", allowed="a timm model name (timm.list_models())", check=_timm_model
    )
    pretrained: bool = param(False, "load pretrained weights (from weights_file or the timm / Hugging Face cache)")
    weights_file: str | None = param(None, "a local checkpoint; else the timm / Hugging Face cache")
    image_size: int = param(64, "input side in pixels (from settings.image_size)", bound=Bound(8))
    mean: tuple[float, float, float] | None = param(None, "normalisation mean; none: ImageNet's, or the backbone's")
    std: tuple[float, float, float] | None = param(None, "normalisation std; none: ImageNet's, or the backbone's",
                                                   bound=POSITIVE)  # fmt: skip
    drop_rate: float = param(0.0, "dropout on the backbone's features", bound=SHARE)

    # Optimisation.
    optimizer: str = param("adamw", "the optimizer (timm's)", registry="automl.train.optim.OPTIMIZERS")
    lr: float = param(1e-3, "peak learning rate", bound=POSITIVE)
    weight_decay: float = param(1e-4, "weight decay (not on biases and norms)", bound=NON_NEGATIVE)
    momentum: float = param(0.9, "sgd only", bound=SHARE)
    nesterov: bool = param(True, "sgd only: Nesterov momentum")
    schedule: str = param("cosine", "learning-rate schedule, per step", registry="automl.train.optim.SCHEDULES")
    warmup_epochs: float = param(0.0, "cosine only: linear warm-up from 0", bound=NON_NEGATIVE)
    step_epochs: int = param(5, "step only: decay every so many epochs", bound=AT_LEAST_ONE)
    step_gamma: float = param(0.1, "step only: the decay factor", bound=Bound(0, 1, low_open=True))
    epochs: int = param(10, "epochs per fold (from settings.max_epochs)", bound=AT_LEAST_ONE)
    batch_size: int = param(64, "images per step", bound=AT_LEAST_ONE)
    patience: int = param(5, "early stopping: epochs without a better validation macro F1", bound=AT_LEAST_ONE)
    grad_clip: float | None = param(1.0, "max gradient norm; none to disable", bound=POSITIVE)
    ema: bool = param(False, "evaluate an exponential moving average of the weights")
    ema_decay: float = param(0.998, "ema only: the average's decay", bound=Bound(0, 1, low_open=True, high_open=True))

    # Loss.
    loss: str = param(
        "ce",
        'the loss; "a+b" is loss_weight * a + (1 - loss_weight) * b',
        registry="automl.train.losses.LOSSES",
        joined="+",
        allowed="one of: {names}, or two joined by '+' (e.g. ce+f1)",
    )
    loss_weight: float = param(0.5, '"a+b": weight of a (b gets 1 - weight)', bound=UNIT)
    label_smoothing: float = param(0.0, "ce: label smoothing", bound=SHARE)
    focal_gamma: float = param(2.0, "focal: the focusing exponent", bound=NON_NEGATIVE)
    focal_alpha: str = param("none", "focal: class weights (balanced: inverse class frequency)",
                             choices=("balanced", "none"))  # fmt: skip
    ldam_max_margin: float = param(0.5, "ldam: the largest class margin", bound=POSITIVE)
    # The paper's 30 assumes a cosine classifier; a plain head needs less.
    ldam_scale: float = param(5.0, "ldam: the logits' scale", bound=POSITIVE)
    lade_alpha: float = param(0.1, "lade: weight of the LADER regulariser", bound=NON_NEGATIVE)

    # Face crop, before the image cache and the same at train and test time (automl/data/face_crop.py). Not
    # `crop`, which is the augmentation's crop below.
    face_crop: str = param("none", "center: the prior box; face: the face YuNet finds, else the prior box; aligned: "
                           "that face turned eyes-level and scaled by its eye distance; haar: OpenCV's Haar cascade",
                           registry="automl.data.face_crop.FACE_CROPS")  # fmt: skip
    face_crop_margin: float = param(0.2, "share of the box's width / height added on each side",
                                    bound=Bound(0, MAX_MARGIN))  # fmt: skip
    face_crop_box: tuple[float, float, float, float] | None = param(
        None,
        "the prior box as shares of the image; none: learned from the training images",
        bound=UNIT,
        allowed="the prior box [x0, y0, x1, y1] as shares of the image (x0 < x1, y0 < y1), or none to learn it",
        check=_face_box,
    )
    face_crop_threshold: float = param(DEFAULT_THRESHOLD, "face, aligned: the lowest YuNet score that counts as a face",
                                       bound=Bound(0, 1, low_open=True))  # fmt: skip
    face_crop_pick: str = param(DEFAULT_PICK, "face, aligned, haar: of several faces, the one nearest the prior box's "
                                "centre or the largest", registry="automl.data.face_crop.FACE_PICKS")  # fmt: skip

    # Augmentation (albumentations) and batch mixing.
    crop: str = param("random_resized", "the training crop", registry="automl.train.augment.CROPS")
    crop_scale_min: float = param(0.6, "random_resized: smallest area share kept", bound=Bound(0, 1, low_open=True))
    hflip: float = param(0.5, "probability of a horizontal flip", bound=UNIT)
    color_jitter: float = param(0.0, "strength of brightness, contrast, saturation (hue a fifth)", bound=UNIT)
    clahe: float = param(0.0, "probability of CLAHE", bound=UNIT)
    cutout: float = param(0.0, "probability of coarse dropout", bound=UNIT)
    affine: float = param(0.0, "probability of a small rotation / shift / scale", bound=UNIT)
    rotate_limit: float = param(10.0, "affine: the largest rotation in degrees", bound=Bound(0, 180))
    perspective: float = param(0.0, "probability of a perspective warp", bound=UNIT)
    gauss_noise: float = param(0.0, "probability of Gaussian noise", bound=UNIT)
    mix: str = param("none", "batch mixing (vcutmix: vertical half-and-half of two faces)",
                     registry="automl.train.mixing.MIXES")  # fmt: skip
    mix_alpha: float = param(1.0, "Beta(alpha, alpha) for the mixing ratio (not vcutmix)", bound=POSITIVE)
    mix_prob: float = param(0.5, "share of batches mixed", bound=UNIT)
    # Where training batches are augmented: gpu (batched on the training device, from the worker's images uploaded
    # there once; every augmentation but clahe and perspective) | cpu (albumentations, every augmentation) | auto (gpu
    # on CUDA when the trial draws nothing it lacks, else cpu; on a CPU albumentations is the faster). On CUDA the
    # images live on the device and validation runs there whichever augments the training batches.
    augment_device: str = param("auto", "where training batches are augmented (auto: gpu on CUDA unless clahe or "
                                "perspective is on, else cpu)", choices=("auto", "cpu", "gpu"))  # fmt: skip

    # Sampling.
    sampler: str = param("none", "training sampler against class imbalance", registry="automl.train.samplers.SAMPLERS")
    sampler_power: float = param(1.0, "weighted: weight = (1 / class count) ** power", bound=NON_NEGATIVE)
    oversample_classes: tuple[int, ...] = param(
        (),
        "oversample: class codes to repeat",
        bound=NON_NEGATIVE,
        allowed='a list of class codes >= 0 like [2, 5] (in choices a string "2,5"), or none',
    )
    oversample_factor: float = param(2.0, "oversample: how many times those classes are drawn", bound=AT_LEAST_ONE)

    # Age task: training labels only; validation always uses the true labels.
    age_train_threshold: int | None = param(None, "train ages >= this as the oldest group (e.g. 58)",
                                            bound=AT_LEAST_ONE)  # fmt: skip
    age_drop_borderline: tuple[int, int] | None = param(
        None,
        "drop these ages (inclusive) from training, e.g. [57, 59]",
        bound=NON_NEGATIVE,
        allowed='an inclusive age range like [57, 59] (in choices a string "57-59"), or none',
        check=_low_age_first,
    )

    # Head: what sits on the backbone's features (automl/train/heads.py); drop_rate is the dropout on the features.
    head_hidden: int = param(0, "0: the output layer alone; else the width of a Linear + BatchNorm1d + ReLU layer",
                             bound=NON_NEGATIVE)  # fmt: skip
    head_dropout: float = param(0.0, "dropout after the hidden layer (head_hidden > 0 only)", bound=SHARE)
    head_init: str = param("default", "the head's linear layers (zeros: the output layer)",
                           choices=("default", "xavier", "normal", "zeros"))  # fmt: skip

    # Age heads (task age, and all with multitask): every head is scored on the true groups' macro F1.
    age_head: str = param("groups", "how the age head predicts the groups", registry="automl.train.heads.AGE_HEADS")
    age_bin_width: int = param(5, "bins: years per fine bin, nested inside the group edges", bound=AT_LEAST_ONE)
    age_regression_loss: str = param("l1", "regression: the loss on the age", choices=("l1", "smooth_l1"))
    age_boundary_offset: float = param(0.0, "regression: years added to the group edges")

    # Task all: one backbone with mask, gender and age heads, their probabilities multiplied into the 18 classes.
    multitask: bool = param(False, "task all: one backbone with mask, gender and age heads")
    mask_loss_weight: float = param(1.0, "multitask: weight of the mask head's loss", bound=NON_NEGATIVE)
    gender_loss_weight: float = param(1.0, "multitask: weight of the gender head's loss", bound=NON_NEGATIVE)
    age_loss_weight: float = param(1.0, "multitask: weight of the age head's loss", bound=NON_NEGATIVE)

    # Resolved at training time from the task and the data (like mean and std), so a saved model rebuilds its head.
    age_group_edges: tuple[int, ...] = param((), "resolved: the task's age group edges", bound=NON_NEGATIVE)
    age_bin_edges: tuple[int, ...] = param((), "resolved (bins): the fine bin edges", bound=NON_NEGATIVE)

    seed: int = param(0, "seed of the folds' training (from settings.seed)", bound=NON_NEGATIVE)

    @property
    def image_crop(self) -> FaceCrop:
        """The face crop of the images this trial trains and predicts on."""
        return FaceCrop(
            self.face_crop, self.face_crop_margin, self.face_crop_box, self.face_crop_threshold, self.face_crop_pick
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainParams:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise AutomlError(f"unknown training parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        resolved = {**values, **{k: tuple(v) for k, v in values.items() if isinstance(v, list)}}
        if resolved.get("face_crop") == "face" and "face_crop_pick" not in resolved:
            resolved["face_crop"] = "haar"  # saved before YuNet, when `face` was the Haar cascade: crop as it trained
        return cls(**resolved)


class Kind(NamedTuple):
    """The type of a TrainParams field: `base` is bool, int, float, str or tuple (of `item`, `length` long)."""

    base: type
    optional: bool
    item: type | None = None
    length: int | None = None

    def describe(self) -> str:
        text = {bool: "true or false", int: "a whole number", float: "a number", str: "a name"}.get(self.base, "")
        if self.base is tuple:
            text = f"a list of {self.length or 'any number of'} {'whole numbers' if self.item is int else 'numbers'}"
        return text + (" or none" if self.optional else "")


def _kind_of(hint: Any) -> Kind:
    args = typing.get_args(hint)
    optional = type(None) in args
    if optional:
        (hint,) = [a for a in args if a is not type(None)]
    if typing.get_origin(hint) is tuple:
        items = typing.get_args(hint)
        length = None if len(items) == 2 and items[1] is Ellipsis else len(items)
        return Kind(tuple, optional, items[0], length)
    return Kind(hint, optional)


KINDS: dict[str, Kind] = {name: _kind_of(hint) for name, hint in typing.get_type_hints(TrainParams).items()}
RULES: dict[str, Rule] = {f.name: f.metadata["rule"] for f in fields(TrainParams)}
DEFAULTS: dict[str, Any] = TrainParams().to_dict()


def allowed(name: str) -> str:
    """What field `name` accepts, in words (for messages)."""
    rule, kind = RULES[name], KINDS[name]
    names = rule.names()
    if rule.allowed is not None:
        return rule.allowed.format(names=", ".join(names))
    if names:
        return "one of: " + ", ".join(names)
    text = kind.describe()
    if rule.bound is not None:
        text += f" {rule.bound}" if kind.base is not tuple else f", each {rule.bound}"
    return text


def check_value(name: str, value: Any) -> None:
    """Raise ValueError, saying what is allowed, unless `value` (of the field's type, not None) obeys its rule."""
    rule = RULES[name]
    numbers = value if isinstance(value, tuple) else (value,)
    if rule.bound is not None and not all(rule.bound.contains(n) for n in numbers):
        raise ValueError(f"{value!r} is not {allowed(name)}")
    if rule.check is not None:
        rule.check(value)
    names = rule.names()
    if names:
        parts = [p.strip() for p in value.split(rule.joined)] if rule.joined else [value]
        if len(parts) > 2 or any(part not in names for part in parts):
            raise ValueError(f"{value!r} is not {allowed(name)}")


def params_table() -> str:
    """Every training parameter as a Markdown table (name, type, allowed, default, description): `automl params`."""
    rows = ["| name | type | allowed | default | description |", "|---|---|---|---|---|"]
    for f in fields(TrainParams):
        rule, kind = RULES[f.name], KINDS[f.name]
        names = rule.names()
        if names:
            text = ", ".join(names) + (f", or two joined by `{rule.joined}`" if rule.joined else "")
        elif rule.allowed is not None:
            text = rule.allowed
        else:
            text = ("each " if kind.base is tuple else "") + str(rule.bound) if rule.bound is not None else "any"
        cells = (f"`{f.name}`", f"`{f.type}`", text, f"`{_yaml(f.default)}`", rule.help)
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows) + "\n"


def _yaml(value: Any) -> str:
    """A default as a search-space file writes it."""
    if value is None or isinstance(value, bool):
        return {None: "none", True: "true", False: "false"}[value]
    return str(list(value)) if isinstance(value, tuple) else str(value)
