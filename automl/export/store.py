"""One store of fold models, under `<home>/fold_models`, for every export of every study of that home.

A model is keyed by what made it: the trial's configuration, the data (its fingerprint), the cross-validation
split and the fold. Split 0 is the study's own folds (fold k trained with seed `seed + k`, as in the search); split
r > 0 is another person-grouped split of the same images (`--cv-repeats`; fold k of split r trained with seed
`seed + r * folds + k`); a full model trains on every image for a number of epochs (`--mode full`). Each
(configuration, data) pair is one folder; each model in it is `<name>.safetensors` (weights), `<name>.npz` (its
out-of-fold views: every TTA view of the rows it never saw; none for a full model) and `<name>.json`, written last:
the record of what it was trained on and with. A model is reused only when its record matches field for field, so a
re-created study (whose first trials draw the same configurations) on other images never reuses one.

The search's kept fold weights (`--keep-top`) are linked in, not trained again: the same configuration, data, fold
and seed made them. Every model is trained by `train.engine.train_fold`, as the search's are; an export folder
only links its members' models from here (hard links where it can: one copy on disk).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from automl.atomic import atomic_path, link_or_copy
from automl.data.folds import assign_folds
from automl.data.study import StudyData
from automl.errors import AutomlError
from automl.export.bundle import load_model, model_params, read_json, save_weights, write_json
from automl.export.members import MemberPlan
from automl.export.predict import MemberViews
from automl.export.tta import VIEWS
from automl.search.artifacts import WEIGHTS_SUFFIX
from automl.search.objective import fold_data
from automl.train.engine import FoldData, resolved_params, train_fold
from automl.train.heads import create_model
from automl.train.inference import predict_views
from automl.train.session import TrainSession
from automl.train.targets import training_ages, training_labels

STORE_DIR = "fold_models"
#: Where a model came from.
TRAINED, STORED, KEPT = "trained", "read back", "kept by the search"

#: on_model(split, fold, source) after each model; on_epoch(split, fold, epoch) after each epoch trained.
OnModel = Callable[[int, int | None, str], None]
OnEpoch = Callable[[int, int | None, int], None]


@dataclass(frozen=True)
class StoredModel:
    """A model in the store: its weights file and record."""

    weights: Path
    record: dict[str, Any]

    @property
    def name(self) -> str:
        return self.weights.name.removesuffix(WEIGHTS_SUFFIX)

    @property
    def seed(self) -> int:
        return int(self.record["seed"])

    @property
    def best_epoch(self) -> int:
        return int(self.record["best_epoch"])

    @property
    def resolved(self) -> dict[str, Any]:
        return self.record["resolved"]


def repeat_split(data: StudyData, split: int, seed: int) -> np.ndarray:
    """The folds of split `split` (1, 2, ...; 0 is the study's own, made with `seed`): person-grouped and
    stratified like the study's, shuffled with another seed."""
    return assign_folds(data.true_labels, data.dataset.train["group"].to_numpy(), data.n_folds, seed + split)


def model_name(split: int, fold: int | None, epochs: int | None = None) -> str:
    return f"full-e{epochs}" if fold is None else f"split{split}-fold{fold}"


class FoldStore:
    """The fold models of one study's data: read back, linked from the search's kept weights, or trained."""

    def __init__(self, home: Path, data: StudyData, study_seed: int, session: TrainSession):
        self.root, self.data, self.study_seed, self.session = home / STORE_DIR, data, study_seed, session
        self._splits: dict[int, np.ndarray] = {0: data.folds}
        self._trial_targets: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}

    # -- where and what ---------------------------------------------------------------------------------------------
    def folder(self, plan: MemberPlan) -> Path:
        key = json.dumps({"config": plan.config, "data": self.data.fingerprint}, sort_keys=True, default=str)
        return self.root / hashlib.blake2b(key.encode(), digest_size=12).hexdigest()

    def folds(self, split: int) -> np.ndarray:
        if split not in self._splits:
            self._splits[split] = repeat_split(self.data, split, self.study_seed)
        return self._splits[split]

    def key(self, plan: MemberPlan, split: int, fold: int | None, epochs: int | None = None) -> dict[str, Any]:
        """What the model is trained on and with: a stored record must say the same to be reused."""
        seed = plan.params.seed + (0 if fold is None else split * self.data.n_folds + fold)
        return {"config": plan.config, "data": self.data.fingerprint, "split": split,
                "split_seed": self.study_seed + split, "fold": fold, "seed": seed, "epochs": epochs}  # fmt: skip

    def stored(self, plan: MemberPlan, split: int, fold: int | None, epochs: int | None = None) -> StoredModel | None:
        """The model when the store holds it whole (weights, views, a matching record), else None."""
        stem = self.folder(plan) / model_name(split, fold, epochs)
        files = [stem.with_suffix(WEIGHTS_SUFFIX)] + ([] if fold is None else [stem.with_suffix(".npz")])
        try:
            record = read_json(stem.with_suffix(".json")) if all(f.is_file() for f in files) else None
        except AutomlError:  # damaged: train again
            return None
        wanted = self.key(plan, split, fold, epochs)
        if record is None or any(record.get(k) != v for k, v in _plain(wanted).items()):
            return None
        return StoredModel(files[0], record)

    # -- getting models ---------------------------------------------------------------------------------------------
    def fold_model(
        self,
        plan: MemberPlan,
        split: int,
        fold: int,
        kept: Path | None = None,
        on_epoch: Callable[[int], None] | None = None,
    ) -> tuple[StoredModel, str]:
        """Fold `fold` of split `split`, and where it came from: the store, the search's kept weights `kept`
        (split 0 only), or trained now; its out-of-fold views are stored beside it."""
        found = self.stored(plan, split, fold)
        if found is not None:
            return found, STORED
        params = plan.params
        record = self.key(plan, split, fold)
        inputs = self._fold_data(plan, split, fold)
        if _usable(plan, split, fold, kept):
            resolved = resolved_params(params, self.data.task, inputs.ages)
            model = load_model(kept, model_params(resolved.to_dict()), self.data.task.num_classes)
            record.update(best_epoch=plan.best_epochs[fold], resolved=resolved.to_dict())
            record["kept_from"] = f"trial {plan.trial} of the search"
            weights, source = kept, KEPT
        else:
            result = train_fold(inputs, replace(params, seed=record["seed"]), self.session, _epochs(on_epoch))
            model = create_model(result.params, self.data.task.num_classes)
            model.load_state_dict(result.state_dict)
            record.update(best_epoch=result.best_epoch, resolved=result.params.to_dict())
            resolved, weights, source = result.params, result.state_dict, TRAINED
        views = predict_views(model, inputs.images, inputs.val_index, resolved, VIEWS, self.session)
        return self._write(plan, record, weights, inputs.val_index, views), source

    def full_model(
        self, plan: MemberPlan, epochs: int, on_epoch: Callable[[int], None] | None = None
    ) -> tuple[StoredModel, str]:
        """One model on every training image for `epochs` epochs of the trial's schedule (no validation rows)."""
        found = self.stored(plan, 0, None, epochs)
        if found is not None:
            return found, STORED
        params = plan.params
        labels, ages = self._targets(plan)
        everyone = FoldData(
            images=self.data.images.get(params.image_crop), true_labels=self.data.true_labels, train_labels=labels,
            train_index=np.arange(len(self.data.true_labels)), val_index=np.zeros(0, dtype=np.int64),
            num_classes=self.data.task.num_classes, task=self.data.task, ages=ages,
        )  # fmt: skip
        record = self.key(plan, 0, None, epochs)
        result = train_fold(everyone, replace(params, seed=record["seed"]), self.session, _epochs(on_epoch), epochs)
        record.update(best_epoch=result.best_epoch, resolved=result.params.to_dict())
        return self._write(plan, record, result.state_dict, None, None), TRAINED

    def views(
        self,
        plan: MemberPlan,
        split: int,
        kept: Callable[[int], Path | None] | None = None,
        on_model: OnModel | None = None,
        on_epoch: OnEpoch | None = None,
    ) -> tuple[MemberViews, list[StoredModel]]:
        """The out-of-fold views of every training image on split `split` (each image from the one fold model that
        never saw it), and those models."""
        shape = (len(self.data.true_labels), self.data.task.num_classes)
        views = {view: np.full(shape, np.nan) for view in VIEWS}
        models = []
        for fold in range(self.data.n_folds):
            done = None if on_epoch is None else lambda epoch, f=fold: on_epoch(split, f, epoch)
            model, source = self.fold_model(plan, split, fold, None if kept is None else kept(fold), done)
            with np.load(model.weights.with_suffix(".npz")) as stored:
                for view in VIEWS:
                    views[view][stored["rows"]] = stored[view]
            models.append(model)
            if on_model is not None:
                on_model(split, fold, source)
        assert not any(np.isnan(v).any() for v in views.values()), "every image has an out-of-fold prediction"
        return views, models

    def to_train(
        self, plan: MemberPlan, splits: int, kept: Callable[[int], Path | None], first: int = 0
    ) -> tuple[int, int]:
        """(fold models to train, fold models the search kept) for `plan`'s views on splits first .. splits-1."""
        missing = kept_count = 0
        for split in range(first, splits):
            for fold in range(self.data.n_folds):
                if self.stored(plan, split, fold) is not None:
                    continue
                if _usable(plan, split, fold, kept(fold) if split == 0 else None):
                    kept_count += 1
                else:
                    missing += 1
        return missing, kept_count

    # -- inside -----------------------------------------------------------------------------------------------------
    def _targets(self, plan: MemberPlan) -> tuple[np.ndarray, np.ndarray | None]:
        """The labels (and ages) a trial trains on, once per trial: its age options may bend the true ones."""
        if plan.name not in self._trial_targets:
            train, params = self.data.dataset.train, plan.params
            self._trial_targets[plan.name] = (
                training_labels(self.data.task, train, params),
                training_ages(self.data.task, train, params),
            )
        return self._trial_targets[plan.name]

    def _fold_data(self, plan: MemberPlan, split: int, fold: int) -> FoldData:
        labels, ages = self._targets(plan)
        return fold_data(replace(self.data, folds=self.folds(split)), fold, labels, plan.params, ages)

    def _write(
        self,
        plan: MemberPlan,
        record: dict[str, Any],
        weights: dict | Path,
        rows: np.ndarray | None,
        views: MemberViews | None,
    ) -> StoredModel:
        """Weights (saved, or linked from a file), views, then the record: its presence marks the model whole."""
        stem = self.folder(plan) / model_name(record["split"], record["fold"], record["epochs"])
        stem.parent.mkdir(parents=True, exist_ok=True)
        path = stem.with_suffix(WEIGHTS_SUFFIX)
        if isinstance(weights, Path):
            link_or_copy(weights, path)
        else:
            save_weights(weights, path)
        if views is not None:
            with atomic_path(stem.with_suffix(".npz")) as temporary, open(temporary, "wb") as handle:
                np.savez(handle, rows=rows, **views)
        write_json(stem.with_suffix(".json"), record)
        return StoredModel(path, _plain(record))


def _usable(plan: MemberPlan, split: int, fold: int, kept: Path | None) -> bool:
    """Whether the search's kept weights `kept` are this model: the study split's fold, with a recorded best epoch."""
    return kept is not None and split == 0 and fold < len(plan.best_epochs)


def mean_views(splits: list[MemberViews]) -> MemberViews:
    """Each view's mean over the splits: per image, the mean of models that never saw it."""
    return {view: np.mean([s[view] for s in splits], axis=0) for view in splits[0]}


def _epochs(on_epoch: Callable[[int], None] | None) -> Callable[[int, float], None] | None:
    return None if on_epoch is None else lambda epoch, *_: on_epoch(epoch)


def _plain(value: dict[str, Any]) -> dict[str, Any]:
    """As the json record reads back (tuples become lists)."""
    return json.loads(json.dumps(value, default=str))
