"""Everything the export chooses on out-of-fold predictions, as one procedure that cross-fitting can repeat per fold.

The library is every complete trial of the study with its out-of-fold probabilities from the search. On given rows
(all of them for the export; the other folds for the honest figure) the procedure chooses:

1. a variant, a member-selection method x the decision rule on or off, by the variant's own cross-fitted macro F1
   on those rows (when more than one is allowed): best single trial, a vote of the top-k trials (soft, F1-weighted
   or hard, by F1), or greedy ensemble selection over every trial;
2. the members and vote weights by that method, on the search's probabilities;
3. the TTA views, among those every chosen member has (the export's retrained models have them), by F1;
4. the per-class weights of the decision rule, when the variant uses it, on the chosen views' vote.

Members are chosen on the search's probabilities only, so the export knows which trials to train before training
(`candidates`: every trial some variant picks). Every other step, and every figure, reads the library's
probabilities: for a trained member, its own out-of-fold probabilities per view (with repeated cross-validation,
the mean over the splits: what its fold ensemble does with a new image, see `store`); the search's otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from automl.errors import AutomlError
from automl.export.crossfit import Fitted, cross_fit, fit, macro_f1
from automl.export.decision import decide, fit_class_weights
from automl.export.ensemble import HARD, SOFT, WEIGHTED, choose_ensemble, combine
from automl.export.greedy import GreedyOptions, greedy_selection
from automl.export.tta import COMBINATIONS, PLAIN, combine_views

BEST_TRIAL, TOP_K_VOTE, GREEDY = "best_trial", "top_k_vote", "greedy"
SELECTIONS = (BEST_TRIAL, TOP_K_VOTE, GREEDY)
AUTO = "auto"
VOTES = (SOFT, WEIGHTED, HARD)


@dataclass
class Library:
    """The trials to choose from, best study value first."""

    trials: list[int]  # trial numbers
    backbones: list[str]
    search: list[np.ndarray]  # each trial's out-of-fold probabilities from the search (rows: training images)
    views: list[dict[str, np.ndarray] | None]  # per-view out-of-fold probabilities of the estimated members, else None

    def probs(self, index: int, views: Sequence[str]) -> np.ndarray:
        own = self.views[index]
        return self.search[index] if own is None else combine_views(own, views)


@dataclass(frozen=True)
class Variant:
    selection: str  # BEST_TRIAL | TOP_K_VOTE | GREEDY
    rule: bool  # the macro-F1 decision rule on

    @property
    def name(self) -> str:
        return f"{self.selection}{' + decision rule' if self.rule else ''}"


@dataclass(frozen=True)
class Plan:
    """One run of the procedure: what the export (or fold k) uses."""

    variant: Variant
    vote: str  # how members combine (ensemble.combine's methods)
    members: list[int]  # library indexes
    weights: list[float]
    views: tuple[str, ...] = (PLAIN,)
    class_weights: list[float] | None = None


@dataclass(frozen=True)
class Settings:
    selections: tuple[str, ...] = SELECTIONS
    rules: tuple[bool, ...] = (False, True)
    top_k: int = 3
    distinct_backbones: bool = False
    greedy: GreedyOptions = field(default_factory=GreedyOptions)

    @property
    def variants(self) -> list[Variant]:
        return [Variant(s, r) for s in self.selections for r in self.rules]


def settings_for(method: str, rule: str, **options) -> Settings:
    """Settings from the CLI's words: method auto|best_trial|top_k_vote|greedy, rule auto|on|off."""
    if method != AUTO and method not in SELECTIONS:
        raise AutomlError(f"--method {method!r}: choose {AUTO}, {', '.join(SELECTIONS)}")
    rules = {AUTO: (False, True), "on": (True,), "off": (False,)}
    if rule not in rules:
        raise AutomlError(f"--decision-rule {rule!r}: choose auto, on or off")
    return Settings(SELECTIONS if method == AUTO else (method,), rules[rule], **options)


