"""Heads: what sits on the backbone's features, how it is trained, and how its outputs become class probabilities.

Every model is a timm backbone without its classifier (`num_classes=0`) plus one `Head`. A head knows its output
width, the training target of each row (from the class codes and, for age heads, the ages in years), its loss, and
`probs(outputs)`: probabilities over the task's classes, so validation, out-of-fold files, TTA, ensembles and
predictions treat every head alike.

- `classes`: a linear classifier over the task's classes (the `groups` age head is this one).
- `bins`: fine age bins nested inside the group edges; the bins' probabilities summed per group.
- `regression`: one predicted age (L1 / smooth-L1); a Laplace distribution around it, with a scale learnt from its
  errors, integrated between the group edges (shifted by `age_boundary_offset`).
- `ordinal`: K-1 cumulative "older than edge k" sigmoids, made monotone, whose differences are the group probabilities.
- `multitask` (task all): mask, gender and age heads on one backbone, a weighted sum of their losses, and the 18-class
  probabilities as the product `P(mask) P(gender) P(age)` in the order `mask*6 + gender*3 + age`.

The age edges and the bins' edges are resolved into the parameters at training time (`resolve_head_params`), like
mean and std, so an exported model rebuilds exactly the same head without the data.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from automl.data.tasks import (
    COMBINED_PARTS,
    GENDER_CLASSES,
    MASK_CLASSES,
    AgeTask,
    CombinedTask,
    Task,
    age_groups,
    joint_probs,
    part_codes,
)
from automl.errors import AutomlError
from automl.registry import Registry
from automl.train.backbone import create_backbone, feature_width
from automl.train.losses import create_loss
from automl.train.params import TrainParams
from automl.train.samplers import class_counts
from automl.train.targets import age_part

#: The regression head's initial Laplace scale, in years (then learnt from its errors).
INITIAL_AGE_SCALE = 5.0


class Head(nn.Module, ABC):
    """Outputs (N, width) from features (N, num_features); `probs` turns them into (N, num_classes)."""

    width: int  # outputs per image
    num_classes: int  # classes of `probs`
    target_dtype: torch.dtype = torch.long

    @abstractmethod
    def targets(self, labels: np.ndarray, ages: np.ndarray | None) -> np.ndarray:
        """The training target of each row from its (training) class codes and ages in years."""

    @abstractmethod
    def build_loss(self, params: TrainParams, targets: np.ndarray) -> nn.Module:
        """The training loss `loss(outputs, targets)` for a training set with these targets."""

    @abstractmethod
    def probs(self, outputs: Tensor) -> Tensor:
        """Class probabilities (N, num_classes): non-negative, summing to 1."""


class _Layers(nn.Module):
    """The head options: an optional Linear + BatchNorm1d + ReLU hidden layer with dropout, then the output layer."""

    def __init__(self, num_features: int, width: int, params: TrainParams):
        super().__init__()
        inputs = num_features
        if params.head_hidden > 0:
            self.hidden: nn.Module = nn.Sequential(
                nn.Linear(num_features, params.head_hidden, bias=False),
                nn.BatchNorm1d(params.head_hidden),
                nn.ReLU(inplace=True),
                nn.Dropout(params.head_dropout),
            )
            inputs = params.head_hidden
        else:
            self.hidden = nn.Identity()
        self.output = nn.Linear(inputs, width)
        _initialise(self, params.head_init)

    def forward(self, features: Tensor) -> Tensor:
        return self.output(self.hidden(features))


def _initialise(layers: _Layers, how: str) -> None:
    linears = [m for m in layers.modules() if isinstance(m, nn.Linear)]
    for linear in linears:
        if how == "xavier":
            nn.init.xavier_uniform_(linear.weight)
        elif how == "normal":
            nn.init.normal_(linear.weight, std=0.01)  # timm's classifier initialisation for ViTs
        if linear.bias is not None and how != "default":
            nn.init.zeros_(linear.bias)
    if how == "zeros":  # the output layer only: every class starts equally likely, hidden layers still learn
        nn.init.zeros_(layers.output.weight)
        nn.init.zeros_(layers.output.bias)


class ClassifierHead(Head):
    """Softmax over the task's classes, trained with `params.loss` (ce, focal, f1, lade, ldam, "a+b")."""

    def __init__(self, num_features: int, num_classes: int, params: TrainParams):
        super().__init__()
        self.width = self.num_classes = num_classes
        self.layers = _Layers(num_features, num_classes, params)

    def forward(self, features: Tensor) -> Tensor:
        return self.layers(features)

    def targets(self, labels: np.ndarray, ages: np.ndarray | None) -> np.ndarray:
        return np.asarray(labels, dtype=np.int64)

    def build_loss(self, params: TrainParams, targets: np.ndarray) -> nn.Module:
        return create_loss(params, class_counts(targets, self.width))

    def probs(self, outputs: Tensor) -> Tensor:
        return outputs.float().softmax(1)


