"""The markdown note optuna-dashboard shows on each finished trial."""

from __future__ import annotations

import numpy as np
import optuna

# The dashboard's own keys and chunking for a note: its public save_note reads every attribute of the study (twice) to
# find the note's version, and those attributes grow with every trial's note.
from optuna_dashboard._note import note_ver_key, split_body

from automl.data.tasks import Task


def save_trial_note(trial: optuna.Trial, body: str) -> None:
    """The note of a running trial, written as optuna_dashboard.save_note writes a first version, reading nothing:
    a trial is new, so its note has no earlier version and no earlier chunks to clear."""
    storage, study_id = trial.storage, trial.study._study_id
    for key, chunk in split_body(body, trial._trial_id).items():
        storage.set_study_system_attr(study_id, key, chunk)
    storage.set_study_system_attr(study_id, note_ver_key(trial._trial_id), 1)  # last: the note is whole


def trial_note(
    number: int,
    value: float,
    task: Task,
    class_f1: np.ndarray,
    confusion: np.ndarray,
    figures: dict[str, list],
    weights_kept: bool,
) -> str:
    lines = [
        f"## Trial {number}: out-of-fold macro F1 {value:.4f} (selection score: each fold at its best epoch)",
        "",
        f"Per fold: {', '.join(f'{f:.3f}' for f in figures['fold_f1'])} "
        f"(best epochs {', '.join(map(str, figures['best_epoch']))}); "
        f"{np.mean(figures['images_per_second']):.0f} img/s, peak memory {max(figures['peak_memory_mb']):.0f} MB.",
        "",
        "| class | F1 | images | predicted as it | most confused with |",
        "|---|---|---|---|---|",
    ]
    for k, name in enumerate(task.classes):
        row = confusion[k].copy()
        correct = row[k]
        row[k] = -1
        worst = f"{task.classes[row.argmax()]} ({row.max()})" if row.max() > 0 else "-"
        lines.append(f"| {name} | {class_f1[k]:.3f} | {confusion[k].sum()} | {correct} | {worst} |")
    lines += [
        "",
        "Fold weights: "
        + ("kept (among the top trials; deleted if it drops out)." if weights_kept else "not kept (not a top trial)."),
    ]
    return "\n".join(lines)
