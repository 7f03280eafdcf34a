"""Adding a loss is one decorated function, here in a test module; a YAML space then searches it by name.

Poly-1 (Leng et al., "PolyLoss: A Polynomial Expansion Perspective of Classification Loss Functions", ICLR 2022):
cross-entropy plus epsilon * (1 - p_t).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import optuna
import pytest
import torch.nn.functional as F
from torch import Tensor, nn

from automl.errors import AutomlError
from automl.search.space import load_space
from automl.train.losses import LOSSES
from automl.train.params import TrainParams
from tests.search.helpers import automl, load


class Poly1Loss(nn.Module):
    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        log_pt = F.log_softmax(logits.float(), dim=1).gather(1, target[:, None]).squeeze(1)
        return (-log_pt + 1.0 - log_pt.exp()).mean()


@LOSSES.register("poly1")
def _poly1(params: TrainParams, class_counts: Sequence[int]) -> nn.Module:
    return Poly1Loss()


SPACE = """
settings: {folds: 2, max_epochs: 1, image_size: 32, seed: 0, pruner: none}
params:
  backbone: test_resnet
  batch_size: 32
  loss: {choices: [poly1, poly1+f1]}
  loss_weight: {low: 0.3, high: 0.9, when: {loss: poly1+f1}}
"""


def test_a_registered_loss_is_searched_from_a_yaml_space(demo: Path, tmp_path: Path) -> None:
    space = tmp_path / "poly.yaml"
    space.write_text(SPACE)
    home = tmp_path / "home"
    code, out = automl("search", "--task", "mask", "--trials", "2", "--space", space, "--data", demo, "--home", home)
    assert code == 0, out
    trials = load(home).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert {t.params["loss"] for t in trials} <= {"poly1", "poly1+f1"}
    assert all(0 <= t.value <= 1 for t in trials)


def test_a_misspelt_registered_loss_is_named_with_the_allowed_ones(tmp_path: Path) -> None:
    space = tmp_path / "typo.yaml"
    space.write_text("params: {loss: {choices: [ce, poyl1]}}")
    with pytest.raises(AutomlError, match=r"params\.loss\.choices\[1\]: 'poyl1' is not one of: ce, .*poly1"):
        load_space(space)
