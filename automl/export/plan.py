"""What an export will train, and how long it will take, decided before any work.

Judging a candidate trial on its own out-of-fold predictions needs its fold models: those the search kept cost
nothing, the others one fold fit each, and every extra cross-validation split (`--cv-repeats`) as many again. The
plan takes candidates in order of value (the best trial first, then those whose models the search kept, then the
rest by study value) while they fit the bound: by default a tenth of the fold fits the search itself trained
(`FIT_SHARE`), or with `--budget` the estimated seconds. Estimates come from each trial's own recorded time (its
`seconds` attribute over the folds it trained). What does not fit is left out and said.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from optuna.trial import FrozenTrial

from automl.search.budget import describe_duration
from automl.search.objective import TIME_SPENT
from automl.search.pruning import step_position

#: The default bound of an export: this share of the search's fold fits.
FIT_SHARE = 0.10


@dataclass(frozen=True)
class Candidate:
    """A trial the export may judge: its fold models to train (and those the search kept), and their time."""

    name: str
    trial: int
    study_value: float
    fits: int  # fold models to train: the study split's not kept, and every other split's
    kept: int  # fold models the search kept: copied, not trained
    seconds_per_fit: float | None  # from the trial's recorded time; None when the study recorded none

    @property
    def seconds(self) -> float | None:
        return None if self.seconds_per_fit is None else self.fits * self.seconds_per_fit


@dataclass
class ExportPlan:
    """The candidates to judge, in the order they are trained, and those left out (with why)."""

    chosen: list[Candidate]
    left_out: list[tuple[Candidate, str]] = field(default_factory=list)
    search_fits: int = 0  # fold models the search trained, every trial counted
    fit_limit: int | None = None  # the bound in fold fits (the default), or None with a time budget
    budget: float | None = None  # seconds
    shipped_fits: int = 0  # mode full: one model per shipped member, trained after the choice (at most this many)
    # --repeats-for shipped: the other splits' fold models of a shipped member (this many), trained after the choice
    # for the members best first while the bound leaves room (the candidates leave room for `reserved` of them)
    shipped_each: int = 0
    reserved: int = 0

    @property
    def fits(self) -> int:
        return sum(c.fits for c in self.chosen) + self.shipped_fits

    @property
    def seconds(self) -> float | None:
        times = [c.seconds for c in self.chosen]
        if any(t is None for t in times) or (self.shipped_fits and not self.chosen):  # mode full: no candidate timed
            return None
        full = self.shipped_fits * max((c.seconds_per_fit or 0.0 for c in self.chosen), default=0.0)
        return float(sum(times)) + full  # type: ignore[arg-type]

    def room(self, fits: int, seconds: float, seconds_per_fit: float | None) -> bool:
        """Whether `fits` more fold fits (estimated `seconds_per_fit` each) fit the bound after `seconds` spent."""
        if self.fit_limit is not None:
            return self.fits + fits <= self.fit_limit
        return self.budget is None or seconds + fits * (seconds_per_fit or 0.0) <= self.budget

    def lines(self) -> list[str]:
        """The plan for a person: what is trained for which candidate, the total and its estimated time."""
        bound = (
            f"budget {_describe(self.budget)}"
            if self.budget is not None
            else f"at most {self.fit_limit} fold fit(s), {FIT_SHARE:.0%} of the search's {self.search_fits}"
        )
        lines = [f"plan ({bound}):"]
        for c in self.chosen:
            lines.append(
                f"  {c.name} (F1 {c.study_value:.4f}): {c.fits} fold model(s) to train, {c.kept} kept by the search"
                + (f", ~{_describe(c.seconds)}" if c.seconds else "")
            )
        if self.shipped_fits:
            lines.append(f"  then one model on all images per shipped member (at most {self.shipped_fits})")
        if self.shipped_each:
            lines.append(
                f"  then the other splits' fold models of the shipped members, best first while the bound leaves "
                f"room ({self.reserved} kept for them): {self.shipped_each} fold fit(s) each"
            )
        lines.append(
            f"  in all: {self.fits} fold fit(s)"
            + (f" and up to {self.reserved} for the shipped members" if self.reserved else "")
            + (f", estimated {_describe(self.seconds)}" if self.seconds is not None else ", time unknown")
            + " (from the trials' recorded times)"
        )
        if self.left_out:
            names = ", ".join(f"{c.name} ({why})" for c, why in self.left_out)
            lines.append(f"  left out: {names}")
        return lines


def search_fold_fits(trials: list[FrozenTrial], max_epochs: int) -> int:
    """Fold models the search trained: every fold a trial started, complete, pruned or failed."""
    return sum(step_position(max(t.intermediate_values), max_epochs)[0] + 1 for t in trials if t.intermediate_values)


def seconds_per_fit(trial: FrozenTrial, max_epochs: int) -> float | None:
    """The trial's recorded seconds per fold it trained; None when it recorded none."""
    seconds = trial.user_attrs.get(TIME_SPENT)
    if not isinstance(seconds, dict) or "total" not in seconds or not trial.intermediate_values:
        return None
    return float(seconds["total"]) / (step_position(max(trial.intermediate_values), max_epochs)[0] + 1)


def plan_export(
    candidates: list[Candidate],
    search_fits: int,
    budget: float | None = None,
    shipped_each: int = 0,
    shipped_members: int = 0,
) -> ExportPlan:
    """Take `candidates` (best first; the first is always taken) while they fit the bound, cheapest-to-judge first
    after the best: those whose models the search kept, then the others by study value. With `shipped_each` fold
    fits to train per shipped member after the choice (--repeats-for shipped), room for `shipped_members` of them is
    kept out of the bound."""
    fit_limit = None if budget is not None else math.floor(FIT_SHARE * search_fits)
    plan = ExportPlan([], [], search_fits, fit_limit, budget, shipped_each=shipped_each)
    if not candidates:
        return plan
    reserve = shipped_each * shipped_members
    best, rest = candidates[0], candidates[1:]
    order = [best] + sorted(rest, key=lambda c: (c.fits > 0, -c.study_value, c.trial))
    fallback = _typical_seconds(candidates)
    used_fits, used_seconds = reserve, reserve * fallback
    for candidate in order:
        seconds = candidate.seconds if candidate.seconds is not None else candidate.fits * fallback
        fits_ok = fit_limit is None or used_fits + candidate.fits <= fit_limit
        time_ok = budget is None or used_seconds + seconds <= budget
        if candidate is best or candidate.fits == 0 or (fits_ok and time_ok):  # judging the free ones costs nothing
            plan.chosen.append(candidate)
            used_fits += candidate.fits
            used_seconds += seconds
        else:
            plan.left_out.append((candidate, "over the budget" if budget is not None else "over the fold-fit bound"))
    plan.reserved = reserve if fit_limit is None else max(0, min(reserve, fit_limit - plan.fits))
    return plan


def _typical_seconds(candidates: list[Candidate]) -> float:
    known = [c.seconds_per_fit for c in candidates if c.seconds_per_fit is not None]
    return float(np.median(known)) if known else 0.0


def _describe(seconds: float | None) -> str:
    return "unknown" if seconds is None else describe_duration(seconds)
