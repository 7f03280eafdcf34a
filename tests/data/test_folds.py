"""Folds: grouped by person, stratified by label, the same for the same seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from automl.data.dataset import DataSource, load_dataset
from automl.data.demo import write_demo_data
from automl.data.folds import assign_folds, fold_class_counts
from tests.data.test_dataset import CROPS


def assert_grouped_and_stratified(labels: np.ndarray, groups: np.ndarray, folds: np.ndarray, tolerance: float) -> None:
    per_group = {}
    for group, fold in zip(groups, folds, strict=True):
        assert per_group.setdefault(group, fold) == fold, f"group {group} is in two folds"
    counts = fold_class_counts(labels, folds, labels.max() + 1)
    whole = np.bincount(labels) / len(labels)
    shares = counts / counts.sum(axis=1, keepdims=True)
    assert np.abs(shares - whole).max() < tolerance, shares


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo_data(tmp_path_factory.mktemp("demo") / "d", people=60, seed=1)


@pytest.mark.parametrize("task", ["mask", "gender", "age", "all"])
def test_demo_folds_keep_people_together(demo: Path, task: str) -> None:
    dataset = load_dataset(DataSource(demo))
    labels = dataset.task(task).labels(dataset.train)
    groups = dataset.train["group"].to_numpy()
    folds = assign_folds(labels, groups, 5, seed=0)
    assert set(folds) == {0, 1, 2, 3, 4}
    # mask shares are the same in every person (5/1/1 of 7); the others move by whole people.
    assert_grouped_and_stratified(labels, groups, folds, tolerance=0.02 if task == "mask" else 0.15)


def test_real_crops_folds_keep_source_photos_together() -> None:
    if not CROPS.exists():
        pytest.skip("shared face-mask-crops data not present")
    dataset = load_dataset(DataSource(CROPS, label_columns=("mask",), group_column="group"))
    labels = dataset.task("mask").labels(dataset.train)
    groups = dataset.train["group"].to_numpy()
    assert_grouped_and_stratified(labels, groups, assign_folds(labels, groups, 5, seed=0), tolerance=0.05)


def test_same_seed_same_folds() -> None:
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(40), 3)
    labels = rng.integers(0, 3, len(groups))
    first = assign_folds(labels, groups, 4, seed=7)
    assert np.array_equal(first, assign_folds(labels, groups, 4, seed=7))
    assert not np.array_equal(first, assign_folds(labels, groups, 4, seed=8))
