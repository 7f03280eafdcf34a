"""Pruning inside a fold and between folds.

A trial reports on one step axis laid out in blocks, one per fold: `max_epochs` epoch steps (that epoch's
validation macro F1), then one fold step (the mean best F1 of the folds done so far):

    fold 0: steps 0 .. E-1 epochs, step E summary | fold 1: steps E+1 .. 2E epochs, step 2E+1 summary | ...

How each pruner sees a trial (`python benchmarks/pruning.py` measures what each saves and costs):

- `median` (the shipped spaces' default) / `percentile`: `FoldPruner` compares a trial with the other finished
  trials at the same fold and epoch (a poor learning curve), and at each fold's end (a trial clearly worse fold
  after fold). Optuna's own percentile pruner would compare a trial's best value over all steps so far, mixing
  folds, so this one is ours.
- `halving` / `hyperband`: Optuna's successive halving / Hyperband on the step axis
  as it is: every trial reaches a step at the same fold and epoch, so a rung compares like with like. With
  `pruner_warmup_epochs` W, halving's rungs are steps W, 3W, 9W...: a trial must be in the top third there.
- `wilcoxon`: Optuna's `WilcoxonPruner`, built for one score per problem instance: it sees each fold's best F1
  with the fold as its step, only at fold ends, and tests the trial fold by fold against the best trial.

Every pruner is wrapped in `MinComplete`: nothing is pruned before `pruner_min_complete` trials have completed, so
a study always has the trials the export's default ensemble needs (a halving pruner once cut 7 of a study's first
8 trials at their first rung and left the export one trial).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.pruners import BasePruner, HyperbandPruner, NopPruner, SuccessiveHalvingPruner, WilcoxonPruner
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from automl.registry import Registry

#: Pruner name -> `(max_epochs, folds, warmup_epochs) -> BasePruner`.
PRUNERS: Registry[Callable[[int, int, int], BasePruner]] = Registry("pruner")


def epoch_step(fold: int, epoch: int, max_epochs: int) -> int:
    """The step of `epoch` (1-based) of `fold`."""
    return fold * (max_epochs + 1) + epoch - 1


def fold_step(fold: int, max_epochs: int) -> int:
    """The step of the summary after `fold`."""
    return fold * (max_epochs + 1) + max_epochs


def step_position(step: int, max_epochs: int) -> tuple[int, int | None]:
    """The fold of a step and its epoch (1-based), or None for the summary after the fold."""
    fold, offset = divmod(step, max_epochs + 1)
    return fold, None if offset == max_epochs else offset + 1


class FoldPruner(BasePruner):
    """Prune when a trial is below the `percentile` of finished trials at the same fold and epoch or fold end.

    Inside a fold it compares the best F1 of the fold so far; it waits `warmup_epochs` epochs in every fold and
    needs `min_trials` finished trials with a value at that step before it prunes anything.
    """

    def __init__(
        self,
        max_epochs: int,
        warmup_epochs: int = 2,
        epoch_percentile: float = 50.0,
        fold_percentile: float = 50.0,
        min_trials: int = 3,
    ):
        self.block = max_epochs + 1
        self.warmup_epochs = warmup_epochs
        self.epoch_percentile = epoch_percentile
        self.fold_percentile = fold_percentile
        self.min_trials = min_trials

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        fold, offset = divmod(step, self.block)
        is_summary = offset == self.block - 1
        if not is_summary and offset + 1 <= self.warmup_epochs:
            return False
        first = fold * self.block
        others = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        if is_summary:
            mine = trial.intermediate_values[step]
            theirs = [t.intermediate_values[step] for t in others if step in t.intermediate_values]
            percentile = self.fold_percentile
        else:
            mine = _best_between(trial, first, step)
            theirs = [v for t in others if (v := _best_between(t, first, step)) is not None]
            percentile = self.epoch_percentile
        if mine is None or len(theirs) < self.min_trials or np.isnan(mine):
            return False
        return bool(mine < np.nanpercentile(theirs, percentile))


def _best_between(trial: FrozenTrial, first: int, last: int) -> float | None:
    values = [v for s, v in trial.intermediate_values.items() if first <= s <= last]
    return max(values) if values else None


class _BestTrialOnly(NamedTuple):
    """The two things `WilcoxonPruner` asks of a study."""

    direction: StudyDirection
    best_trial: FrozenTrial


class FoldScoresPruner(BasePruner):
    """Show `inner` each trial as one score per finished fold (its best epoch F1), at fold ends only.

    For `WilcoxonPruner`, which pairs a trial's scores with the best trial's by step: the epoch steps inside a
    fold are a learning curve, not instances, and would make it pair epoch 3 of one fold with epoch 3 of another.
    """

    def __init__(self, inner: BasePruner, max_epochs: int):
        self.inner, self.block = inner, max_epochs + 1

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step % self.block != self.block - 1:
            return False
        try:
            best = study.best_trial
        except ValueError:  # no complete trial yet
            return False
        return self.inner.prune(_BestTrialOnly(study.direction, self._per_fold(best)), self._per_fold(trial))

    def _per_fold(self, trial: FrozenTrial) -> FrozenTrial:
        folds: dict[int, float] = {}
        for step, value in trial.intermediate_values.items():
            fold, offset = divmod(step, self.block)
            if offset != self.block - 1:
                folds[fold] = max(value, folds.get(fold, value))
        view = copy.copy(trial)
        view.intermediate_values = folds
        return view


class MinComplete(BasePruner):
    """`inner`'s decision, held back until the study has `min_complete` complete trials.

    `inner` still sees every report (successive halving records a trial's rung values when asked), so the trials
    run meanwhile count at its rungs later. Complete trials only grow, so once there are enough the count is not
    read again; before that it is read only when `inner` would prune.
    (Wrapped, Hyperband's samplers see the whole study rather than the trial's bracket.)
    """

    def __init__(self, inner: BasePruner, min_complete: int):
        self.inner, self.min_complete = inner, min_complete
        self._enough = min_complete <= 0

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        if not self.inner.prune(study, trial):
            return False
        if not self._enough:
            complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            self._enough = len(complete) >= self.min_complete
        return self._enough


def create_pruner(name: str, max_epochs: int, folds: int, warmup_epochs: int, min_complete: int = 0) -> BasePruner:
    """`median`: prune below the median; `percentile`: only the worst quarter; `hyperband` and `halving`
    (successive halving): Optuna's, from step `warmup_epochs` on; `wilcoxon`: Optuna's, across folds. None of
    them prunes before `min_complete` trials have completed."""
    inner = PRUNERS.create(name, max_epochs, folds, warmup_epochs)
    return inner if min_complete <= 0 or isinstance(inner, NopPruner) else MinComplete(inner, min_complete)


@PRUNERS.register("median")
def _median(max_epochs: int, folds: int, warmup_epochs: int) -> BasePruner:
    return FoldPruner(max_epochs, warmup_epochs)


@PRUNERS.register("percentile")
def _percentile(max_epochs: int, folds: int, warmup_epochs: int) -> BasePruner:
    return FoldPruner(max_epochs, warmup_epochs, epoch_percentile=25.0, fold_percentile=25.0)


@PRUNERS.register("hyperband")
def _hyperband(max_epochs: int, folds: int, warmup_epochs: int) -> BasePruner:
    return HyperbandPruner(min_resource=max(1, warmup_epochs), max_resource=folds * (max_epochs + 1))


@PRUNERS.register("halving")
def _halving(max_epochs: int, folds: int, warmup_epochs: int) -> BasePruner:
    return SuccessiveHalvingPruner(min_resource=max(1, warmup_epochs))


@PRUNERS.register("wilcoxon")
def _wilcoxon(max_epochs: int, folds: int, warmup_epochs: int) -> BasePruner:
    # With 5 folds a one-sided test reaches p = 0.125 after 3 folds all worse, 0.0625 after 4: at 0.2 it
    # may prune after fold 3 (no earlier: 2 folds give 0.25 at best).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return FoldScoresPruner(WilcoxonPruner(p_threshold=0.2, n_startup_steps=2), max_epochs)


@PRUNERS.register("none")
def _none(max_epochs: int, folds: int, warmup_epochs: int) -> BasePruner:
    return NopPruner()
