"""Optimizers (timm's factory) and per-step learning-rate schedules, looked up by their search-space names."""

from __future__ import annotations

import math
from collections.abc import Callable

import timm.optim
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

from automl.errors import AutomlError
from automl.registry import Registry
from automl.train.params import TrainParams

#: Optimizer name -> `(model, params) -> torch.optim.Optimizer`.
OPTIMIZERS: Registry[Callable[[nn.Module, TrainParams], torch.optim.Optimizer]] = Registry("optimizer")


def create_optimizer(model: nn.Module, params: TrainParams) -> torch.optim.Optimizer:
    """The optimizer named by `params.optimizer` over `model`'s parameters.

    Weight decay applies to weights only: biases and normalisation parameters (every 1-d parameter) and the
    model's own `no_weight_decay()` names get none (timm's `filter_bias_and_bn`).
    """
    return OPTIMIZERS.create(params.optimizer, model, params)


def _timm_optimizer(model: nn.Module, params: TrainParams, opt: str, **kwargs: object) -> torch.optim.Optimizer:
    return timm.optim.create_optimizer_v2(
        model,
        opt=opt,
        lr=params.lr,
        weight_decay=params.weight_decay,
        momentum=params.momentum,
        filter_bias_and_bn=True,
        **kwargs,
    )


@OPTIMIZERS.register("sgd")
def _sgd(model: nn.Module, params: TrainParams) -> torch.optim.Optimizer:
    if params.nesterov and params.momentum == 0:
        # torch refuses Nesterov without momentum; say which parameters to change instead of a ValueError.
        raise AutomlError("sgd with nesterov=true needs momentum > 0; set momentum or nesterov=false")
    # timm's `sgd` is Nesterov SGD, `momentum` the plain one; the flag is explicit, so it is right whatever timm's
    # per-name defaults become.
    return _timm_optimizer(model, params, "sgd" if params.nesterov else "momentum", nesterov=params.nesterov)


@OPTIMIZERS.register("adam")
def _adam(model: nn.Module, params: TrainParams) -> torch.optim.Optimizer:
    return _timm_optimizer(model, params, "adam")


@OPTIMIZERS.register("adamw")
def _adamw(model: nn.Module, params: TrainParams) -> torch.optim.Optimizer:
    return _timm_optimizer(model, params, "adamw")


@OPTIMIZERS.register("adamp")
def _adamp(model: nn.Module, params: TrainParams) -> torch.optim.Optimizer:
    return _timm_optimizer(model, params, "adamp")


# The schedules are per optimisation step. timm.scheduler steps per epoch (or per update with its own
# `step_update(num_updates)` API), which a fold loop would have to call differently per schedule. One torch
# LambdaLR whose factor is a plain function of the step number keeps every schedule a formula that can be read
# and tested directly, steps with the usual `scheduler.step()`, and resumes from `state_dict()` (the step count
# is the only state). SequentialLR is avoided for warm-up: chaining schedulers is harder to check step by step.
# OneCycleLR is torch's own: it already is a per-step schedule.


def _cosine_factor(total: int, warmup: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            # (step + 1) / (warmup + 1): starts near 0 rather than at 0, so the first batch is not wasted, and
            # reaches 1 at the first step after warm-up.
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _step_factor(every: int, gamma: float) -> Callable[[int], float]:
    def factor(step: int) -> float:
        return gamma ** (step // every)

    return factor


def _constant_factor(step: int) -> float:
    return 1.0


#: Schedule name -> `(optimizer, params, steps_per_epoch) -> LRScheduler`, stepped once per batch.
SCHEDULES: Registry[Callable[[torch.optim.Optimizer, TrainParams, int], LRScheduler]] = Registry("schedule")


@SCHEDULES.register("cosine")
def _cosine(optimizer: torch.optim.Optimizer, params: TrainParams, steps_per_epoch: int) -> LRScheduler:
    total = params.epochs * steps_per_epoch
    # A warm-up longer than the run (a search may pair a long warm-up with few epochs) is clipped to the run.
    warmup = min(total, round(params.warmup_epochs * steps_per_epoch))
    return LambdaLR(optimizer, _cosine_factor(total, warmup))


@SCHEDULES.register("step")
def _step(optimizer: torch.optim.Optimizer, params: TrainParams, steps_per_epoch: int) -> LRScheduler:
    return LambdaLR(optimizer, _step_factor(params.step_epochs * steps_per_epoch, params.step_gamma))


@SCHEDULES.register("onecycle")
def _onecycle(optimizer: torch.optim.Optimizer, params: TrainParams, steps_per_epoch: int) -> LRScheduler:
    # cycle_momentum=False: momentum / Adam's beta1 are searched parameters; OneCycleLR would overwrite them with
    # its own 0.85..0.95 cycle, so the searched value would have no effect under this schedule.
    return OneCycleLR(optimizer, max_lr=params.lr, total_steps=params.epochs * steps_per_epoch, cycle_momentum=False)


@SCHEDULES.register("constant")
def _constant(optimizer: torch.optim.Optimizer, params: TrainParams, steps_per_epoch: int) -> LRScheduler:
    return LambdaLR(optimizer, _constant_factor)


def create_scheduler(optimizer: torch.optim.Optimizer, params: TrainParams, steps_per_epoch: int) -> LRScheduler:
    """The schedule named by `params.schedule`, stepped once per batch over `params.epochs * steps_per_epoch` steps.

    cosine: linear warm-up over `warmup_epochs` from near 0 to `lr`, then a cosine down to 0 at the end;
    step: `lr * step_gamma ** (epoch // step_epochs)`; onecycle: torch's OneCycleLR peaking at `lr`;
    constant: `lr` throughout.
    """
    if steps_per_epoch < 1:
        raise AutomlError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    return SCHEDULES.create(params.schedule, optimizer, params, steps_per_epoch)
