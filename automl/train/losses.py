"""Classification losses by name, for imbalanced classes scored by macro F1.

Every loss is an `nn.Module` called as `loss(logits, target)` with float logits `[N, C]` and int64 hard labels `[N]`,
returning a scalar. Batch mixing (mixup / CutMix) is done by the caller as `lam * L(y_a) + (1 - lam) * L(y_b)`.
Losses compute in float32 (logits are cast with `.float()`, and no matrix products are used, so autocast leaves them
alone) and work on CPU and CUDA alike; class-dependent constants follow the logits' device.

Adding a loss is one factory `(params, class_counts) -> nn.Module` decorated with `@LOSSES.register("name")`.
`create_loss` also accepts "a+b", a weighted sum `loss_weight * a + (1 - loss_weight) * b`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from automl.registry import Registry
from automl.train.params import TrainParams

LossFactory = Callable[[TrainParams, Sequence[int]], nn.Module]

#: Loss name -> factory `(params, class_counts) -> nn.Module`.
LOSSES: Registry[LossFactory] = Registry("loss")


def _counts(class_counts: Sequence[int]) -> Tensor:
    """Training images per class as float64, clamped to >= 1 so that empty classes stay finite."""
    counts = torch.as_tensor([float(c) for c in class_counts], dtype=torch.float64)
    if counts.ndim != 1 or counts.numel() == 0:
        raise ValueError("class_counts must list at least one class")
    return counts.clamp(min=1.0)


def _check_classes(logits: Tensor, num_classes: int) -> None:
    if logits.ndim != 2 or logits.shape[1] != num_classes:
        raise ValueError(f"expected logits of shape [N, {num_classes}], got {list(logits.shape)}")


class CrossEntropyLoss(nn.Module):
    """Plain cross-entropy with optional label smoothing: the baseline every other loss is compared with."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(logits.float(), target, label_smoothing=self.label_smoothing)


