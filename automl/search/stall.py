"""`--stop-after N`: a study is stuck when its last N finished trials did not improve the best value.

Optuna has no such stop (its issue 4292 asks for one; the terminator module is deprecated). Counted from the
storage, in the order trials finished, so every worker on a study, on any machine, sees the same count and stops.
"""

from __future__ import annotations

import datetime

import optuna
from optuna.trial import TrialState

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def trials_since_best(study: optuna.Study) -> int:
    """How many finished trials (complete or pruned) have finished since the best value last improved."""
    finished = study.get_trials(deepcopy=False, states=FINISHED)
    ordered = sorted(finished, key=lambda t: (t.datetime_complete or datetime.datetime.max, t.number))
    best, since = None, 0
    for trial in ordered:
        if trial.state == TrialState.COMPLETE and trial.value is not None and (best is None or trial.value > best):
            best, since = trial.value, 0
        else:
            since += 1
    return since
