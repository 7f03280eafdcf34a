"""The markdown note optuna-dashboard shows on each finished trial."""

from __future__ import annotations

import numpy as np

from automl.data.tasks import Task


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
