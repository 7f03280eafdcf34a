"""Optimizers from timm's factory and the per-step schedules, on tiny CPU models."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from automl.errors import AutomlError
from automl.train.optim import OPTIMIZERS, SCHEDULES, create_optimizer, create_scheduler
from automl.train.params import TrainParams


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 1))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_lowers_a_toy_regression_loss(name: str) -> None:
    model = tiny_model()
    optimizer = create_optimizer(model, TrainParams(optimizer=name, lr=1e-2, weight_decay=1e-4))
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(16, 3, 4, 4, generator=generator)
    y = x.mean(dim=(1, 2, 3)).unsqueeze(1) * 3
    losses = []
    for _ in range(10):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


@pytest.mark.parametrize(("name", "expected"), [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_adam_variants_are_the_torch_classes(name: str, expected: type) -> None:
    assert type(create_optimizer(tiny_model(), TrainParams(optimizer=name))) is expected


def test_adamp_is_timms() -> None:
    from timm.optim import AdamP

    assert isinstance(create_optimizer(tiny_model(), TrainParams(optimizer="adamp")), AdamP)


@pytest.mark.parametrize("nesterov", [True, False])
def test_sgd_nesterov_flag_and_momentum_reach_every_param_group(nesterov: bool) -> None:
    params = TrainParams(optimizer="sgd", lr=0.05, momentum=0.8, nesterov=nesterov)
    optimizer = create_optimizer(tiny_model(), params)
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.param_groups
    for group in optimizer.param_groups:
        assert group["nesterov"] is nesterov
        assert group["momentum"] == 0.8
        assert group["lr"] == 0.05


def test_sgd_nesterov_without_momentum_is_a_user_error() -> None:
    with pytest.raises(AutomlError, match="momentum"):
        create_optimizer(tiny_model(), TrainParams(optimizer="sgd", momentum=0.0, nesterov=True))
    create_optimizer(tiny_model(), TrainParams(optimizer="sgd", momentum=0.0, nesterov=False))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_no_weight_decay_on_biases_and_norm_layers(name: str) -> None:
    model = tiny_model()
    optimizer = create_optimizer(model, TrainParams(optimizer=name, weight_decay=0.05))
    decay_of = {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    names = dict(model.named_parameters())
    assert set(decay_of) == {id(p) for p in names.values()}
    for param_name, param in names.items():
        expected = 0.05 if param_name in {"0.weight", "4.weight"} else 0.0  # conv and linear weights only
        assert decay_of[id(param)] == expected, param_name


def test_unknown_optimizer_names_the_allowed_ones() -> None:
    with pytest.raises(AutomlError, match="sgd, adam, adamw, adamp"):
        create_optimizer(tiny_model(), TrainParams(optimizer="lion"))


# Schedules: the LR the optimizer holds when the batch of step `s` runs (after `s` calls of scheduler.step()).

STEPS_PER_EPOCH = 10


def lrs(params: TrainParams, steps_per_epoch: int = STEPS_PER_EPOCH) -> list[float]:
    """The LR for every step of the run."""
    optimizer = create_optimizer(tiny_model(), params)
    scheduler = create_scheduler(optimizer, params, steps_per_epoch)
    out = []
    for _ in range(params.epochs * steps_per_epoch):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # Every param group (decay / no decay) follows the same schedule.
    assert len({g["lr"] for g in optimizer.param_groups}) == 1
    return out


def test_cosine_with_warmup() -> None:
    params = TrainParams(optimizer="sgd", lr=0.1, schedule="cosine", warmup_epochs=2, epochs=10)
    lr = lrs(params)
    warmup, total = 20, 100
    assert lr[0] == pytest.approx(0.1 / (warmup + 1))  # near 0, not 0: the first batch still learns
    assert lr[warmup - 1] == pytest.approx(0.1 * warmup / (warmup + 1))
    assert all(b > a for a, b in zip(lr[:warmup], lr[1 : warmup + 1], strict=True))  # linear ramp
    assert lr[warmup] == pytest.approx(0.1)  # warm-up done: the full LR
    middle = warmup + (total - warmup) // 2
    assert lr[middle] == pytest.approx(0.05)  # halfway down the cosine
    step = 70
    assert lr[step] == pytest.approx(0.05 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup))))
    assert lr[-1] == pytest.approx(0.05 * (1 + math.cos(math.pi * (total - 1 - warmup) / (total - warmup))))
    assert lr[-1] < 1e-4


def test_cosine_without_warmup_starts_at_lr() -> None:
    lr = lrs(TrainParams(lr=1e-3, schedule="cosine", warmup_epochs=0, epochs=4))
    assert lr[0] == pytest.approx(1e-3)
    assert lr[20] == pytest.approx(5e-4)
    assert lr[-1] == pytest.approx(0.5e-3 * (1 + math.cos(math.pi * 39 / 40)))
    assert lr[-1] < 1e-5


def test_cosine_fractional_warmup_and_warmup_longer_than_the_run() -> None:
    lr = lrs(TrainParams(lr=1.0, schedule="cosine", warmup_epochs=0.5, epochs=2))
    assert lr[4] == pytest.approx(5 / 6)  # 5 warm-up steps
    assert lr[5] == pytest.approx(1.0)
    lr = lrs(TrainParams(lr=1.0, schedule="cosine", warmup_epochs=5, epochs=2))
    assert lr == pytest.approx([(s + 1) / 21 for s in range(20)])  # clipped to the run: all warm-up


def test_step_schedule() -> None:
    lr = lrs(TrainParams(lr=0.1, schedule="step", step_epochs=3, step_gamma=0.5, epochs=10))
    assert lr[0] == pytest.approx(0.1)
    assert lr[29] == pytest.approx(0.1)  # last batch of epoch 3
    assert lr[30] == pytest.approx(0.05)
    assert lr[59] == pytest.approx(0.05)
    assert lr[60] == pytest.approx(0.025)
    assert lr[-1] == pytest.approx(0.1 * 0.5**3)


def test_onecycle_schedule() -> None:
    params = TrainParams(optimizer="sgd", lr=0.2, schedule="onecycle", epochs=10)
    lr = lrs(params)
    total, peak = 100, 29  # torch's defaults: pct_start 0.3, div_factor 25, final_div_factor 1e4
    start, low = 0.2 / 25, 0.2 / 25 / 1e4
    assert lr[0] == pytest.approx(start)
    assert lr[peak] == pytest.approx(0.2)
    assert max(lr) == pytest.approx(0.2)
    middle = (peak + total - 1) // 2
    pct = (middle - peak) / (total - 1 - peak)
    assert lr[middle] == pytest.approx(low + (0.2 - low) / 2 * (1 + math.cos(math.pi * pct)))
    assert lr[-1] == pytest.approx(low)


def test_onecycle_keeps_the_searched_momentum() -> None:
    params = TrainParams(optimizer="sgd", momentum=0.7, schedule="onecycle", epochs=2)
    optimizer = create_optimizer(tiny_model(), params)
    scheduler = create_scheduler(optimizer, params, 5)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    assert {g["momentum"] for g in optimizer.param_groups} == {0.7}


def test_constant_schedule() -> None:
    assert lrs(TrainParams(lr=3e-4, schedule="constant", epochs=3)) == pytest.approx([3e-4] * 30)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_every_schedule_survives_the_whole_run_and_resumes(schedule: str) -> None:
    params = TrainParams(lr=0.01, schedule=schedule, warmup_epochs=1, step_epochs=1, epochs=3)
    expected = lrs(params, steps_per_epoch=4)
    optimizer = create_optimizer(tiny_model(), params)
    scheduler = create_scheduler(optimizer, params, 4)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    state = scheduler.state_dict()
    optimizer = create_optimizer(tiny_model(), params)
    resumed = create_scheduler(optimizer, params, 4)
    resumed.load_state_dict(state)
    for group, lr in zip(optimizer.param_groups, resumed.get_last_lr(), strict=True):
        group["lr"] = lr  # what a checkpoint's optimizer state would restore
    assert optimizer.param_groups[0]["lr"] == pytest.approx(expected[5])


def test_unknown_schedule_names_the_allowed_ones() -> None:
    optimizer = create_optimizer(tiny_model(), TrainParams())
    with pytest.raises(AutomlError, match="cosine, step, onecycle, constant"):
        create_scheduler(optimizer, TrainParams(schedule="poly"), 10)