class FocalLoss(nn.Module):
    """Focal loss (Lin et al., ICCV 2017): `mean_i -alpha[y_i] * (1 - p_t)**gamma * log p_t`.

    Down-weights easy, confident samples so rare and hard classes weigh more. `alpha` is per class (all ones for
    none; proportional to 1 / count and averaging 1 over classes for balanced).
    """

    alpha: Tensor | None

    def __init__(self, gamma: float = 2.0, alpha: Sequence[float] | Tensor | None = None) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"focal gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)
        weights = None if alpha is None else torch.as_tensor(alpha, dtype=torch.float32)
        self.register_buffer("alpha", weights, persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        log_pt = F.log_softmax(logits.float(), dim=1).gather(1, target[:, None]).squeeze(1)
        loss = -log_pt
        if self.gamma != 0:
            # 1 - p_t computed as -expm1(log p_t) for accuracy; clamped so a 0 ** gamma < 1 has no infinite gradient.
            loss = (-torch.expm1(log_pt)).clamp(min=1e-12) ** self.gamma * loss
        if self.alpha is not None:
            _check_classes(logits, self.alpha.numel())
            loss = self.alpha.to(logits.device)[target] * loss
        return loss.mean()


def balanced_alpha(class_counts: Sequence[int]) -> Tensor:
    """Per-class weights proportional to 1 / count, normalised to average 1 over classes."""
    inverse = 1.0 / _counts(class_counts)
    return (inverse * inverse.numel() / inverse.sum()).float()


class SoftF1Loss(nn.Module):
    """Soft macro-F1 loss: `1 - mean_c 2 tp_c / (2 tp_c + fp_c + fn_c + eps)` over the batch.

    tp, fp and fn are sums of softmax probabilities against one-hot targets, so the metric the competition scores
    (macro F1) becomes differentiable. A class absent from the batch and the targets contributes f1 = 0 (a constant:
    it shifts the value, not the gradient), as the plain "mean over classes" definition implies.
    """

    def __init__(self, eps: float = 1e-7) -> None:
        super().__init__()
        self.eps = float(eps)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        probs = F.softmax(logits.float(), dim=1)
        onehot = F.one_hot(target, probs.shape[1]).to(probs.dtype)
        tp = (probs * onehot).sum(0)
        fp = (probs * (1 - onehot)).sum(0)
        fn = ((1 - probs) * onehot).sum(0)
        f1 = 2 * tp / (2 * tp + fp + fn + self.eps)
        return 1 - f1.mean()


class LADELoss(nn.Module):
    """LADE: LAbel distribution DisEntangling loss (Hong et al., "Disentangling Label Distribution for Long-tailed
    Visual Recognition", CVPR 2021; official code github.com/hyperconnect/LADE, loss/PriorCELoss.py + LADELoss.py).

    The logits `f(x)` are trained to be free of the training label prior `p_s`, so they suit a balanced target
    (uniform `p_t`, matching macro F1). With `C` classes, batch size `N`, `n_y` batch samples of class `y`:

    - LADE-CE (the paper's PriorCE): `CE(f(x) + log p_s, y)`.
    - LADER, a Donsker-Varadhan (ReMINE-regularised) estimate per class present in the batch:
      `T_y = (1/n_y) sum_{i: y_i=y} f_y(x_i)`,
      `Z_y = logsumexp_{i=1..N} (f_y(x_i) + log p_t(y) - log p_s(y)) - log N`,
      `LADER = -sum_{y: n_y > 0} p_s(y) * (T_y - Z_y - lambda * Z_y**2)`.
    - Total: `LADE-CE + alpha * LADER` (paper: alpha 0.1 and lambda 0.1 on CIFAR-100-LT).

    Unlike the official code, which also sums over classes absent from the batch (with their first term taken as 0),
    only classes present in the batch contribute: the DV bound cannot be estimated without samples of the class.
    """

    log_prior: Tensor
    prior: Tensor

    def __init__(
        self,
        class_counts: Sequence[int],
        alpha: float = 0.1,
        remine_lambda: float = 0.1,
        target_prior: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        counts = _counts(class_counts)
        prior = counts / counts.sum()
        if target_prior is None:
            target = torch.full_like(prior, 1.0 / prior.numel())
        else:
            target = torch.as_tensor(target_prior, dtype=torch.float64)
            target = target.clamp(min=1e-12) / target.clamp(min=1e-12).sum()
        self.alpha = float(alpha)
        self.remine_lambda = float(remine_lambda)
        self.register_buffer("prior", prior.float(), persistent=False)
        self.register_buffer("log_prior", prior.log().float(), persistent=False)
        self.register_buffer("log_shift", (target.log() - prior.log()).float(), persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        z = logits.float()
        _check_classes(z, self.prior.numel())
        device = z.device
        loss = F.cross_entropy(z + self.log_prior.to(device), target)
        if self.alpha == 0:
            return loss
        onehot = F.one_hot(target, z.shape[1]).to(z.dtype)
        per_class = onehot.sum(0)
        present = per_class > 0
        first = (z * onehot).sum(0) / per_class.clamp(min=1)
        second = torch.logsumexp(z + self.log_shift.to(device), dim=0) - math.log(z.shape[0])
        bound = first - second - self.remine_lambda * second**2
        lader = -torch.where(present, self.prior.to(device) * bound, torch.zeros_like(bound)).sum()
        return loss + self.alpha * lader


class LDAMLoss(nn.Module):
    """LDAM: label-distribution-aware margin loss (Cao et al., "Learning Imbalanced Datasets with
    Label-Distribution-Aware Margin Loss", NeurIPS 2019; official code github.com/kaidic/LDAM-DRW, losses.py).

    Rare classes get larger margins: `m_j = K / n_j**(1/4)` with `K` such that `max_j m_j = max_margin`; the loss is
    `CE(scale * (z - m_y * onehot(y)), y)`. The paper uses it with a normalised (cosine) classifier, where logits lie
    in [-1, 1] and `scale` 30 suits; on raw logits a smaller scale is the natural choice.
    """

    margins: Tensor

    def __init__(self, class_counts: Sequence[int], max_margin: float = 0.5, scale: float = 30.0) -> None:
        super().__init__()
        if scale <= 0:
            raise ValueError(f"ldam scale must be > 0, got {scale}")
        margins = _counts(class_counts) ** -0.25
        margins = margins * (max_margin / margins.max())
        self.scale = float(scale)
        self.register_buffer("margins", margins.float(), persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        z = logits.float()
        _check_classes(z, self.margins.numel())
        onehot = F.one_hot(target, z.shape[1]).to(z.dtype)
        shifted = z - onehot * self.margins.to(z.device)[target][:, None]
        return F.cross_entropy(self.scale * shifted, target)


class WeightedSum(nn.Module):
    """`weight * first + (1 - weight) * second`: e.g. "ce+f1" keeps CE's calibration while pushing macro F1."""

    def __init__(self, first: nn.Module, second: nn.Module, weight: float) -> None:
        super().__init__()
        self.first = first
        self.second = second
        self.weight = float(weight)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return self.weight * self.first(logits, target) + (1 - self.weight) * self.second(logits, target)


@LOSSES.register("ce")
def _ce(params: TrainParams, class_counts: Sequence[int]) -> nn.Module:
    return CrossEntropyLoss(label_smoothing=params.label_smoothing)


@LOSSES.register("f1")
def _f1(params: TrainParams, class_counts: Sequence[int]) -> nn.Module:
    return SoftF1Loss()


@LOSSES.register("focal")
def _focal(params: TrainParams, class_counts: Sequence[int]) -> nn.Module:
    alpha = balanced_alpha(class_counts) if params.focal_alpha == "balanced" else None
    return FocalLoss(gamma=params.focal_gamma, alpha=alpha)


@LOSSES.register("lade")
def _lade(params: TrainParams, class_counts: Sequence[int]) -> nn.Module:
    return LADELoss(class_counts, alpha=params.lade_alpha)


@LOSSES.register("ldam")
def _ldam(params: TrainParams, class_counts: Sequence[int]) -> nn.Module:
    return LDAMLoss(class_counts, max_margin=params.ldam_max_margin, scale=params.ldam_scale)


def create_loss(params: TrainParams, class_counts: Sequence[int]) -> nn.Module:
    """The loss named by `params.loss` (a name, or "a+b"), built for a training set with `class_counts` images per
    class; the schema (automl/train/params.py) has checked the name and `loss_weight`."""
    losses = [LOSSES.create(part.strip(), params, class_counts) for part in params.loss.split("+")]
    if len(losses) == 1:
        return losses[0]
    first, second = losses
    return WeightedSum(first, second, params.loss_weight)