class BinsHead(ClassifierHead):
    """Softmax over fine age bins (trained like a classifier), summed into the groups the bins nest in."""

    membership: Tensor

    def __init__(self, num_features: int, params: TrainParams):
        bin_edges, group_edges = params.age_bin_edges, params.age_group_edges
        super().__init__(num_features, len(bin_edges) + 1, params)
        self.bin_edges = tuple(bin_edges)
        self.num_classes = len(group_edges) + 1
        # Bin j covers [edge j-1, edge j): its group is that of its lower edge (the first bin is in group 0).
        groups = np.concatenate([[0], age_groups(np.asarray(bin_edges), group_edges)])
        self.register_buffer("membership", F.one_hot(torch.as_tensor(groups), self.num_classes).float(), False)

    def targets(self, labels: np.ndarray, ages: np.ndarray | None) -> np.ndarray:
        return age_groups(_need_ages(ages, "bins"), self.bin_edges)

    def probs(self, outputs: Tensor) -> Tensor:
        return outputs.float().softmax(1) @ self.membership.to(outputs.device)


class RegressionHead(Head):
    """One output: the age, as `centre + spread * output`; group probabilities from a Laplace around it."""

    target_dtype = torch.float32

    def __init__(self, num_features: int, params: TrainParams):
        super().__init__()
        edges = params.age_group_edges
        self.width, self.num_classes = 1, len(edges) + 1
        self.layers = _Layers(num_features, 1, params)
        # Ages are whole years: the boundary between 59 and 60 is 59.5, then moved by the searched offset.
        self.register_buffer("boundaries", torch.tensor(edges, dtype=torch.float32) - 0.5 + params.age_boundary_offset)
        self.centre = (edges[0] + edges[-1]) / 2
        self.spread = max((edges[-1] - edges[0]) / 2, 10.0)
        self.log_scale = nn.Parameter(torch.tensor(math.log(INITIAL_AGE_SCALE)))
        self.loss_name = params.age_regression_loss

    def forward(self, features: Tensor) -> Tensor:
        return self.layers(features)

    def age(self, outputs: Tensor) -> Tensor:
        return self.centre + self.spread * outputs.float()[:, 0]

    def targets(self, labels: np.ndarray, ages: np.ndarray | None) -> np.ndarray:
        return _need_ages(ages, "regression").astype(np.float32)

    def build_loss(self, params: TrainParams, targets: np.ndarray) -> nn.Module:
        return _LossFunction(self._loss)

    def _loss(self, outputs: Tensor, ages: Tensor) -> Tensor:
        predicted, ages = self.age(outputs), ages.float()
        # In units of `spread`, so the loss is of the order of a classifier's whatever the ages.
        if self.loss_name == "l1":
            fit = F.l1_loss(predicted / self.spread, ages / self.spread)
        else:
            fit = F.smooth_l1_loss(predicted / self.spread, ages / self.spread, beta=0.1)
        # The scale alone learns from the errors (Laplace likelihood on the detached prediction): its optimum is
        # the mean absolute error, so the probabilities are as sure as the predictions are good.
        scale = self.log_scale.exp()
        likelihood = (self.log_scale + (predicted.detach() - ages).abs() / scale).mean()
        return fit + likelihood

    def probs(self, outputs: Tensor) -> Tensor:
        mu, scale = self.age(outputs)[:, None], self.log_scale.exp().float().clamp(min=0.05)
        z = (self.boundaries.to(outputs.device)[None, :] - mu) / scale
        cdf = torch.where(z < 0, 0.5 * torch.exp(z.clamp(max=0)), 1 - 0.5 * torch.exp(-z.clamp(min=0)))
        ones = torch.ones_like(mu)
        cumulative = torch.cat([torch.zeros_like(mu), cdf, ones], dim=1)
        return (cumulative[:, 1:] - cumulative[:, :-1]).clamp(min=0)


