"""The study's sampler: TPE whose random draws for a trial come from the study seed and the trial's number.

Trial numbers are handed out by the storage, one per trial, across every process and machine on the study. So a
worker alone on a fresh study draws the same trials every time it is run with the same seed (reproducible), and
workers that share a study, on one machine or many, never draw the same start-up trials: their trials have
other numbers, hence other seeds. A seed per process (seed + worker index) repeated itself on every machine.
Later (model-based) draws also depend on the finished trials, so with several workers they follow the timing.
"""

from __future__ import annotations

import numpy as np
import optuna
from optuna.trial import FrozenTrial


class TrialSeededTPE(optuna.samplers.TPESampler):
    def __init__(self, seed: int, **kwargs: object) -> None:
        super().__init__(seed=seed, **kwargs)  # type: ignore[arg-type]
        self._study_seed = seed

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        trial_seed = int(np.random.SeedSequence([self._study_seed, trial.number]).generate_state(1)[0])
        # Optuna has no public way to seed a sampler per trial; TPE draws from these two generators only.
        self._rng.rng.seed(trial_seed)
        self._random_sampler._rng.rng.seed(trial_seed)
        super().before_trial(study, trial)
