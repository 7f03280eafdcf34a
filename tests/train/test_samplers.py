"""Samplers against class imbalance: shares over many draws, epoch lengths, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, WeightedRandomSampler

from automl.errors import AutomlError
from automl.train.params import TrainParams
from automl.train.samplers import SAMPLERS, OversampleSampler, class_counts, create_sampler

# 600 / 300 / 100 images of classes 0 / 1 / 2.
LABELS = np.repeat(np.arange(3), [600, 300, 100])


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def shares(indices: list[int], labels: np.ndarray = LABELS, num_classes: int = 3) -> np.ndarray:
    counts = np.bincount(labels[np.asarray(indices)], minlength=num_classes)
    return counts / counts.sum()


def test_samplers_registry() -> None:
    assert SAMPLERS.names() == ("none", "weighted", "oversample")


def test_class_counts() -> None:
    assert class_counts(np.array([0, 2, 2, 4]), 6).tolist() == [1, 0, 2, 0, 1, 0]
    with pytest.raises(AutomlError, match="5"):
        class_counts(np.array([0, 5]), 5)


def test_none_lets_the_loader_shuffle() -> None:
    assert create_sampler(LABELS, TrainParams(sampler="none"), gen()) is None


def test_unknown_sampler_names_the_allowed_ones() -> None:
    with pytest.raises(AutomlError, match="none, weighted, oversample"):
        create_sampler(LABELS, TrainParams(sampler="smote"), gen())


def draw_weighted(power: float, epochs: int = 20) -> list[int]:
    sampler = create_sampler(LABELS, TrainParams(sampler="weighted", sampler_power=power), gen())
    assert isinstance(sampler, WeightedRandomSampler)
    assert len(sampler) == len(LABELS)
    return [i for _ in range(epochs) for i in sampler]


def test_weighted_power_one_balances_the_classes() -> None:
    assert shares(draw_weighted(1.0)) == pytest.approx([1 / 3] * 3, abs=0.02)


def test_weighted_power_zero_keeps_the_data_shares() -> None:
    assert shares(draw_weighted(0.0)) == pytest.approx([0.6, 0.3, 0.1], abs=0.02)


def test_weighted_power_half_is_in_between() -> None:
    expected = np.array([600, 300, 100]) ** 0.5
    assert shares(draw_weighted(0.5)) == pytest.approx(expected / expected.sum(), abs=0.02)


def test_weighted_is_reproducible_with_the_generator() -> None:
    def first_epoch(seed: int) -> list[int]:
        return list(create_sampler(LABELS, TrainParams(sampler="weighted"), gen(seed)))

    assert first_epoch(3) == first_epoch(3)
    assert first_epoch(3) != first_epoch(4)


def oversampler(factor: float, classes: tuple[int, ...] = (2,), seed: int = 0) -> OversampleSampler:
    params = TrainParams(sampler="oversample", oversample_classes=classes, oversample_factor=factor)
    sampler = create_sampler(LABELS, params, gen(seed))
    assert isinstance(sampler, OversampleSampler)
    return sampler


@pytest.mark.parametrize(("factor", "length"), [(1.0, 1000), (2.0, 1100), (2.5, 1150), (3.25, 1225)])
def test_oversample_epoch_length(factor: float, length: int) -> None:
    sampler = oversampler(factor)
    assert len(sampler) == length
    for _ in range(3):
        assert len(list(sampler)) == length  # the same every epoch: len(loader) stays true


def test_oversample_draws_the_chosen_classes_factor_times() -> None:
    sampler = oversampler(2.5, classes=(1, 2))
    chosen = LABELS > 0
    epochs = 40
    draws = np.zeros(len(LABELS), dtype=int)
    for _ in range(epochs):
        epoch = np.bincount(list(sampler), minlength=len(LABELS))
        assert (epoch[~chosen] == 1).all()  # the others exactly once per epoch
        assert set(np.unique(epoch[chosen])) == {2, 3}  # twice, plus once more for half of them
        assert np.bincount(LABELS, weights=epoch).tolist() == [600, 750, 250]
        draws += epoch
    per_image = draws[chosen] / epochs
    assert per_image.mean() == pytest.approx(2.5)
    # The extra copy goes to different images each epoch: every chosen image averages ~2.5 draws.
    assert per_image == pytest.approx(np.full(chosen.sum(), 2.5), abs=0.4)


def test_oversample_is_shuffled_and_covers_every_image() -> None:
    epoch = list(oversampler(2.0))
    assert set(epoch) == set(range(len(LABELS)))
    assert epoch != sorted(epoch)
    # Copies of one image are spread through the epoch, not adjacent.
    assert shares(epoch[:200])[2] == pytest.approx(200 / 1100, abs=0.1)


def test_oversample_same_seed_same_order_and_epochs_differ() -> None:
    a, b = oversampler(2.5, seed=7), oversampler(2.5, seed=7)
    first_a, first_b = list(a), list(b)
    assert first_a == first_b
    second_a = list(a)
    assert second_a != first_a
    assert second_a == list(b)
    assert list(oversampler(2.5, seed=8)) != first_a


def test_oversample_works_in_a_data_loader() -> None:
    loader = DataLoader(list(range(len(LABELS))), batch_size=64, sampler=oversampler(1.5))
    assert len(loader) == -(-1050 // 64)
    assert sum(len(batch) for batch in loader) == 1050


def test_oversample_class_outside_the_labels_is_named() -> None:
    with pytest.raises(AutomlError, match="7"):
        oversampler(2.0, classes=(2, 7))
    with pytest.raises(AutomlError, match="-1"):
        oversampler(2.0, classes=(-1,))


def test_oversample_class_absent_from_these_labels_but_in_the_task() -> None:
    params = TrainParams(sampler="oversample", oversample_classes=(5,), oversample_factor=3.0)
    sampler = create_sampler(LABELS, params, gen(), num_classes=6)
    assert len(sampler) == len(LABELS)
    with pytest.raises(AutomlError, match="5"):
        create_sampler(LABELS, params, gen())


def test_oversample_without_classes_is_a_user_error() -> None:
    with pytest.raises(AutomlError, match="oversample_classes"):
        create_sampler(LABELS, TrainParams(sampler="oversample", oversample_classes=()), gen())


def test_labels_must_be_integer_class_codes() -> None:
    with pytest.raises(AutomlError):
        create_sampler(np.array([0.5, 1.0]), TrainParams(sampler="weighted"), gen())
    with pytest.raises(AutomlError):
        create_sampler(np.array([], dtype=int), TrainParams(sampler="weighted"), gen())
