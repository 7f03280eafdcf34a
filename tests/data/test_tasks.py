"""The mixed-radix code of a combined task: one definition for the labels, the multitask head and --combine."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from automl.data.tasks import (
    AgeTask,
    CategoricalTask,
    CombinedTask,
    combined_codes,
    joint_probs,
    marginal_probs,
    part_codes,
)

ALL = CombinedTask(
    "all",
    (
        CategoricalTask("mask", ("wear", "incorrect", "not_wear")),
        CategoricalTask("gender", ("male", "female")),
        AgeTask(),
    ),
)


def test_the_competition_code_is_mask_times_6_plus_gender_times_3_plus_age() -> None:
    table = pd.DataFrame(
        {"mask": ["not_wear", "wear", "incorrect"], "gender": ["female", "male", "female"], "age": [61, 20, 45]}
    )
    assert ALL.labels(table).tolist() == [2 * 6 + 1 * 3 + 2, 0, 1 * 6 + 1 * 3 + 1]
    assert (
        ALL.classes[17] == "not_wear/female/>=60" and ALL.classes[4] == "wear/female/30-59" and len(ALL.classes) == 18
    )
    codes = np.arange(18)
    parts = part_codes(codes, ALL.sizes)
    assert [p.tolist()[:4] for p in parts] == [[0, 0, 0, 0], [0, 0, 0, 1], [0, 1, 2, 0]]
    assert combined_codes(parts, ALL.sizes).tolist() == codes.tolist()


def test_joint_probabilities_follow_the_code_and_give_back_their_parts() -> None:
    rng = np.random.default_rng(0)
    parts = [rng.dirichlet(np.ones(n), size=5) for n in ALL.sizes]
    joint = joint_probs(parts)
    assert joint.shape == (5, 18) and np.allclose(joint.sum(1), 1)
    assert np.isclose(joint[0, 2 * 6 + 1 * 3 + 2], parts[0][0, 2] * parts[1][0, 1] * parts[2][0, 2])
    assert all(np.allclose(a, b) for a, b in zip(marginal_probs(joint, ALL.sizes), parts, strict=True))
    on_torch = joint_probs([torch.from_numpy(p) for p in parts])  # the multitask head's tensors: the same product
    assert np.allclose(on_torch.numpy(), joint)
