"""Cross-fitting, greedy ensemble selection and the macro-F1 decision rule, on hand-made probabilities."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from automl.export.crossfit import cross_fit, macro_f1
from automl.export.decision import BAGS, GRID, ROUNDS, ascend, decide, fit_class_weights
from automl.export.greedy import GreedyOptions, greedy_selection
from automl.export.selection import GREEDY, Library, Procedure, Settings, Variant


def noisy_library(seed: int = 0, n: int = 240, trials: int = 6, classes: int = 3) -> tuple[Library, np.ndarray]:
    """Trials of different skill on imbalanced labels; fold ids grouped in runs of 4 rows ("people")."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(classes, size=n, p=[0.7, 0.2, 0.1][:classes])
    search = []
    for skill in np.linspace(0.5, 2.0, trials):
        logits = rng.normal(size=(n, classes)) + skill * np.eye(classes)[labels]
        probs = np.exp(logits)
        search.append(probs / probs.sum(1, keepdims=True))
    library = Library(list(range(trials)), ["a", "b"] * (trials // 2), search, [None] * trials)
    return library, labels


def test_fast_macro_f1_is_sklearns() -> None:
    rng = np.random.default_rng(1)
    for _ in range(100):
        true, predicted = rng.integers(0, 5, 40), rng.integers(0, 4, 40)
        assert macro_f1(true, predicted) == pytest.approx(f1_score(true, predicted, average="macro", zero_division=0))


def test_cross_fitting_never_uses_fold_ks_labels_for_fold_k() -> None:
    """Permuting fold k's labels changes nothing that is applied to fold k: not its choice, not its predictions."""
    library, labels = noisy_library()
    folds = (np.arange(len(labels)) // 4) % 4
    procedure = Procedure(library, labels, folds, Settings())  # every method and rule: the nested procedure
    predicted, choices = cross_fit(labels, folds, procedure.choose, procedure.apply)
    rng = np.random.default_rng(7)
    for k in range(4):
        shuffled = labels.copy()
        inside = np.flatnonzero(folds == k)
        shuffled[inside] = rng.permutation(labels[inside])
        shuffled[inside[:10]] = (labels[inside[:10]] + 1) % 3  # and some labels changed outright
        again, choices_again = cross_fit(shuffled, folds, procedure.choose, procedure.apply)
        assert choices_again[k] == choices[k]
        assert (again[inside] == predicted[inside]).all()
        # The other folds did choose on fold k's labels: some of their choices move (the test can fail).
        assert any(choices_again[j] != choices[j] for j in range(4) if j != k)


def test_honest_figure_is_below_the_selection_figure_on_noise() -> None:
    """On pure noise, choosing the best of many trials scores well on the rows it chose on, not on new ones."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 300)
    search = [rng.dirichlet(np.ones(3), 300) for _ in range(30)]
    library = Library(list(range(30)), ["a"] * 30, search, [None] * 30)
    folds = (np.arange(300) // 5) % 5
    fitted = Procedure(library, labels, folds, Settings()).fit()
    assert fitted.selection_f1 > fitted.honest_f1 + 0.03
    assert fitted.honest_f1 < 0.42  # chance is ~1/3


def test_greedy_selection_picks_the_known_best_combination() -> None:
    """A and B are each right on two classes and together right on all three; D and E are decoys."""
    labels = np.repeat([0, 1, 2], 10)
    rows = {
        "A": {0: [0.9, 0.05, 0.05], 1: [0.2, 0.6, 0.2], 2: [0.5, 0.1, 0.4]},
        "B": {0: [0.4, 0.5, 0.1], 1: [0.2, 0.6, 0.2], 2: [0.05, 0.05, 0.9]},
        "D": {0: [0.5, 0.25, 0.25], 1: [0.5, 0.25, 0.25], 2: [0.5, 0.25, 0.25]},
        "E": {0: [0.3, 0.3, 0.4], 1: [0.3, 0.3, 0.4], 2: [0.3, 0.3, 0.4]},
    }
    probs = {name: np.array([table[y] for y in labels]) for name, table in rows.items()}
    order = ["D", "A", "E", "B"]
    counts = greedy_selection([probs[n] for n in order], labels, GreedyOptions(size=6))
    assert counts.tolist() == [0, 1, 0, 1]  # A + B, each once: the first ensemble that is right everywhere
    assert macro_f1(labels, (probs["A"] + probs["B"]).argmax(1)) == 1.0
    assert max(macro_f1(labels, p.argmax(1)) for p in probs.values()) < 0.6  # no single model comes close
    # Bagged: bags without both A and B settle for a decoy, but A and B carry the summed vote.
    bagged = greedy_selection([probs[n] for n in order], labels, GreedyOptions(size=6, bags=8, bag_fraction=0.75))
    assert bagged[1] + bagged[3] > bagged[0] + bagged[2]
    assert macro_f1(labels, sum(w * probs[n] for w, n in zip(bagged, order, strict=True)).argmax(1)) == 1.0


def test_greedy_picks_with_replacement() -> None:
    """A strong member needs twice the weight of a weaker one to carry the vote: picked twice."""
    labels = np.array([0, 0, 1, 1])
    strong = np.array([[0.9, 0.1], [0.9, 0.1], [0.45, 0.55], [0.45, 0.55]])
    weak = np.array([[0.3, 0.7], [0.3, 0.7], [0.8, 0.2], [0.2, 0.8]])
    counts = greedy_selection([strong, weak], labels, GreedyOptions(size=5, init=1))
    assert counts.tolist() == [1, 0]  # strong alone is already right everywhere; adding weak cannot help
    counts = greedy_selection([weak, strong], labels, GreedyOptions(size=5, init=2))
    assert counts[1] >= 1


def test_decision_rule_raises_macro_f1_on_an_imbalanced_case() -> None:
    """The rare class is always under-confident: argmax never predicts it, the rule does."""
    labels = np.array([0] * 40 + [1] * 10 + [2] * 5)
    probs = np.array([[0.6, 0.1, 0.3]] * 40 + [[0.2, 0.7, 0.1]] * 10 + [[0.45, 0.15, 0.4]] * 5)
    plain = macro_f1(labels, probs.argmax(1))
    weights = fit_class_weights(probs, labels)
    assert plain < 0.7 and macro_f1(labels, decide(probs, weights)) == 1.0
    assert 0.45 / 0.4 < weights[2] / weights[0] <= 0.6 / 0.3  # (at 2, ties go to the first class)
    assert decide(probs, None).tolist() == probs.argmax(1).tolist()
    balanced = np.eye(3)[labels] * 0.8 + 0.2 / 3  # nothing to gain: the weights stay 1
    assert fit_class_weights(balanced, labels) == [1.0, 1.0, 1.0]


def test_one_ascent_scores_every_grid_value_as_setting_it_would() -> None:
    """The ascent scores all grid values of a class in one pass; it must pick what trying each in turn picks."""

    def one_at_a_time(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
        weights = np.ones(probs.shape[1])
        best = macro_f1(labels, decide(probs, weights))
        for _ in range(ROUNDS):
            improved = False
            for k in range(len(weights)):
                for value in GRID:
                    trial = weights.copy()
                    trial[k] = value
                    score = macro_f1(labels, decide(probs, trial))
                    if score > best + 1e-12:
                        best, weights, improved = score, trial, True
            if not improved:
                break
        return weights

    rng = np.random.default_rng(0)
    for case in range(60):
        classes, rows = int(rng.integers(2, 7)), int(rng.integers(5, 200))
        labels = rng.integers(0, classes, rows)
        probs = rng.dirichlet(np.ones(classes), rows)
        probs = probs.round(1) if case % 3 == 0 else probs  # ties between classes
        assert np.allclose(ascend(probs, labels), one_at_a_time(probs, labels)), case


def test_bagged_weights_are_steadier_than_one_ascent() -> None:
    """Weights learnt on two halves of the same noisy data agree better bagged than from one ascent each (mean over
    20 data sets), and a bagged fit is repeatable."""

    def disagreement(bags: int) -> float:
        gaps = []
        for seed in range(20):
            rng = np.random.default_rng(seed)
            labels = rng.choice(3, 300, p=[0.8, 0.05, 0.15])
            logits = rng.normal(0, 1, (300, 3)) + 1.2 * np.eye(3)[labels] + [0.8, 0, 0]
            probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
            halves = [np.log(fit_class_weights(probs[h::2], labels[h::2], bags=bags)) for h in (0, 1)]
            gaps.append(np.abs((halves[0] - halves[0].mean()) - (halves[1] - halves[1].mean())).sum())
        return float(np.mean(gaps))

    assert disagreement(BAGS) < 0.9 * disagreement(1)
    probs, labels = np.random.default_rng(1).dirichlet(np.ones(3), 50), np.arange(50) % 3
    assert fit_class_weights(probs, labels) == fit_class_weights(probs, labels)


def test_a_fixed_variant_reports_both_figures() -> None:
    library, labels = noisy_library(seed=2)
    folds = (np.arange(len(labels)) // 4) % 3
    procedure = Procedure(library, labels, folds, Settings(selections=(GREEDY,), rules=(True,)))
    fitted = procedure.fit_variant(Variant(GREEDY, True))
    assert fitted.choice.variant == Variant(GREEDY, True) and fitted.choice.class_weights is not None
    assert 0 < fitted.honest_f1 <= 1 and 0 < fitted.selection_f1 <= 1
    assert len(fitted.fold_choices) == 3


def test_candidates_hold_every_trial_a_choice_applies() -> None:
    """The export computes its candidates' own predictions: what it ships and what cross-fitting applies to each
    fold are among them."""
    library, labels = noisy_library()
    folds = (np.arange(len(labels)) // 4) % 4
    procedure = Procedure(library, labels, folds, Settings())
    candidates = set(procedure.candidates())
    row_sets = [np.arange(len(labels))] + [np.flatnonzero(folds != k) for k in range(4)]
    for rows in row_sets:
        assert set(procedure.choose(rows, labels[rows]).members) <= candidates
    best = Procedure(library, labels, folds, Settings(selections=("best_trial",), rules=(False,)))
    bests = {int(np.argmax([macro_f1(labels[r], p[r].argmax(1)) for p in library.search])) for r in row_sets}
    assert best.candidates() == sorted(bests)


def test_figures_read_the_candidates_own_predictions() -> None:
    """Members are picked on the search's probabilities; every figure is on the library's (a fold ensemble's, with
    cross-validation repeats): perfect own predictions give a perfect honest figure, the search's would not."""
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, 200)
    library = Library(list(range(5)), ["a"] * 5, [rng.dirichlet(np.ones(3), 200) for _ in range(5)], [None] * 5)
    folds = (np.arange(200) // 5) % 4
    before = Procedure(library, labels, folds, Settings()).fit()
    perfect = {view: np.eye(3)[labels] for view in ("plain", "flip", "crop")}
    library.views = [perfect] * len(library.trials)
    after = Procedure(library, labels, folds, Settings()).fit()
    assert before.honest_f1 < 0.6 and after.honest_f1 == pytest.approx(1.0)


def test_auto_takes_the_variant_with_the_highest_honest_figure() -> None:
    """What the export shows per method (fit_variant's honest F1, TTA views included) is what auto chooses by. Here
    one trial's mirrored view is nearly right, which only a choice that looks at the views sees (judged on the plain
    view alone, auto took another variant: the test can fail)."""
    library, labels = noisy_library(seed=2)
    rng = np.random.default_rng(2)
    library.views = []
    for index, probs in enumerate(library.search):
        flip = rng.dirichlet(np.ones(3), len(probs))
        if index == 3:
            flip = 0.6 * np.eye(3)[labels] + 0.4 * flip
        library.views.append({"plain": probs, "flip": flip, "crop": probs})
    folds = (np.arange(len(labels)) // 4) % 4
    procedure = Procedure(library, labels, folds, Settings())
    variants = Settings().variants
    figures = [procedure.fit_variant(v).honest_f1 for v in variants]
    assert procedure.choose(np.arange(len(labels)), labels).variant == variants[int(np.argmax(figures))]


def test_judging_makes_each_plan_once_with_the_figures_of_fit() -> None:
    """`judge` (what the export runs) gives `fit` and every `fit_variant`, choosing each variant's plan on a set of
    rows once: fitting the variants one by one repeats every plan the choice of variant already made."""
    library, labels = noisy_library(seed=2)
    folds = (np.arange(len(labels)) // 4) % 3

    def counted() -> tuple[Procedure, list]:
        procedure, calls = Procedure(library, labels, folds, Settings()), []
        choose = procedure._choose_variant
        procedure._choose_variant = lambda v, r, y: calls.append((v, r.tobytes())) or choose(v, r, y)
        return procedure, calls

    judged, judge_calls = counted()
    fitted, each_variant = judged.judge()
    apart, apart_calls = counted()
    assert fitted == apart.fit()
    assert each_variant == {v: apart.fit_variant(v) for v in Settings().variants}
    assert len(judge_calls) == len(set(judge_calls)) < len(apart_calls)
    assert judged._plans is None  # nothing kept once judged: the runner changes the library between uses