class OrdinalHead(Head):
    """K-1 outputs, output k the logit of "older than edge k"; trained with binary cross-entropy on the groups."""

    def __init__(self, num_features: int, params: TrainParams):
        super().__init__()
        self.num_classes = len(params.age_group_edges) + 1
        self.width = self.num_classes - 1
        self.layers = _Layers(num_features, self.width, params)

    def forward(self, features: Tensor) -> Tensor:
        return self.layers(features)

    def targets(self, labels: np.ndarray, ages: np.ndarray | None) -> np.ndarray:
        return np.asarray(labels, dtype=np.int64)  # the (training) group: the age options apply as for groups

    def build_loss(self, params: TrainParams, targets: np.ndarray) -> nn.Module:
        return _LossFunction(self._loss)

    def _loss(self, outputs: Tensor, groups: Tensor) -> Tensor:
        older = (groups.long()[:, None] > torch.arange(self.width, device=outputs.device)[None, :]).float()
        return F.binary_cross_entropy_with_logits(outputs.float(), older)

    def probs(self, outputs: Tensor) -> Tensor:
        # P(older than edge k) can only fall with k: the running minimum makes it so, and the differences >= 0.
        older = torch.cummin(outputs.float().sigmoid(), dim=1).values
        ones = torch.ones_like(older[:, :1])
        cumulative = torch.cat([ones, older, torch.zeros_like(ones)], dim=1)
        return cumulative[:, :-1] - cumulative[:, 1:]


class MultiTaskHead(Head):
    """Mask, gender and age heads on the same features; targets (N, 3): mask code, gender code, age target."""

    target_dtype = torch.float32

    def __init__(self, parts: Sequence[Head], weights: Sequence[float]):
        super().__init__()
        self.parts = nn.ModuleList(parts)
        self.weights = tuple(float(w) for w in weights)
        self.width = sum(p.width for p in parts)
        self.num_classes = math.prod(p.num_classes for p in parts)
        self.bounds = np.cumsum([0, *(p.width for p in parts)]).tolist()

    def forward(self, features: Tensor) -> Tensor:
        return torch.cat([part(features) for part in self.parts], dim=1)

    def split(self, outputs: Tensor) -> list[Tensor]:
        return [outputs[:, lo:hi] for lo, hi in zip(self.bounds[:-1], self.bounds[1:], strict=True)]

    def targets(self, labels: np.ndarray, ages: np.ndarray | None) -> np.ndarray:
        columns = part_codes(labels, [part.num_classes for part in self.parts])
        return np.stack(
            [part.targets(column, ages) for part, column in zip(self.parts, columns, strict=True)], axis=1
        ).astype(np.float32)

    def build_loss(self, params: TrainParams, targets: np.ndarray) -> nn.Module:
        losses = [
            part.build_loss(params, targets[:, k].astype(np.int64 if part.target_dtype == torch.long else np.float32))
            for k, part in enumerate(self.parts)
        ]
        return _WeightedLosses(self, losses)

    def part_probs(self, outputs: Tensor) -> list[Tensor]:
        return [part.probs(output) for part, output in zip(self.parts, self.split(outputs), strict=True)]

    def probs(self, outputs: Tensor) -> Tensor:
        return joint_probs(self.part_probs(outputs))


class _WeightedLosses(nn.Module):
    """The multitask loss: `sum_k weight_k * loss_k(outputs of head k, target column k)`."""

    def __init__(self, head: MultiTaskHead, losses: Sequence[nn.Module]):
        super().__init__()
        self.losses = nn.ModuleList(losses)
        self.split, self.weights = head.split, head.weights
        self.dtypes = [part.target_dtype for part in head.parts]

    def forward(self, outputs: Tensor, target: Tensor) -> Tensor:
        total = outputs.new_zeros((), dtype=torch.float32)
        for k, (loss, output) in enumerate(zip(self.losses, self.split(outputs), strict=True)):
            total = total + self.weights[k] * loss(output, target[:, k].to(self.dtypes[k]))
        return total


class _LossFunction(nn.Module):
    """A loss computed by a head's method (the head's own parameters, like the regression scale, take part)."""

    def __init__(self, function: Callable[[Tensor, Tensor], Tensor]):
        super().__init__()
        self.function = function

    def forward(self, outputs: Tensor, target: Tensor) -> Tensor:
        return self.function(outputs, target)


class HeadedModel(nn.Module):
    """A timm backbone without its classifier, and a head on its pooled features."""

    def __init__(self, backbone: nn.Module, head: Head):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.backbone(images))

    def probs(self, images: Tensor) -> Tensor:
        return self.head.probs(self(images).float())


def create_model(params: TrainParams, num_classes: int) -> HeadedModel:
    """The timm backbone of resolved `params` without its classifier, and the head on its features."""
    backbone = create_backbone(params, 0)
    return HeadedModel(backbone, create_head(params, feature_width(backbone), num_classes))


