"""What reports and audits read: a finished study, its true labels, and the out-of-fold probabilities it left.

The labels come from the data set the study was searched on (checked by its fingerprint, as the export does);
images are not decoded. Probabilities come from the trials' `oof_probabilities.csv` artifacts or from an export
folder's `oof_probabilities.csv`, both keyed by image id.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial

from automl.data.dataset import DataSource, load_dataset
from automl.data.study import StudyData, recorded_settings
from automl.errors import AutomlError
from automl.export.bundle import EXPORT_FILE, OOF_FILE, ExportInfo, read_export
from automl.export.submission import PROB_PREFIX
from automl.search.artifacts import TRIAL_OOF_FILE, artifact_dir, find_artifact
from automl.search.ranking import best_trials
from automl.search.storage import load_task_study


@dataclass(frozen=True)
class StudyRef:
    """Which study to read and the data it was searched on: the command-line options of report and audit."""

    source: DataSource
    task: str
    home: Path
    storage_url: str | None = None
    study_name: str | None = None

    @property
    def name(self) -> str:
        return self.study_name or self.task


@dataclass
class StudyLabels:
    """A study with the table, task, true labels and folds its trials were scored on."""

    study: optuna.Study
    data: StudyData
    home: Path
    storage: BaseStorage  # where the study was loaded from: its trials' artifacts are listed there

    @property
    def image_ids(self) -> np.ndarray:
        return self.data.dataset.train["image_id"].to_numpy()

    @property
    def classes(self) -> tuple[str, ...]:
        return self.data.task.classes


def open_study_labels(ref: StudyRef) -> StudyLabels:
    study, storage = load_task_study(ref.storage_url, ref.home, ref.name, ref.task)
    recorded_settings(study.study_name, study.user_attrs)  # before the data's path: a study automl did not make
    if not ref.source.path.exists():
        raise AutomlError(
            f"data {ref.source.path} not found; study {study.study_name!r} was searched on "
            f"{study.user_attrs.get('data')}: pass it with --data (and the label options the search used)"
        )
    dataset = load_dataset(ref.source)
    task = dataset.task(ref.task)
    # No images: the fingerprint covers image ids, labels and folds only.
    data = StudyData.of_study(dataset, task, [], study.study_name, study.user_attrs)
    return StudyLabels(study, data, ref.home, storage)


def trial_probabilities(labels: StudyLabels, trial: FrozenTrial) -> np.ndarray:
    """A complete trial's out-of-fold probabilities, in the table's row order."""
    path = find_artifact(labels.home, trial, TRIAL_OOF_FILE)
    if path is None:
        raise AutomlError(
            f"trial {trial.number} of study {labels.study.study_name!r} has no {TRIAL_OOF_FILE} in "
            f"{artifact_dir(labels.home)}; was the artifacts folder moved? (pass the --home the search used)"
        )
    return _aligned(pd.read_csv(path, dtype={"image_id": str}), labels, list(labels.classes), path)


def mean_trial_probabilities(labels: StudyLabels, top: int) -> tuple[np.ndarray, list[int]]:
    """The mean out-of-fold probabilities of the `top` best complete trials, and their numbers."""
    trials = best_trials(labels.study, top)
    if not trials:
        raise AutomlError(
            f"study {labels.study.study_name!r} has no complete trial yet; run automl search --task "
            f"{labels.data.task.name} first (pruned and failed trials have no full out-of-fold predictions)"
        )
    probs = np.mean([trial_probabilities(labels, t) for t in trials], axis=0)
    return probs, [t.number for t in trials]


def find_export(labels: StudyLabels, folder: Path | None) -> tuple[ExportInfo, np.ndarray] | None:
    """The export's info and ensemble out-of-fold probabilities: from `folder`, else the default export folder
    when it was made from this study and data (None when there is none)."""
    explicit = folder is not None
    folder = folder or labels.home / "exports" / labels.study.study_name
    if not explicit and not (folder / EXPORT_FILE).is_file():
        return None
    info = read_export(folder)
    matches = info.study == labels.study.study_name and info.data.fingerprint == labels.data.fingerprint
    if not matches:
        if explicit:
            raise AutomlError(
                f"export {folder} was made from study {info.study!r} on other data, not from study "
                f"{labels.study.study_name!r} with this data; point --export at this study's export"
            )
        return None
    path = folder / OOF_FILE
    if not path.is_file():
        raise AutomlError(f"export {folder} has no {OOF_FILE}; export again with automl export-best")
    table = pd.read_csv(path, dtype={"image_id": str})
    columns = [f"{PROB_PREFIX}{c}" for c in labels.classes]
    return info, _aligned(table, labels, columns, path)


def _aligned(table: pd.DataFrame, labels: StudyLabels, columns: list[str], path: Path) -> np.ndarray:
    missing = [c for c in ["image_id", *columns] if c not in table.columns]
    if missing:
        raise AutomlError(f"{path} lacks the column(s) {', '.join(missing)}; it is not from this task's study")
    table = table.drop_duplicates("image_id").set_index("image_id")
    ids = labels.image_ids
    absent = ~pd.Index(ids).isin(table.index)
    if absent.any():
        raise AutomlError(f"{path} misses {int(absent.sum())} training image(s), e.g. {ids[absent][0]}")
    probs = table.loc[ids, columns].to_numpy(dtype=np.float64)
    if not np.isfinite(probs).all():
        raise AutomlError(f"{path} holds empty or non-numeric probabilities")
    return probs
