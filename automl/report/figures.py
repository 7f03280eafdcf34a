"""The report's figures, each a plotly figure (or a note saying why there is none) with a stable key.

Optuna draws the study-wide views (history, importances, parallel coordinates); the rest come from what the trials
stored: per-epoch curves, out-of-fold probabilities and failure reasons.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import optuna
import pandas as pd
import plotly.graph_objects as go
from optuna.trial import TrialState
from plotly.subplots import make_subplots
from sklearn.metrics import confusion_matrix

from automl.search.objective import FAIL_REASON, TIME_SPENT
from automl.train.metrics import macro_f1, per_class_f1

#: Failure reasons are grouped by their first characters: the same error with other numbers is one row.
REASON_CHARS = 120


@dataclass
class Section:
    key: str  # a valid HTML id: the anchor in the page and the graph id in optuna-dashboard
    title: str
    figure: go.Figure | None
    note: str = ""


def _layout(figure: go.Figure, title: str, height: int = 420) -> go.Figure:
    figure.update_layout(title=title, height=height, margin={"l": 60, "r": 30, "t": 60, "b": 50})
    return figure


def _optuna_figure(key: str, title: str, draw, study: optuna.Study) -> Section:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "few trials per regime": the page says how many trials there are
            return Section(key, title, _layout(draw(study), title))
    except (ValueError, RuntimeError) as error:  # e.g. too few complete trials, or a single value everywhere
        return Section(key, title, None, f"not drawn: {error}")


def optimisation_history(study: optuna.Study) -> Section:
    draw = optuna.visualization.plot_optimization_history
    return _optuna_figure("optimisation-history", "Optimisation history (out-of-fold macro F1)", draw, study)


def parameter_importances(study: optuna.Study) -> Section:
    key, title = "parameter-importances", "Parameter importances (Optuna's default evaluator)"
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    varying = {name for t in complete for name in t.params if len({str(u.params.get(name)) for u in complete}) > 1}
    if len(complete) < 2 or not varying:
        return Section(key, title, None, "not drawn: importances need at least two complete trials that differ")
    return _optuna_figure(key, title, optuna.visualization.plot_param_importances, study)


def parallel_coordinates(study: optuna.Study) -> Section:
    draw = optuna.visualization.plot_parallel_coordinate
    return _optuna_figure("parallel-coordinates", "Parameters and macro F1 of the complete trials", draw, study)


def learning_curves(curves: Mapping[int, pd.DataFrame]) -> Section:
    """Validation macro F1 and losses per epoch of each trial's folds (one colour per trial)."""
    key, title = "learning-curves", "Learning curves of the best trials"
    if not curves:
        return Section(key, title, None, "not drawn: no curves.csv artifacts for the best trials")
    figure = make_subplots(rows=1, cols=2, subplot_titles=("validation macro F1", "loss (train solid, val dotted)"))
    palette = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
    for index, (number, table) in enumerate(curves.items()):
        colour = palette[index % len(palette)]
        for fold, rows in table.groupby("fold"):
            name, group = f"trial {number} fold {fold}", f"trial {number}"
            common = {"legendgroup": group, "line": {"color": colour}, "mode": "lines+markers"}
            figure.add_trace(go.Scatter(x=rows["epoch"], y=rows["val_f1"], name=name, **common), row=1, col=1)
            figure.add_trace(
                go.Scatter(x=rows["epoch"], y=rows["train_loss"], name=name, showlegend=False, **common), row=1, col=2
            )
            dotted = {**common, "line": {"color": colour, "dash": "dot"}}
            figure.add_trace(
                go.Scatter(x=rows["epoch"], y=rows["val_loss"], name=name, showlegend=False, **dotted), row=1, col=2
            )
    figure.update_xaxes(title_text="epoch")
    return Section(key, title, _layout(figure, title, 460))


