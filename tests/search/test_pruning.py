"""FoldPruner: compares a trial with others at the same fold and epoch, and at each fold's end."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest

from automl.errors import AutomlError
from automl.search.pruning import FoldPruner, FoldScoresPruner, MinComplete, create_pruner, epoch_step, fold_step

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
    assert isinstance(create_pruner("halving", EPOCHS, 3, 1), optuna.pruners.SuccessiveHalvingPruner)
    assert isinstance(create_pruner("wilcoxon", EPOCHS, 3, 1), FoldScoresPruner)
    with pytest.raises(AutomlError, match="median, percentile, hyperband, halving, wilcoxon, none"):
        create_pruner("sometimes", EPOCHS, 3, 1)


# Every pruner on hand-made learning curves: 5 folds x 4 epochs, reported as the objective does.
FOLDS, CURVE_EPOCHS, WARMUP = 5, 4, 1


def steps_of(level: float) -> list[tuple[int, float]]:
    """The (step, value) reports of a trial whose every epoch scores `level`, in the objective's order."""
    steps = []
    for fold in range(FOLDS):
        steps += [(epoch_step(fold, epoch, CURVE_EPOCHS), level) for epoch in range(1, CURVE_EPOCHS + 1)]
        if fold < FOLDS - 1:
            steps.append((fold_step(fold, CURVE_EPOCHS), level))
    return steps


def first_pruned_step(study: optuna.Study, level: float) -> int | None:
    """Report a flat curve at `level` step by step; the step at which the pruner first cuts it, or None."""
    trial = study.ask()
    for step, value in steps_of(level):
        trial.report(value, step)
        if trial.should_prune():
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return step
    study.tell(trial, level)
    return None


def study_with_finished_trials(pruner_name: str) -> optuna.Study:
    """Twelve finished trials between 0.5 and 0.7, each asking the pruner at every step as the objective does
    (successive halving and hyperband record their rungs then); whatever the pruner says, they finish."""
    pruner = create_pruner(pruner_name, CURVE_EPOCHS, FOLDS, WARMUP)
    study = optuna.create_study(  # named: hyperband draws each trial's bracket from the study name
        study_name="curves", direction="maximize", pruner=pruner, sampler=optuna.samplers.RandomSampler(0)
    )
    for index in range(12):
        level = 0.5 + 0.2 * ((index * 5) % 12) / 11  # the levels in a shuffled order
        trial = study.ask()
        for step, value in steps_of(level):
            trial.report(value + 0.01 * (step % 3), step)  # per-fold / per-epoch differences, as real curves
            trial.should_prune()
        study.tell(trial, level)
    return study


def first_allowed_step(pruner_name: str, study: optuna.Study) -> int:
    """Where each pruner may first cut the next trial."""
    if pruner_name in ("median", "percentile"):
        return epoch_step(0, WARMUP + 1, CURVE_EPOCHS)  # after the warm-up epochs of the first fold
    if pruner_name == "halving":
        return WARMUP  # the first rung: min_resource steps
    if pruner_name == "hyperband":  # the first rung of the bracket that the next trial's number falls in
        pruner = study.pruner
        assert isinstance(pruner, optuna.pruners.HyperbandPruner)
        return WARMUP * 3 ** pruner._get_bracket_id(study, SimpleNamespace(number=len(study.trials)))
    if pruner_name == "wilcoxon":
        return fold_step(2, CURVE_EPOCHS)  # three folds all worse: p = 0.125 < 0.2; two give 0.25 at best
    raise AssertionError(pruner_name)


@pytest.mark.parametrize("pruner_name", ["median", "percentile", "hyperband", "halving", "wilcoxon"])
def test_a_losing_trial_is_pruned_at_the_first_allowed_step(pruner_name: str) -> None:
    study = study_with_finished_trials(pruner_name)
    expected = first_allowed_step(pruner_name, study)
    assert first_pruned_step(study, 0.1) == expected


@pytest.mark.parametrize("pruner_name", ["median", "percentile", "hyperband", "halving", "wilcoxon"])
def test_a_winning_trial_is_never_pruned(pruner_name: str) -> None:
    study = study_with_finished_trials(pruner_name)
    assert first_pruned_step(study, 0.9) is None


def test_tpe_learns_from_pruned_trials_by_how_far_they_got_across_folds() -> None:
    """TPE ranks pruned trials by their last step, then its value: the step layout must order them by how much
    they trained, across folds. Only pruned trials here, so TPE's good group (the best 10%: 3 of 30) is the three
    that got into fold 1 (x near 0.8), not those with a higher F1 at an earlier step (a fold-0 summary, x near 0.2).
    """
    sampler = optuna.samplers.TPESampler(seed=0, multivariate=True, group=True)  # as the search makes it
    study = optuna.create_study(direction="maximize", sampler=sampler)
    distributions = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    groups = [
        (3, 0.8, epoch_step(1, 2, EPOCHS), 0.5),  # pruned in fold 1
        (13, 0.2, fold_step(0, EPOCHS), 0.7),  # pruned after fold 0, at a higher F1
        (14, 0.5, epoch_step(0, 2, EPOCHS), 0.3),  # pruned early in fold 0
    ]
    for count, centre, last_step, f1 in groups:
        for index in range(count):
            study.add_trial(
                optuna.trial.create_trial(
                    state=optuna.trial.TrialState.PRUNED, params={"x": centre + 0.01 * (index - count // 2)},
                    distributions=distributions, intermediate_values={step: f1 for step in range(last_step + 1)},
                )
            )  # fmt: skip
    suggested = []
    for _ in range(20):
        trial = study.ask()
        suggested.append(trial.suggest_float("x", 0.0, 1.0))
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    assert sum(x > 0.65 for x in suggested) >= 15, sorted(round(x, 2) for x in suggested)


class _AlwaysPrune(optuna.pruners.BasePruner):
    def __init__(self) -> None:
        self.asked = 0

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        self.asked += 1
        return True


def test_min_complete_prunes_nothing_before_three_trials_completed() -> None:
    inner = _AlwaysPrune()
    study = optuna.create_study(direction="maximize", pruner=MinComplete(inner, 3))

    def objective(trial: optuna.Trial) -> float:
        for epoch in range(1, EPOCHS + 1):
            trial.report(0.5, epoch_step(0, epoch, EPOCHS))
            if trial.should_prune():
                raise optuna.TrialPruned
        return 0.5

    study.optimize(objective, n_trials=6)
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE"] * 3 + ["PRUNED"] * 3
    assert inner.asked == 3 * EPOCHS + 3  # the inner pruner heard every report (halving records its rungs so)


def test_min_complete_wraps_every_pruner_but_none() -> None:
    wrapped = create_pruner("halving", EPOCHS, 3, 1, min_complete=3)
    assert isinstance(wrapped, MinComplete) and wrapped.min_complete == 3
    assert isinstance(wrapped.inner, optuna.pruners.SuccessiveHalvingPruner)
    assert isinstance(create_pruner("none", EPOCHS, 3, 1, min_complete=3), optuna.pruners.NopPruner)
