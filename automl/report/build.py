"""`automl report`: the study's figures in one HTML page, and the same figures attached to the study so that
optuna-dashboard shows them (study page, "plotly graph objects"; rerunning the report replaces them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from optuna_dashboard import save_plotly_graph_object

from automl.errors import AutomlError
from automl.export.bundle import EnsembleInfo
from automl.export.decision import decide
from automl.report import figures
from automl.report.inputs import (
    StudyLabels,
    StudyRef,
    find_export,
    open_study_labels,
    trial_probabilities,
)
from automl.report.page import render_page, write_page
from automl.search.artifacts import TRIAL_CURVES_FILE, find_artifact
from automl.search.ranking import best_trials
from automl.search.runner import count_trials
from automl.search.storage import default_storage_url, redact

#: The graph ids in optuna-dashboard start with this, so a rerun overwrites its own figures and nothing else.
DASHBOARD_PREFIX = "report-"


@dataclass
class ReportResult:
    path: Path
    sections: list[figures.Section]
    attached: int  # figures attached to the study for optuna-dashboard


def default_report_path(home: Path, study: str) -> Path:
    return home / "reports" / f"{study}.html"


def build_report(ref: StudyRef, out: Path | None = None, export: Path | None = None, curves: int = 3) -> ReportResult:
    labels = open_study_labels(ref)
    study = labels.study
    counts = count_trials(study)
    if counts.complete == 0:
        raise AutomlError(
            f"study {study.study_name!r} has no complete trial yet ({counts.pruned} pruned, {counts.failed} "
            f"failed); run automl search --task {ref.task} first"
        )
    best = study.best_trial
    true = labels.data.true_labels
    classes = labels.classes
    best_predicted = trial_probabilities(labels, best).argmax(1)
    sections = [
        figures.optimisation_history(study),
        figures.parameter_importances(study),
        figures.parallel_coordinates(study),
        figures.learning_curves(_curves(labels, curves)),
        figures.confusion("confusion-best", f"Best trial ({best.number})", true, best_predicted, classes),
    ]
    predictions = {f"best trial ({best.number})": best_predicted}
    summary = [
        f"task {ref.task}, {len(true)} training images of {labels.data.dataset.num_groups} people, "
        f"{len(classes)} classes",
        f"storage {redact(ref.storage_url or default_storage_url(ref.home))}; data {study.user_attrs.get('data')}",
        f"best trial {best.number}: out-of-fold macro F1 {best.value:.4f} (selection F1: the best of "
        f"{counts.complete} trials)",
        f"{counts.complete} complete, {counts.pruned} pruned, {counts.failed} failed, {counts.running} running"
        + (f", {len(counts.cut)} cut by the budget" if counts.cut else ""),
    ]
    found = find_export(labels, export)
    if found is None:
        note = "no export of this study yet (automl export-best) for the ensemble's figures"
        sections.append(figures.Section("confusion-ensemble", "Ensemble", None, note))
    else:
        info, probs = found
        title = f"Ensemble of the export ({info.ensemble.method}, {len(info.members)} member(s))"
        predicted = decide(probs, info.class_weights)  # the export's decision rule, as predict applies it
        sections.append(figures.confusion("confusion-ensemble", title, true, predicted, classes))
        predictions["ensemble"] = predicted
        summary.append(f"export: {export_figures(info.ensemble)}")
    sections.append(figures.class_f1(true, predictions, classes))
    sections += figures.trial_states(study)
    sections.append(figures.time_spent(study))

    path = out or default_report_path(ref.home, study.study_name)
    write_page(path, render_page(f"automl report: study {study.study_name}", summary, sections))
    drawn = [s for s in sections if s.figure is not None]
    for section in drawn:
        save_plotly_graph_object(study, section.figure, graph_object_id=DASHBOARD_PREFIX + section.key)
    return ReportResult(path, sections, len(drawn))


def export_figures(ensemble: EnsembleInfo) -> str:
    """The export's figures, each named (exports before the honest figure have only their selection score)."""
    if ensemble.honest_f1 is None:
        return (
            f"ensemble out-of-fold macro F1 {ensemble.selection_f1:.4f} (selection F1; export again for the honest F1)"
        )
    repeats = ensemble.cv_repeats
    splits = f"; each image's prediction the mean of {repeats} cross-validation splits" if repeats > 1 else ""
    return (
        f"ensemble honest F1 {ensemble.honest_f1:.4f} (cross-fitted: chosen on the other folds{splits}), "
        f"selection F1 {ensemble.selection_f1:.4f} (chosen and scored on the same predictions)"
    )


def _curves(labels: StudyLabels, n: int) -> dict[int, pd.DataFrame]:
    found = {}
    for trial in best_trials(labels.study, n):
        path = find_artifact(labels.home, trial, TRIAL_CURVES_FILE)
        if path is not None:
            found[trial.number] = pd.read_csv(path)
    return found
