"""What every trial of a study is scored on, and what export, report and audit rebuild to read it: the table, the
task, the cached images, the true labels and the person-grouped folds, identified by a fingerprint.

The search records the fingerprint on the study; whoever rebuilds the data later checks it against that record,
so nothing is ever scored against other images, labels or folds than the trials were.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from automl.data.cache import ImageSets
from automl.data.dataset import Dataset
from automl.data.face_crop import LearnedPrior, learn_prior
from automl.data.folds import assign_folds
from automl.data.tasks import Task
from automl.errors import AutomlError


@dataclass
class StudyData:
    """What every trial of a study shares: the table, the task, the cached images per face crop, and the folds."""

    dataset: Dataset
    task: Task
    images: ImageSets
    true_labels: np.ndarray
    folds: np.ndarray
    _prior: LearnedPrior | None = field(default=None, repr=False)

    @classmethod
    def prepare(cls, dataset: Dataset, task: Task, images: ImageSets, n_folds: int, seed: int) -> StudyData:
        true = task.labels(dataset.train)
        folds = assign_folds(true, dataset.train["group"].to_numpy(), n_folds, seed)
        return cls(dataset, task, images, true, folds)

    @classmethod
    def of_study(
        cls, dataset: Dataset, task: Task, images: ImageSets, study_name: str, recorded: Mapping[str, Any]
    ) -> StudyData:
        """The data a study was searched on, rebuilt with its recorded folds and checked against its fingerprint."""
        settings = recorded_settings(study_name, recorded)
        data = cls.prepare(dataset, task, images, int(settings["folds"]), int(settings["seed"]))
        data.check_fingerprint(study_name, recorded)
        return data

    @property
    def n_folds(self) -> int:
        return int(self.folds.max()) + 1

    def learned_prior(self) -> LearnedPrior:
        """The face-crop prior of these training images (never the eval images), computed once per process."""
        if self._prior is None:
            self._prior = learn_prior(list(self.dataset.train["path"]))
        return self._prior

    @property
    def fingerprint(self) -> str:
        """Identifies the images, labels and folds: a study refuses to mix trials scored on different ones."""
        digest = hashlib.blake2b(digest_size=8)
        digest.update("\n".join(self.dataset.train["image_id"]).encode())
        digest.update(self.true_labels.tobytes())
        digest.update(self.folds.tobytes())
        return digest.hexdigest()

    def check_fingerprint(self, study_name: str, recorded: Mapping[str, Any]) -> None:
        """Raise unless this is the data of study `study_name`, whose `recorded` attributes the search wrote."""
        if self.fingerprint != recorded.get("data_fingerprint"):
            raise AutomlError(
                f"study {study_name!r} was searched on other images, labels or folds (its data: "
                f"{recorded.get('data')}); pass the --data (and label options) it was made with"
            )


def recorded_settings(study_name: str, recorded: Mapping[str, Any]) -> dict[str, Any]:
    """The settings the search recorded on study `study_name` (folds, image size, seed...)."""
    settings = recorded.get("settings") or {}
    if not {"folds", "image_size", "seed"} <= set(settings):
        raise AutomlError(f"study {study_name!r} has no recorded settings; was it made by automl search?")
    return settings
