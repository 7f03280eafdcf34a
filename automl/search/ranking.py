"""The one order of a study's trials by result: complete trials, the best value first, the earlier trial on a tie.

The search keeps the fold weights of the top trials in this order, the export picks its members in it, and the
report shows the best trials' curves in it.
"""

from __future__ import annotations

from collections.abc import Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState


def best_trials(study: optuna.Study | Sequence[FrozenTrial], n: int | None = None) -> list[FrozenTrial]:
    """The `n` best complete trials (every one with None), best first; ties: the earlier trial. `study` may be its
    trials, read already."""
    trials = study.get_trials(deepcopy=False) if isinstance(study, optuna.Study) else study
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    return sorted(complete, key=lambda t: (-t.value, t.number))[:n]
