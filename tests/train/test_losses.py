"""Losses: each checked against a value worked out by hand with `math` on a tiny fixed example."""

from __future__ import annotations

import math

import pytest
import torch

from automl.errors import AutomlError
from automl.train.losses import LOSSES, create_loss
from automl.train.params import TrainParams

# Three samples, three classes; class 1 is absent from the targets (exercises per-class masking).
LOGITS = [[2.0, 0.5, -1.0], [0.1, 1.5, 0.3], [-0.5, 0.2, 1.2]]
TARGET = [0, 2, 2]
COUNTS = [10, 5, 1]
SHIPPED = ("ce", "f1", "focal", "lade", "ldam")
ALL_LOSSES = [*SHIPPED, "ce+f1", "focal+f1", "lade+ldam"]


def logits_tensor(requires_grad: bool = False) -> torch.Tensor:
    return torch.tensor(LOGITS, dtype=torch.float32, requires_grad=requires_grad)


def target_tensor() -> torch.Tensor:
    return torch.tensor(TARGET, dtype=torch.int64)


def value(loss: str, counts: list[int] = COUNTS, **params: object) -> float:
    module = create_loss(TrainParams(loss=loss, **params), counts)  # type: ignore[arg-type]
    return module(logits_tensor(), target_tensor()).item()


def log_softmax(row: list[float]) -> list[float]:
    top = max(row)
    log_z = top + math.log(sum(math.exp(v - top) for v in row))
    return [v - log_z for v in row]


def softmax(row: list[float]) -> list[float]:
    return [math.exp(v) for v in log_softmax(row)]


def cross_entropy(rows: list[list[float]], target: list[int]) -> float:
    return sum(-log_softmax(row)[y] for row, y in zip(rows, target, strict=True)) / len(rows)


def logsumexp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def test_registry_lists_the_names() -> None:
    # Shipped first, in order; a test module may register more (tests/search/test_new_loss.py).
    assert LOSSES.names()[: len(SHIPPED)] == SHIPPED


@pytest.mark.parametrize("name", ["dice", "ce+dice", ""])
def test_unknown_name_lists_the_allowed_ones(name: str) -> None:
    with pytest.raises(AutomlError) as error:
        create_loss(TrainParams(loss=name), COUNTS)
    for allowed in SHIPPED:
        assert allowed in str(error.value)


def test_ce_by_hand() -> None:
    assert value("ce") == pytest.approx(cross_entropy(LOGITS, TARGET), rel=1e-5)


def test_ce_label_smoothing_by_hand() -> None:
    eps = 0.1
    expected = 0.0
    for row, y in zip(LOGITS, TARGET, strict=True):
        logp = log_softmax(row)
        expected += (1 - eps) * -logp[y] + eps * sum(-v for v in logp) / len(logp)
    assert value("ce", label_smoothing=eps) == pytest.approx(expected / 3, rel=1e-5)


def test_focal_by_hand() -> None:
    gamma = 2.0
    expected = 0.0
    for row, y in zip(LOGITS, TARGET, strict=True):
        p = softmax(row)[y]
        expected += -((1 - p) ** gamma) * math.log(p)
    assert value("focal", focal_gamma=gamma) == pytest.approx(expected / 3, rel=1e-5)


def test_focal_balanced_alpha_by_hand() -> None:
    gamma = 1.5
    inverse = [1 / c for c in COUNTS]
    alpha = [3 * v / sum(inverse) for v in inverse]  # averages 1 over classes
    assert sum(alpha) / 3 == pytest.approx(1.0)
    expected = 0.0
    for row, y in zip(LOGITS, TARGET, strict=True):
        p = softmax(row)[y]
        expected += -alpha[y] * (1 - p) ** gamma * math.log(p)
    got = value("focal", focal_gamma=gamma, focal_alpha="balanced")
    assert got == pytest.approx(expected / 3, rel=1e-5)


def test_focal_with_gamma_0_and_no_alpha_is_ce() -> None:
    assert value("focal", focal_gamma=0.0) == pytest.approx(value("ce"), rel=1e-6)


def test_f1_by_hand() -> None:
    eps = 1e-7
    probs = [softmax(row) for row in LOGITS]
    f1s = []
    for c in range(3):
        y = [1.0 if t == c else 0.0 for t in TARGET]
        p = [row[c] for row in probs]
        tp = sum(pi * yi for pi, yi in zip(p, y, strict=True))
        fp = sum(pi * (1 - yi) for pi, yi in zip(p, y, strict=True))
        fn = sum((1 - pi) * yi for pi, yi in zip(p, y, strict=True))
        f1s.append(2 * tp / (2 * tp + fp + fn + eps))
    assert f1s[1] == 0.0  # class 1 is absent from the targets
    assert value("f1") == pytest.approx(1 - sum(f1s) / 3, rel=1e-5)


def test_perfect_prediction_gives_near_zero_f1_loss() -> None:
    target = torch.tensor([0, 1, 2, 1])
    logits = 50.0 * torch.nn.functional.one_hot(target, 3).float()
    loss = create_loss(TrainParams(loss="f1"), COUNTS)(logits, target)
    assert 0.0 <= loss.item() < 1e-6


