"""Repeated cross-validation: out-of-fold predictions of a fold ensemble, for its honest figure.

`--mode folds` predicts a new image with the mean of a member's fold models, but an image's out-of-fold prediction
comes from one model (the only one that never saw it). The mean is another, better predictor: on the real face
crops single fold models scored near the out-of-fold F1 on held-out photos while their mean scored ~0.03-0.06
higher and predicted the rare class less often, so choices made on single models' predictions (methods, decision
rule) misjudged it. Here each member also trains on `repeats - 1` more person-grouped splits of the same images
(new folds, new seeds): every image then has `repeats` out-of-fold predictions from models that never saw it, and
their mean is what a mean of such models does with a new image.

The export ships what was judged: a chosen member's fold models of every split (`ship_repeats`), and predicts a new
image with their mean. Shipping the study split's models alone would ship the luckiest: the best trial is the one
whose split-0 models happened to train well, and on the real face crops they were more confident on new photos
than the same configuration retrained on the other splits, so a decision rule fitted on the mean over splits
misfitted them (held-out F1 -0.014 with the rule; +0.016 on the mean of every split's models).

Each model's out-of-fold probabilities and weights are kept in `<home>/cv_repeats/<study>/<trial>/`, with a json
naming what they were trained on: a later export of the same trial reads them instead of training again, and an
interrupted one resumes at the next model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from automl.atomic import atomic_path, link_or_copy
from automl.data.folds import assign_folds
from automl.data.study import StudyData
from automl.errors import AutomlError
from automl.export.bundle import read_json, save_weights, write_json
from automl.export.members import MemberPlan, TrainedModel
from automl.export.predict import MemberViews
from automl.export.tta import VIEWS
from automl.search.artifacts import WEIGHTS_SUFFIX
from automl.search.objective import fold_data
from automl.train.engine import train_fold
from automl.train.heads import create_model
from automl.train.inference import predict_views
from automl.train.session import TrainSession
from automl.train.targets import training_ages, training_labels

#: Where the repeats' out-of-fold probabilities are kept, under the automl home.
CACHE_DIR = "cv_repeats"
#: Where a model came from (on_model's second argument).
TRAINED, CACHED = "trained", "read back"


def repeat_split(data: StudyData, repeat: int, seed: int) -> np.ndarray:
    """The folds of split `repeat` (1, 2, ...; 0 is the study's own, made with `seed`): person-grouped and
    stratified like the study's, shuffled with another seed."""
    return assign_folds(data.true_labels, data.dataset.train["group"].to_numpy(), data.n_folds, seed + repeat)


def repeated_views(
    plan: MemberPlan,
    data: StudyData,
    repeats: int,
    seed: int,
    cache: Path,
    session: TrainSession,
    on_model: Callable[[int, int, str], None] | None = None,
    on_epoch: Callable[[int, int, int], None] | None = None,
) -> list[MemberViews]:
    """The member's out-of-fold probabilities (every TTA view, every training image) on splits 1 .. repeats-1.

    Each fold model of split r trains with seed `params.seed + r * folds + fold` (the study's split 0 used
    `params.seed + fold`) and predicts only the images of its own fold. `on_model(repeat, fold, source)` after
    each model, source TRAINED or CACHED; `on_epoch(repeat, fold, epoch)` after each epoch trained.
    """
    params = plan.params
    labels = training_labels(data.task, data.dataset.train, params)
    ages = training_ages(data.task, data.dataset.train, params)
    n_folds = data.n_folds
    shape = (len(data.true_labels), data.task.num_classes)
    out = []
    for repeat in range(1, repeats):
        split = replace(data, folds=repeat_split(data, repeat, seed))
        views = {view: np.full(shape, np.nan) for view in VIEWS}
        for fold in range(n_folds):
            record = {
                "config": plan.config,
                "data": data.fingerprint,
                "split_seed": seed + repeat,
                "fold": fold,
                "seed": params.seed + repeat * n_folds + fold,
            }
            rows = np.flatnonzero(split.folds == fold)
            stem = cache / model_name(repeat, fold)
            probs = _read(stem, record, rows, weights=True)
            source = CACHED
            if probs is None:
                done = None if on_epoch is None else lambda epoch, *_, r=repeat, f=fold: on_epoch(r, f, epoch)
                inputs = fold_data(split, fold, labels, params, ages)
                result = train_fold(inputs, replace(params, seed=record["seed"]), session, done)
                model = create_model(result.params, data.task.num_classes)
                model.load_state_dict(result.state_dict)
                probs = predict_views(model, inputs.images, inputs.val_index, result.params, VIEWS, session)
                stem.parent.mkdir(parents=True, exist_ok=True)
                save_weights(result.state_dict, stem.with_suffix(WEIGHTS_SUFFIX))
                _write(stem, record, inputs.val_index, probs, best_epoch=result.best_epoch)
                source = TRAINED
            for view in VIEWS:
                views[view][rows] = probs[view]
            if on_model is not None:
                on_model(repeat, fold, source)
        assert not any(np.isnan(v).any() for v in views.values()), "every image has an out-of-fold prediction"
        out.append(views)
    return out


def mean_views(splits: list[MemberViews]) -> MemberViews:
    """Each view's mean over the splits: per image, the mean of models that never saw it."""
    return {view: np.mean([s[view] for s in splits], axis=0) for view in splits[0]}


def study_split_views(
    plan: MemberPlan, data: StudyData, seed: int, cache: Path, predict: Callable[[], MemberViews]
) -> MemberViews:
    """Split 0's out-of-fold views (the study's folds, predicted by the fold models the export would ship): read
    back, or `predict()`ed and kept, so that judging a candidate again never needs its models (a candidate that is
    not shipped keeps none in the export folder)."""
    record = {
        "config": plan.config,
        "data": data.fingerprint,
        "split_seed": seed,
        "seeds": [plan.params.seed + fold for fold in range(data.n_folds)],
    }
    rows = np.arange(len(data.true_labels))
    views = _read(cache / "repeat0", record, rows)
    if views is None:
        views = predict()
        _write(cache / "repeat0", record, rows, views)
    return views


def ship_repeats(cache: Path, repeats: int, n_folds: int, directory: Path, resolved: dict) -> list[TrainedModel]:
    """Link (or copy) the other splits' fold models of a chosen member from the cache into its export folder
    (`repeated_views` trained or read them back first), each with a json like its study-split fold models'; none
    for 1 split."""
    for stale in directory.glob("repeat*-fold*.*"):  # an earlier export to this folder with other splits
        stale.unlink()
    models = []
    for repeat in range(1, repeats):
        for fold in range(n_folds):
            name = model_name(repeat, fold)
            stem = cache / name
            record = read_json(stem.with_suffix(".json"))
            with np.load(stem.with_suffix(".npz")) as stored:
                best_epoch = int(stored["best_epoch"])
            link_or_copy(stem.with_suffix(WEIGHTS_SUFFIX), directory / f"{name}{WEIGHTS_SUFFIX}")
            write_json(
                directory / f"{name}.json",
                {
                    "config": record["config"], "resolved": resolved, "seed": record["seed"], "best_epoch": best_epoch,
                    "epochs": None, "trained_on": f"split {repeat + 1}: every fold but fold {fold}",
                },
            )  # fmt: skip
            models.append(TrainedModel(f"{name}{WEIGHTS_SUFFIX}", record["seed"], best_epoch, resolved))
    return models


def model_name(repeat: int, fold: int) -> str:
    return f"repeat{repeat}-fold{fold}"


def _read(stem: Path, record: dict, rows: np.ndarray, weights: bool = False) -> MemberViews | None:
    """The views of `rows` kept with the same record (and, with `weights`, the model's weights), else None."""
    json_path, probs_path = stem.with_suffix(".json"), stem.with_suffix(".npz")
    if not (json_path.is_file() and probs_path.is_file()):
        return None
    if weights and not stem.with_suffix(WEIGHTS_SUFFIX).is_file():  # kept by a version that shipped only split 0
        return None
    try:
        if read_json(json_path) != record:
            return None
        with np.load(probs_path) as stored:
            if not np.array_equal(stored["rows"], rows) or (weights and "best_epoch" not in stored):
                return None
            return {view: stored[view] for view in VIEWS}
    except (AutomlError, OSError, ValueError, KeyError):  # damaged or from another version: train again
        return None


def _write(stem: Path, record: dict, rows: np.ndarray, views: MemberViews, **extra: int) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(stem.with_suffix(".npz")) as temporary, open(temporary, "wb") as handle:
        np.savez(handle, rows=rows, **views, **extra)
    write_json(stem.with_suffix(".json"), record)  # last: its presence marks the views finished
