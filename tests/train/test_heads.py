"""The heads: each trains on demo data and gives valid group (or 18-class) probabilities, whatever it outputs."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from automl.data.cache import ImageSets
from automl.data.dataset import DataSource, load_dataset
from automl.data.demo import write_demo_data
from automl.data.face_crop import FaceCrop
from automl.data.folds import assign_folds
from automl.data.tasks import AgeTask
from automl.errors import AutomlError
from automl.train.engine import FoldData, train_fold
from automl.train.heads import (
    AGE_HEADS,
    BinsHead,
    MultiTaskHead,
    OrdinalHead,
    RegressionHead,
    create_head,
    create_model,
    fine_age_edges,
    resolve_head_params,
)
from automl.train.params import TrainParams
from automl.train.targets import LEFT_OUT, training_ages, training_labels

TINY = TrainParams(
    backbone="test_resnet", image_size=32, epochs=1, batch_size=16, lr=3e-3, schedule="constant", crop="none"
)
AGES = np.arange(18, 61, dtype=np.float64)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("heads")
    dataset = load_dataset(DataSource(write_demo_data(root / "demo", people=40, seed=4, eval_people=0)))
    images = ImageSets(root / "home", 32, dataset.train["path"]).get(FaceCrop())
    return dataset, images


def fold_data(demo, task_name: str, params: TrainParams) -> FoldData:
    dataset, images = demo
    task = dataset.task(task_name)
    true = task.labels(dataset.train)
    folds = assign_folds(true, dataset.train["group"].to_numpy(), 3, seed=0)
    return FoldData(
        images=images,
        true_labels=true,
        train_labels=training_labels(task, dataset.train, params),
        train_index=np.flatnonzero(folds != 0),
        val_index=np.flatnonzero(folds == 0),
        num_classes=task.num_classes,
        task=task,
        ages=training_ages(task, dataset.train, params),
    )


def assert_probabilities(probs: np.ndarray, classes: int) -> None:
    assert probs.shape[1] == classes and np.isfinite(probs).all()
    assert (probs >= 0).all() and np.allclose(probs.sum(1), 1.0, atol=1e-5)


@pytest.mark.parametrize("age_head", AGE_HEADS)
def test_each_age_head_trains_and_gives_group_probabilities(demo, age_head: str) -> None:
    params = replace(TINY, age_head=age_head, head_hidden=8 if age_head == "bins" else 0, head_dropout=0.2)
    data = fold_data(demo, "age", params)
    result = train_fold(data, params)
    assert result.val_probs.shape[0] == len(data.val_index)
    assert_probabilities(result.val_probs, 3)
    assert np.isfinite(result.curve[0].train_loss) and np.isfinite(result.curve[0].val_loss)
    # The resolved parameters rebuild the head without the data, and give the same probabilities.
    assert result.params.age_group_edges == (30, 60)
    if age_head == "bins":
        assert set(result.params.age_bin_edges) >= {30, 60} and len(result.params.age_bin_edges) > 2
    model = create_model(result.params, 3)
    model.load_state_dict(result.state_dict)
    assert type(model.head).__name__ == type(create_head(result.params, 4, 3)).__name__


def test_multitask_composes_its_heads_argmaxes(demo) -> None:
    params = replace(TINY, multitask=True, age_head="ordinal", age_loss_weight=2.0, head_init="xavier")
    data = fold_data(demo, "all", params)
    result = train_fold(data, params)
    assert_probabilities(result.val_probs, 18)
    model = create_model(result.params, 18).eval()
    model.load_state_dict(result.state_dict)
    head = model.head
    assert isinstance(head, MultiTaskHead)
    with torch.no_grad():
        outputs = model(torch.randn(12, 3, 32, 32))
    mask, gender, age = (p.argmax(1) for p in head.part_probs(outputs))
    for part in head.part_probs(outputs):
        assert torch.allclose(part.sum(1), torch.ones(12), atol=1e-5)
    assert torch.equal(head.probs(outputs).argmax(1), mask * 6 + gender * 3 + age)


def test_multitask_trains_with_every_age_head_and_mixing(demo) -> None:
    for age_head in ("bins", "regression"):
        params = replace(TINY, multitask=True, age_head=age_head, mix="vcutmix", mix_prob=1.0, head_hidden=8)
        result = train_fold(fold_data(demo, "all", params), params)
        assert_probabilities(result.val_probs, 18)


def test_age_options_with_age_heads(demo) -> None:
    dataset, _ = demo
    table = dataset.train
    params = replace(TINY, age_head="regression", age_train_threshold=58, age_drop_borderline=(55, 56))
    ages = training_ages(dataset.task("age"), table, params)
    assert (ages[table["age"].between(58, 59).to_numpy()] == 60).all()
    assert np.array_equal(ages[table["age"] < 58], table["age"][table["age"] < 58].to_numpy())
    labels = training_labels(dataset.task("age"), table, params)
    assert (labels[table["age"].between(55, 56).to_numpy()] == LEFT_OUT).all()
    result = train_fold(fold_data(demo, "age", params), params)  # dropped rows are left out of the ages too
    assert_probabilities(result.val_probs, 3)
    assert training_ages(dataset.task("mask"), table, params) is None


def test_bins_nest_inside_the_groups_and_sum_to_them() -> None:
    edges = fine_age_edges((30, 60), AGES, 5)
    assert edges == (23, 28, 30, 35, 40, 45, 50, 55, 60)
    params = resolve_head_params(replace(TINY, age_head="bins"), AgeTask(), AGES)
    head = BinsHead(4, params)
    logits = torch.randn(7, head.width)
    fine = logits.softmax(1)
    groups = head.probs(logits)
    assert torch.allclose(groups.sum(1), torch.ones(7))
    assert torch.allclose(groups[:, 0], fine[:, :3].sum(1)) and torch.allclose(groups[:, 2], fine[:, -1])
    assert head.targets(np.zeros(3), np.array([18.0, 29.0, 60.0])).tolist() == [0, 2, 9]


def test_ordinal_probabilities_sum_to_one_even_when_not_monotone() -> None:
    head = OrdinalHead(4, resolve_head_params(replace(TINY, age_head="ordinal"), AgeTask(), AGES))
    logits = torch.tensor([[-3.0, 2.0], [2.0, -2.0], [5.0, 5.0], [-5.0, -5.0]])  # the first says P(>=60) > P(>=30)
    probs = head.probs(logits)
    assert (probs >= 0).all() and torch.allclose(probs.sum(1), torch.ones(4))
    assert probs.argmax(1).tolist()[1:] == [1, 2, 0]


def test_regression_boundary_offset_moves_the_groups() -> None:
    def group_of(age: float, offset: float) -> int:
        params = resolve_head_params(replace(TINY, age_head="regression", age_boundary_offset=offset), AgeTask(), AGES)
        head = RegressionHead(4, params)
        output = torch.tensor([[(age - head.centre) / head.spread]])
        probs = head.probs(output)
        assert torch.allclose(probs.sum(1), torch.ones(1))
        return int(probs.argmax(1))

    assert group_of(58.0, 0.0) == 1 and group_of(58.0, -2.0) == 2 and group_of(61.0, 0.0) == 2
    assert group_of(25.0, 0.0) == 0 and group_of(31.0, 0.0) == 1


def test_head_options_and_tasks_are_checked(demo) -> None:
    dataset, _ = demo
    with pytest.raises(AutomlError, match="applies to task age"):
        resolve_head_params(replace(TINY, age_head="bins"), dataset.task("mask"), AGES)
    with pytest.raises(AutomlError, match="multitask needs task all"):
        resolve_head_params(replace(TINY, multitask=True), dataset.task("age"), AGES)
    with pytest.raises(AutomlError, match="unknown age_head 'tree'; allowed: groups, bins, regression, ordinal"):
        create_head(replace(TINY, age_head="tree", age_group_edges=(30, 60)), 8, 3)
    with pytest.raises(AutomlError, match="loss weights"):
        no_weights = {"mask_loss_weight": 0.0, "gender_loss_weight": 0.0, "age_loss_weight": 0.0}
        resolve_head_params(replace(TINY, multitask=True, **no_weights), dataset.task("all"), AGES)
    zeros = create_head(replace(TINY, head_init="zeros", head_hidden=4), 8, 3)
    assert torch.allclose(zeros.probs(zeros(torch.randn(5, 8)).detach()), torch.full((5, 3), 1 / 3))