class Procedure:
    """The export's choices on a library, for any rows; `fit` gives its selection and honest figures."""

    def __init__(self, library: Library, labels: np.ndarray, folds: np.ndarray, settings: Settings):
        self.library, self.labels, self.folds, self.settings = library, labels, folds, settings
        self._plans: dict[tuple, Plan] | None = None  # choose_variant's plans, kept while `judge` runs

    # -- the procedure ------------------------------------------------------------------------------------------
    def choose(self, rows: np.ndarray, labels: np.ndarray) -> Plan:
        variants = self.settings.variants
        if len(variants) == 1:
            variant = variants[0]
        else:  # each variant's honest figure within these rows; ties keep the simpler (earlier) one
            inner = self.folds[rows]
            scores = [macro_f1(labels, self._cross_fit_variant(v, rows, labels, inner)) for v in variants]
            variant = variants[int(np.argmax(scores))]
        return self.choose_variant(variant, rows, labels)

    def choose_variant(self, variant: Variant, rows: np.ndarray, labels: np.ndarray) -> Plan:
        if self._plans is None:
            return self._choose_variant(variant, rows, labels)
        key = (variant, rows.tobytes(), labels.tobytes())
        if key not in self._plans:
            self._plans[key] = self._choose_variant(variant, rows, labels)
        return self._plans[key]

    def _choose_variant(self, variant: Variant, rows: np.ndarray, labels: np.ndarray) -> Plan:
        plan = self._members(variant, rows, labels)
        plan = replace(plan, views=self._views(plan, rows, labels))
        if variant.rule:
            plan = replace(plan, class_weights=fit_class_weights(self.probabilities(plan, rows), labels))
        return plan

    def probabilities(self, plan: Plan, rows: np.ndarray) -> np.ndarray:
        probs = [self.library.probs(i, plan.views)[rows] for i in plan.members]
        return combine(plan.vote, probs, plan.weights)

    def apply(self, plan: Plan, rows: np.ndarray) -> np.ndarray:
        return decide(self.probabilities(plan, rows), plan.class_weights)

    def fit(self) -> Fitted:
        """The plan on every row, its selection F1 and the honest F1 of the whole procedure (variant choice too)."""
        return fit(self.labels, self.folds, self.choose, self.apply)

    def candidates(self) -> list[int]:
        """Every trial a variant picks on all rows, or on the rows outside one fold (what cross-fitting applies to
        that fold): the trials whose own out-of-fold probabilities the export computes, best first."""
        row_sets = [np.arange(len(self.labels))] + [np.flatnonzero(self.folds != f) for f in np.unique(self.folds)]
        plans = [self._members(v, rows, self.labels[rows]) for v in self.settings.variants for rows in row_sets]
        return sorted({i for plan in plans for i in plan.members})

    def fit_variant(self, variant: Variant) -> Fitted:
        """One variant on its own: its selection F1 and honest F1."""
        return fit(self.labels, self.folds, lambda r, y: self.choose_variant(variant, r, y), self.apply)

    def judge(self) -> tuple[Fitted, dict[Variant, Fitted]]:
        """`fit` and every variant's `fit_variant`, each variant's plan on a set of rows made once: choosing the
        variant on every row already cross-fits each variant as `fit_variant` does (the library must not change
        meanwhile)."""
        self._plans = {}
        try:
            return self.fit(), {v: self.fit_variant(v) for v in self.settings.variants}
        finally:
            self._plans = None

    # -- the steps ----------------------------------------------------------------------------------------------
    def _cross_fit_variant(self, variant: Variant, rows: np.ndarray, labels: np.ndarray, folds: np.ndarray):
        """Within `rows`: the variant's whole plan (members, views, rule) chosen on the other folds and applied to
        each, as `fit_variant` does on every row; so `auto` takes the variant whose honest figure is highest."""

        def choose(inner: np.ndarray, inner_labels: np.ndarray) -> Plan:
            return self.choose_variant(variant, rows[inner], inner_labels)

        def apply(plan: Plan, inner: np.ndarray) -> np.ndarray:
            return self.apply(plan, rows[inner])

        if len(np.unique(folds)) < 2:  # one fold (a 2-fold study, within a fold): its selection figure decides
            everything = np.arange(len(rows))
            return apply(choose(everything, labels), everything)
        return cross_fit(labels, folds, choose, apply)[0]

    def _members(self, variant: Variant, rows: np.ndarray, labels: np.ndarray) -> Plan:
        search = [p[rows] for p in self.library.search]
        single = [macro_f1(labels, p.argmax(1)) for p in search]
        if variant.selection == BEST_TRIAL:
            return Plan(variant, SOFT, [int(np.argmax(single))], [1.0])
        if variant.selection == TOP_K_VOTE:
            top = self._top_k(single)
            # A vote of all k (the best alone is the best_trial method).
            choice = choose_ensemble([search[i] for i in top], labels, [single[i] for i in top], VOTES)
            return Plan(variant, choice.method, [top[i] for i in choice.members], list(choice.weights))
        counts = greedy_selection(search, labels, self.settings.greedy)
        used = [int(i) for i in np.flatnonzero(counts)]
        return Plan(variant, SOFT, used, [float(counts[i]) for i in used])

    def _top_k(self, single: list[float]) -> list[int]:
        order = sorted(range(len(single)), key=lambda i: -single[i])  # stable: the study's order breaks ties
        chosen, seen = [], set()
        for i in order:
            backbone = self.library.backbones[i]
            if self.settings.distinct_backbones and backbone in seen:
                continue
            seen.add(backbone)
            chosen.append(i)
            if len(chosen) == self.settings.top_k:
                break
        return chosen

    def _views(self, plan: Plan, rows: np.ndarray, labels: np.ndarray) -> tuple[str, ...]:
        """The TTA views with the best F1 on `rows`, among those every member has; plain unless another beats it."""
        owned = [self.library.views[i] for i in plan.members]
        if any(v is None for v in owned):
            return (PLAIN,)
        best, best_f1 = (PLAIN,), -1.0
        for combo in COMBINATIONS:
            if not all(view in v for v in owned for view in combo):  # type: ignore[operator]
                continue
            f1 = macro_f1(labels, combine(plan.vote, [self.library.probs(i, combo)[rows] for i in plan.members],
                                          plan.weights).argmax(1))  # fmt: skip
            if f1 > best_f1 + 1e-12:
                best, best_f1 = combo, f1
        return best