def confusion(key: str, title: str, true: np.ndarray, predicted: np.ndarray, classes: Sequence[str]) -> Section:
    """Counts per true (rows) and predicted (columns) class; colours are the share of each true class."""
    counts = confusion_matrix(true, predicted, labels=np.arange(len(classes)))
    shares = counts / np.clip(counts.sum(1, keepdims=True), 1, None)
    heatmap = go.Heatmap(
        z=shares,
        x=list(classes),
        y=list(classes),
        text=counts,
        texttemplate="%{text}",
        colorscale="Blues",
        zmin=0,
        zmax=1,
        colorbar={"title": "share of row"},
        hovertemplate="true %{y}<br>predicted %{x}<br>%{text} image(s)<extra></extra>",
    )
    figure = go.Figure(heatmap)
    figure.update_yaxes(autorange="reversed", title_text="true class")
    figure.update_xaxes(title_text="predicted class")
    full = (
        f"{title}: out-of-fold macro F1 {macro_f1(true, predicted):.4f} (selection F1), "
        f"accuracy {np.mean(true == predicted):.4f}"
    )
    size = 260 + 28 * len(classes)
    return Section(key, title, _layout(figure, full, size))


def class_f1(true: np.ndarray, predictions: Mapping[str, np.ndarray], classes: Sequence[str]) -> Section:
    """Per-class F1 of each named prediction (the best trial, the ensemble), side by side."""
    figure = go.Figure()
    for name, predicted in predictions.items():
        scores = per_class_f1(true, predicted, len(classes))
        figure.add_trace(go.Bar(x=list(classes), y=scores, name=name, text=np.round(scores, 3), textposition="auto"))
    figure.update_layout(barmode="group")
    figure.update_yaxes(range=[0, 1], title_text="F1")
    return Section("class-f1", "Per-class F1", _layout(figure, "Per-class F1 (out-of-fold, true labels)"))


def trial_states(study: optuna.Study) -> list[Section]:
    """How many trials completed, were pruned or failed; and the failure reasons, grouped."""
    trials = study.get_trials(deepcopy=False)
    counts = Counter(t.state.name.lower() for t in trials)
    order = ["complete", "pruned", "fail", "running", "waiting"]
    names = [s for s in order if counts.get(s)]
    colours = {"complete": "#2ca02c", "pruned": "#ff7f0e", "fail": "#d62728", "running": "#1f77b4"}
    bars = go.Bar(
        x=[counts[s] for s in names],
        y=["failed" if s == "fail" else s for s in names],
        orientation="h",
        marker_color=[colours.get(s, "#7f7f7f") for s in names],
        text=[counts[s] for s in names],
        textposition="auto",
    )
    title = f"Trials: {len(trials)} in all"
    states = Section("trial-states", "Complete, pruned and failed trials", _layout(go.Figure(bars), title, 300))
    reasons = Counter(
        t.user_attrs.get(FAIL_REASON, "interrupted or lost (no reason recorded)")[:REASON_CHARS]
        for t in trials
        if t.state == TrialState.FAIL
    )
    key, title = "failure-reasons", "Why trials failed"
    if not reasons:
        return [states, Section(key, title, None, "no trial failed")]
    ranked = reasons.most_common()
    table = go.Table(
        columnwidth=[1, 9],
        header={"values": ["trials", "reason"], "align": "left"},
        cells={"values": [[n for _, n in ranked], [r for r, _ in ranked]], "align": "left"},
    )
    return [states, Section(key, title, _layout(go.Figure(table), title, 120 + 40 * min(len(ranked), 15)))]


#: The parts of a trial's time, as the search records them (objective.time_spent), with their colours.
TIME_PARTS = {"training": "#2ca02c", "validating": "#1f77b4", "other": "#d62728"}


def time_spent(study: optuna.Study) -> Section:
    """Each ended trial's seconds: training epochs, validating, and everything else (set-up, saving, storage)."""
    key, title = "time-spent", "Where the time goes (seconds per trial)"
    trials = [t for t in study.get_trials(deepcopy=False) if isinstance(t.user_attrs.get(TIME_SPENT), dict)]
    if not trials:
        return Section(key, title, None, "no trial recorded its time (searched before automl recorded it)")
    numbers = [t.number for t in trials]
    figure = go.Figure(
        [
            go.Bar(x=numbers, y=[t.user_attrs[TIME_SPENT][part] for t in trials], name=part, marker_color=colour)
            for part, colour in TIME_PARTS.items()
        ]
    )
    total = {part: sum(t.user_attrs[TIME_SPENT][part] for t in trials) for part in TIME_PARTS}
    shares = ", ".join(f"{part} {value / max(sum(total.values()), 1e-9):.0%}" for part, value in total.items())
    figure.update_layout(barmode="stack", xaxis_title="trial", yaxis_title="seconds")
    return Section(key, title, _layout(figure, f"{title}: {shares}"))
