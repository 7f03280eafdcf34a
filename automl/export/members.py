"""The members of an export: the complete trials of a study, best first, each to be retrained from its configuration.

Mode `folds` ships one model per fold (the study's folds, with the seeds the search used, `seed + fold`), so each
model's predictions on its own validation fold are honest out-of-fold predictions. Mode `full` ships one model on
every training image for the median best epoch of the trial's folds (the learning-rate schedule runs as it did in
the search, stopped at that epoch). The models themselves live in the fold-model store (`store.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from automl.errors import AutomlError
from automl.search.ranking import best_trials
from automl.train.params import TrainParams

MODES = ("folds", "full")


@dataclass(frozen=True)
class MemberPlan:
    """A trial chosen for the export."""

    name: str
    trial: int
    study_value: float
    config: dict[str, Any]  # the trial's TrainParams.to_dict()
    best_epochs: list[int]  # per fold, from the search

    @property
    def params(self) -> TrainParams:
        return TrainParams.from_dict(self.config)


def pick_members(
    study: optuna.Study,
    top_k: int | None,
    distinct_backbones: bool = False,
    trials: Sequence[FrozenTrial] | None = None,
) -> list[MemberPlan]:
    """The `top_k` complete trials by value (every one with None; optionally at most one per backbone), best first;
    from `trials` when the study's trials were read already."""
    if top_k is not None and top_k < 1:
        raise AutomlError(f"--top-k {top_k}: an ensemble needs at least one member; use --top-k 1 or more")
    complete = [
        t for t in best_trials(study if trials is None else trials) if isinstance(t.user_attrs.get("config"), dict)
    ]
    if not complete:
        raise AutomlError(
            f"study {study.study_name!r} has no complete trials to export yet; run automl search "
            f"--task {study.user_attrs.get('task', study.study_name)} first (pruned and failed trials do not count)"
        )
    chosen, backbones = [], set()
    for trial in complete:
        backbone = trial.user_attrs["config"].get("backbone")
        if distinct_backbones and backbone in backbones:
            continue
        backbones.add(backbone)
        chosen.append(
            MemberPlan(
                name=f"trial{trial.number}",
                trial=trial.number,
                study_value=float(trial.value),
                config=dict(trial.user_attrs["config"]),
                best_epochs=[int(e) for e in trial.user_attrs.get("best_epoch", [])],
            )
        )
        if len(chosen) == top_k:
            break
    return chosen


def full_epochs(plan: MemberPlan) -> int:
    """The median best epoch of the trial's folds (at least 1)."""
    if not plan.best_epochs:
        raise AutomlError(f"trial {plan.trial} recorded no best epochs; export it with --mode folds")
    return max(1, int(round(float(np.median(plan.best_epochs)))))