def create_head(params: TrainParams, num_features: int, num_classes: int) -> Head:
    """The head of resolved `params` (see `resolve_head_params`) for a task of `num_classes` classes."""
    _check_options(params)
    if params.multitask:
        age = _age_head(params, num_features)
        parts = [ClassifierHead(num_features, len(MASK_CLASSES), params),
                 ClassifierHead(num_features, len(GENDER_CLASSES), params), age]  # fmt: skip
        head: Head = MultiTaskHead(parts, (params.mask_loss_weight, params.gender_loss_weight, params.age_loss_weight))
    elif params.age_group_edges:
        head = _age_head(params, num_features)
    else:
        head = ClassifierHead(num_features, num_classes, params)
    if head.num_classes != num_classes:
        raise AutomlError(
            f"the {describe_head(params)} head gives {head.num_classes} classes, the task has {num_classes}; "
            "its age_group_edges do not match the task's age bins"
        )
    return head


def _age_head(params: TrainParams, num_features: int) -> Head:
    if params.age_head == "bins" and not params.age_bin_edges:
        raise AutomlError("age_head bins needs age_bin_edges: train through the engine, which resolves them")
    return AGE_HEADS.create(params.age_head, num_features, params)


#: Age head name -> `(num_features, resolved params) -> Head`; the names search-space files use.
AGE_HEADS: Registry[Callable[[int, TrainParams], Head]] = Registry("age_head")


@AGE_HEADS.register("groups")
def _groups_head(num_features: int, params: TrainParams) -> Head:
    return ClassifierHead(num_features, len(params.age_group_edges) + 1, params)


AGE_HEADS.register("bins")(BinsHead)
AGE_HEADS.register("regression")(RegressionHead)
AGE_HEADS.register("ordinal")(OrdinalHead)


def describe_head(params: TrainParams) -> str:
    """The head in a few words, e.g. `age bins` or `multitask, age ordinal`, with its hidden layer if any."""
    text = "classes"
    if params.multitask:
        text = f"multitask, age {params.age_head}"
    elif params.age_group_edges or params.age_head != "groups":
        text = f"age {params.age_head}"
    return text + (f", hidden {params.head_hidden}" if params.head_hidden else "")


def _check_options(params: TrainParams) -> None:
    """What the schema cannot check field by field (automl/train/params.py checks each one)."""
    weights = (params.mask_loss_weight, params.gender_loss_weight, params.age_loss_weight)
    if params.multitask and sum(weights) <= 0:
        raise AutomlError(f"multitask loss weights must not all be 0, got {weights}")


def _need_ages(ages: np.ndarray | None, head: str) -> np.ndarray:
    if ages is None:
        raise AutomlError(f"age_head {head} trains on ages in years: the data's age column is needed")
    return np.asarray(ages)


def fine_age_edges(group_edges: Sequence[int], ages: np.ndarray, width: int) -> tuple[int, ...]:
    """Bin edges every `width` years from each group's lowest age, within the data's ages, plus the group edges.

    `(30, 60)` with ages 18..60 and width 5: 23, 28, 30, 35, 40, 45, 50, 55, 60, so bins 18-22, 23-27, 28-29, 30-34,
    ..., 55-59, >=60 nest inside the groups <30, 30-59, >=60.
    """
    low, high = int(np.min(ages)), int(np.max(ages))
    lowers = [min(low, group_edges[0]), *group_edges]
    uppers = [*group_edges, max(high + 1, group_edges[-1] + 1)]
    edges = set(group_edges)
    for start, stop in zip(lowers, uppers, strict=True):
        edges.update(e for e in range(start + width, stop, width) if low < e <= high)
    return tuple(sorted(edges))


def resolve_head_params(params: TrainParams, task: Task | None, ages: np.ndarray | None) -> TrainParams:
    """`params` with the age edges (and the bins' edges) the head needs, checked against the task.

    Edges already in `params` (a resolved configuration) are kept, so a saved model rebuilds the same head.
    """
    _check_options(params)
    uses_age = params.multitask or (params.age_head != "groups")
    if params.multitask and not (
        isinstance(task, CombinedTask) and tuple(p.name for p in task.parts) == COMBINED_PARTS
    ):
        raise AutomlError("multitask needs task all (mask, gender and age); set multitask=false for other tasks")
    age = age_part(task)
    if isinstance(task, AgeTask) or params.multitask:
        assert age is not None
        params = replace(params, age_group_edges=params.age_group_edges or tuple(age.bins))
    elif uses_age:
        raise AutomlError(
            f"age_head {params.age_head} applies to task age, or to task all with multitask=true; "
            f"task {getattr(task, 'name', None)!r} uses age_head groups"
        )
    if params.age_head == "bins" and (isinstance(task, AgeTask) or params.multitask) and not params.age_bin_edges:
        known = _need_ages(ages, "bins")
        known = known[np.isfinite(known)]
        params = replace(params, age_bin_edges=fine_age_edges(params.age_group_edges, known, params.age_bin_width))
    return params
