"""What each trial leaves behind, reachable from optuna-dashboard (`automl dashboard` serves the folder).

Every trial: its resolved configuration, per-epoch curves and out-of-fold probabilities, plus a markdown note.
Fold weights only for the current top trials: when a trial drops out of the top, its weight files are deleted,
so disk use stays bounded however long the study runs.

A full disk is not a trial's fault: the upload raises DiskFull naming the folder, the trial fails with that
reason, and the worker stops (every later trial would fail the same way). Files are written aside and renamed,
so a failed write never leaves half an artifact behind.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import optuna
import pandas as pd
import torch
from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta, upload_artifact
from optuna.artifacts._upload import ARTIFACTS_ATTR_PREFIX, ArtifactMeta  # how optuna records them on a trial
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial
from safetensors.torch import save_file

from automl.atomic import atomic_path
from automl.errors import AutomlError
from automl.search.ranking import best_trials

WEIGHTS_PREFIX = "fold"
WEIGHTS_SUFFIX = ".safetensors"


#: errno values that mean the disk (or the user's quota) is full.
_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFull(AutomlError):
    """No space left where a trial writes its artifacts."""


#: A trial's out-of-fold probabilities: image_id, one column per class.
TRIAL_OOF_FILE = "oof_probabilities.csv"
#: A trial's learning curves: one row per fold and epoch.
TRIAL_CURVES_FILE = "curves.csv"


def artifact_dir(home: Path) -> Path:
    return home / "artifacts"


def find_artifact(home: Path, trial: FrozenTrial, filename: str) -> Path | None:
    """The newest file of that name uploaded to the trial and still on disk, or None. The artifact list is read from
    the trial as it was loaded (its system attributes), not from the storage again: an export of N trials reads
    each trial once."""
    metas = [m for m in loaded_artifact_meta(trial) if m.filename == filename]
    for meta in reversed(metas):
        path = artifact_dir(home) / meta.artifact_id
        if path.is_file():
            return path
    return None


def loaded_artifact_meta(trial: FrozenTrial) -> list[ArtifactMeta]:
    """`get_all_artifact_meta` of a trial from the system attributes it was loaded with, in upload order."""
    metas = []
    for key, value in trial.system_attrs.items():
        if key.startswith(ARTIFACTS_ATTR_PREFIX):
            meta = json.loads(value)
            metas.append(ArtifactMeta(meta["artifact_id"], meta["filename"], meta["mimetype"], meta["encoding"]))
    return metas


class _AtomicFileStore:
    """Optuna's file store (one file per artifact id in the folder), writing each artifact aside and renaming it
    into place."""

    def __init__(self, directory: Path):
        self.directory = directory
        self._files = FileSystemArtifactStore(directory)

    def open_reader(self, artifact_id: str) -> BinaryIO:
        return self._files.open_reader(artifact_id)

    def remove(self, artifact_id: str) -> None:
        self._files.remove(artifact_id)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        with atomic_path(self.directory / artifact_id) as temporary, open(temporary, "wb") as handle:
            shutil.copyfileobj(content_body, handle)


class TrialArtifacts:
    def __init__(self, home: Path, storage: BaseStorage, keep_top: int = 3):
        self.directory = artifact_dir(home)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.store = _AtomicFileStore(self.directory)
        self.storage = storage
        self.keep_top = keep_top

    def upload(self, trial: optuna.Trial, filename: str, write: Callable[[Path], object]) -> str:
        """Write a file with `write(path)` in a scratch folder, then upload it to the trial."""
        with _space_needed(trial, filename, Path(tempfile.gettempdir())), tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / filename
            write(path)
            with _space_needed(trial, filename, self.directory):
                return upload_artifact(artifact_store=self.store, file_path=str(path), study_or_trial=trial)

    def upload_json(self, trial: optuna.Trial, filename: str, value: object) -> str:
        return self.upload(trial, filename, lambda p: p.write_text(json.dumps(value, indent=2, default=str)))

    def upload_table(self, trial: optuna.Trial, filename: str, table: pd.DataFrame) -> str:
        return self.upload(trial, filename, lambda p: table.to_csv(p, index=False))

    def upload_probabilities(
        self, trial: optuna.Trial, image_ids: np.ndarray, probs: np.ndarray, classes: Sequence[str]
    ) -> str:
        table = pd.DataFrame(probs, columns=list(classes))
        table.insert(0, "image_id", image_ids)
        return self.upload_table(trial, TRIAL_OOF_FILE, table)

    def keep_weights(
        self, study: optuna.Study, trial: optuna.Trial, value: float, states: list[dict[str, torch.Tensor]]
    ) -> bool:
        """Upload the fold weights if `value` ranks in the top; delete those of trials that dropped out."""
        ranked = best_trials(study)
        # The order of ranking.best_trials: on a tie the earlier trial ranks first, so a tie with the last of the top
        # keeps the earlier one (this trial is newer than every finished one).
        kept = sum(t.value >= value for t in ranked) < self.keep_top
        if kept:
            for fold, state in enumerate(states):
                self.upload(trial, f"{WEIGHTS_PREFIX}{fold}{WEIGHTS_SUFFIX}", lambda p, s=state: save_file(s, str(p)))
        top = {t.number for t in ranked[: self.keep_top - int(kept)]}
        for old in ranked:
            if old.number not in top:
                self._delete_weights(old)
        return kept

    def weights(self, trial: optuna.trial.FrozenTrial) -> list[str]:
        """Artifact ids of a trial's fold weights still on disk, in fold order."""
        metas = [m for m in get_all_artifact_meta(trial, storage=self.storage) if _is_weights(m.filename)]
        metas.sort(key=lambda m: m.filename)
        return [m.artifact_id for m in metas if (self.directory / m.artifact_id).exists()]

    def _delete_weights(self, trial: optuna.trial.FrozenTrial) -> None:
        for meta in get_all_artifact_meta(trial, storage=self.storage):
            if _is_weights(meta.filename):
                with contextlib.suppress(ArtifactNotFound):  # another worker may have deleted it already
                    self.store.remove(meta.artifact_id)


@contextlib.contextmanager
def _space_needed(trial: optuna.Trial, filename: str, where: Path) -> Iterator[None]:
    """Turns "no space left on device" while writing `filename` into `where` into a DiskFull that says so."""
    try:
        yield
    except Exception as error:
        # safetensors reports an OSError of its own kind: a SafetensorError with the system's message.
        full = isinstance(error, OSError) and error.errno in _FULL
        if not (full or any(os.strerror(code) in str(error) for code in _FULL)):
            raise
        raise DiskFull(
            f"no space left on device writing {filename} of trial {trial.number} to {where}: free some space there "
            "(fold weights take the most; --keep-top 1 keeps fewer) and run the same command again"
        ) from None


def _is_weights(filename: str) -> bool:
    return filename.startswith(WEIGHTS_PREFIX) and filename.endswith(WEIGHTS_SUFFIX)