def test_lade_by_hand() -> None:
    alpha, lam = 0.3, 0.1  # lambda is the official ReMINE default
    prior = [c / sum(COUNTS) for c in COUNTS]
    n = len(LOGITS)
    # LADE-CE: cross-entropy on logits + log p_s.
    adjusted = [[v + math.log(p) for v, p in zip(row, prior, strict=True)] for row in LOGITS]
    lade_ce = cross_entropy(adjusted, TARGET)
    # LADER over the classes in the batch (0 and 2), uniform target prior 1/3.
    lader = 0.0
    for y in (0, 2):
        own = [row[y] for row, t in zip(LOGITS, TARGET, strict=True) if t == y]
        first = sum(own) / len(own)
        second = logsumexp([row[y] + math.log(1 / 3) - math.log(prior[y]) for row in LOGITS]) - math.log(n)
        lader -= prior[y] * (first - second - lam * second**2)
    assert value("lade", lade_alpha=alpha) == pytest.approx(lade_ce + alpha * lader, rel=1e-5)
    assert value("lade", lade_alpha=0.0) == pytest.approx(lade_ce, rel=1e-5)


def test_ldam_by_hand() -> None:
    max_margin, scale = 0.4, 2.0  # a small scale, so every sample (and margin) weighs in the value
    raw = [c**-0.25 for c in COUNTS]
    margins = [m * max_margin / max(raw) for m in raw]
    assert margins[2] == pytest.approx(max_margin)  # the rarest class gets the largest margin
    rows = []
    for row, y in zip(LOGITS, TARGET, strict=True):
        shifted = [v - (margins[y] if j == y else 0.0) for j, v in enumerate(row)]
        rows.append([scale * v for v in shifted])
    got = value("ldam", ldam_max_margin=max_margin, ldam_scale=scale)
    assert got == pytest.approx(cross_entropy(rows, TARGET), rel=1e-5)


@pytest.mark.parametrize(("first", "second"), [("ce", "f1"), ("focal", "f1"), ("ldam", "lade")])
def test_weighted_sum_equals_weighted_parts(first: str, second: str) -> None:
    w = 0.3
    combined = value(f"{first}+{second}", loss_weight=w)
    assert combined == pytest.approx(w * value(first) + (1 - w) * value(second), rel=1e-5)
    assert value(f" {first} + {second} ", loss_weight=w) == pytest.approx(combined, rel=1e-6)


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_gradients_flow_and_are_finite(name: str) -> None:
    logits = logits_tensor(requires_grad=True)
    loss = create_loss(TrainParams(loss=name, focal_alpha="balanced"), COUNTS)(logits, target_tensor())
    loss.backward()
    assert loss.ndim == 0 and loss.dtype == torch.float32
    assert torch.isfinite(loss)
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_zero_count_classes_stay_finite(name: str) -> None:
    logits = logits_tensor(requires_grad=True)
    loss = create_loss(TrainParams(loss=name, focal_alpha="balanced"), [4, 0, 0])(logits, target_tensor())
    loss.backward()
    assert torch.isfinite(loss)
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_confident_predictions_stay_finite(name: str) -> None:
    target = target_tensor()
    logits = (200.0 * torch.nn.functional.one_hot(target, 3).float()).requires_grad_()
    loss = create_loss(TrainParams(loss=name, focal_gamma=0.5), COUNTS)(logits, target)
    loss.backward()
    assert torch.isfinite(loss)
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_half_precision_logits_and_autocast_compute_in_float32(name: str) -> None:
    module = create_loss(TrainParams(loss=name), COUNTS)
    reference = module(logits_tensor(), target_tensor())
    half = module(logits_tensor().bfloat16(), target_tensor())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = module(logits_tensor(), target_tensor())
    assert half.dtype == torch.float32 and autocast.dtype == torch.float32
    assert autocast.item() == pytest.approx(reference.item(), rel=1e-5)
    assert half.item() == pytest.approx(reference.item(), rel=5e-2, abs=1e-3)  # bf16 rounds the logits themselves


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", ALL_LOSSES)
def test_cuda_matches_cpu(name: str) -> None:
    module = create_loss(TrainParams(loss=name, focal_alpha="balanced"), COUNTS)
    reference = module(logits_tensor(), target_tensor()).item()
    logits, target = logits_tensor().cuda(), target_tensor().cuda()
    assert module(logits, target).item() == pytest.approx(reference, rel=1e-5)
    with torch.autocast("cuda", dtype=torch.float16):
        assert module(logits, target).item() == pytest.approx(reference, rel=1e-5)
    assert module.cuda()(logits, target).item() == pytest.approx(reference, rel=1e-5)


def test_wrong_number_of_classes_is_reported() -> None:
    module = create_loss(TrainParams(loss="ldam"), [1, 2])
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        module(logits_tensor(), target_tensor())
