"""FoldPruner: compares a trial with others at the same fold and epoch, and at each fold's end."""

from __future__ import annotations

import optuna
import pytest

from automl.errors import AutomlError
from automl.search.pruning import FoldPruner, create_pruner, epoch_step, fold_step

EPOCHS = 3


def finished_trial(study: optuna.Study, curves: list[list[float]]) -> None:
    """A trial that trained `curves` (one list of epoch F1s per fold) and completed."""
    trial = study.ask()
    for fold, curve in enumerate(curves):
        for epoch, f1 in enumerate(curve, start=1):
            trial.report(f1, epoch_step(fold, epoch, EPOCHS))
        trial.report(sum(max(c) for c in curves[: fold + 1]) / (fold + 1), fold_step(fold, EPOCHS))
    study.tell(trial, max(max(c) for c in curves))


@pytest.fixture
def study() -> optuna.Study:
    study = optuna.create_study(direction="maximize", pruner=FoldPruner(EPOCHS, warmup_epochs=1, min_trials=3))
    for level in (0.6, 0.7, 0.8):
        finished_trial(study, [[level - 0.1, level, level], [level - 0.1, level, level]])
    return study


def test_the_step_layout_gives_every_fold_its_own_block() -> None:
    assert [epoch_step(0, e, 3) for e in (1, 2, 3)] == [0, 1, 2]
    assert fold_step(0, 3) == 3 and epoch_step(1, 1, 3) == 4 and fold_step(1, 3) == 7


def test_waits_for_warmup_then_prunes_a_poor_curve(study: optuna.Study) -> None:
    trial = study.ask()
    trial.report(0.1, epoch_step(0, 1, EPOCHS))
    assert not trial.should_prune()  # epoch 1 is warm-up
    trial.report(0.2, epoch_step(0, 2, EPOCHS))
    assert trial.should_prune()  # best 0.2 at epoch 2 against 0.6 / 0.7 / 0.8


def test_keeps_a_good_curve_and_compares_within_the_fold(study: optuna.Study) -> None:
    trial = study.ask()
    trial.report(0.95, epoch_step(0, 3, EPOCHS))  # a great first fold ...
    trial.report(0.2, epoch_step(1, 1, EPOCHS))
    assert not trial.should_prune()  # ... epoch 1 of fold 1 is warm-up
    trial.report(0.75, epoch_step(1, 2, EPOCHS))
    assert not trial.should_prune()  # 0.75 is above the median (0.7) at fold 1, epoch 2
    trial.report(0.5, epoch_step(1, 3, EPOCHS))
    assert not trial.should_prune()  # the fold's best so far (0.75) counts, not the last epoch


def test_prunes_a_trial_worse_fold_after_fold(study: optuna.Study) -> None:
    trial = study.ask()
    trial.report(0.62, fold_step(0, EPOCHS))
    assert trial.should_prune()  # mean F1 after fold 0 below the median of 0.6 / 0.7 / 0.8


def test_needs_enough_finished_trials() -> None:
    study = optuna.create_study(direction="maximize", pruner=FoldPruner(EPOCHS, warmup_epochs=0, min_trials=3))
    finished_trial(study, [[0.9, 0.9, 0.9]])
    trial = study.ask()
    trial.report(0.0, epoch_step(0, 1, EPOCHS))
    assert not trial.should_prune()


def test_pruner_names() -> None:
    assert isinstance(create_pruner("median", EPOCHS, 3, 1), FoldPruner)
    assert isinstance(create_pruner("none", EPOCHS, 3, 1), optuna.pruners.NopPruner)
    assert isinstance(create_pruner("hyperband", EPOCHS, 3, 1), optuna.pruners.HyperbandPruner)
    with pytest.raises(AutomlError, match="median, percentile, hyperband, none"):
        create_pruner("sometimes", EPOCHS, 3, 1)
