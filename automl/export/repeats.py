"""Repeated cross-validation: out-of-fold predictions of a fold ensemble, for its honest figure.

`--mode folds` predicts a new image with the mean of a member's fold models, but an image's out-of-fold prediction
comes from one model (the only one that never saw it). The mean is another, better predictor: on the real face
crops single fold models scored near the out-of-fold F1 on held-out photos while their mean scored ~0.03-0.06
higher and predicted the rare class less often, so choices made on single models' predictions (methods, decision
rule) misjudged it. Here each member also trains on `repeats - 1` more person-grouped splits of the same images
(new folds, new seeds): every image then has `repeats` out-of-fold predictions from models that never saw it, and
their mean is what the fold ensemble does with a new image (with `repeats` = the number of folds: a mean of as
many models, each trained on the same share of the images).

Only each model's out-of-fold probabilities are kept, in `<home>/cv_repeats/<study>/<trial>/`, with a json naming
what they were trained on: a later export of the same trial reads them instead of training again, and an
interrupted one resumes at the next model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from automl.atomic import atomic_path
from automl.data.folds import assign_folds
from automl.data.study import StudyData
from automl.errors import AutomlError
from automl.export.bundle import read_json, write_json
from automl.export.members import MemberPlan
from automl.export.predict import MemberViews
from automl.export.tta import VIEWS, predict_views
from automl.search.objective import fold_data
from automl.train.device import resolve_device
from automl.train.engine import Runtime, train_fold
from automl.train.heads import create_model
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
    runtime: Runtime,
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
            stem = cache / f"repeat{repeat}-fold{fold}"
            probs = _read(stem, record, rows)
            source = CACHED
            if probs is None:
                done = None if on_epoch is None else lambda epoch, *_, r=repeat, f=fold: on_epoch(r, f, epoch)
                inputs = fold_data(split, fold, labels, params, ages)
                result = train_fold(inputs, replace(params, seed=record["seed"]), runtime, done)
                model = create_model(result.params, data.task.num_classes)
                model.load_state_dict(result.state_dict)
                images = data.images.get(params.image_crop)
                probs = predict_views(
                    model, [images[i] for i in inputs.val_index], result.params, VIEWS,
                    resolve_device(runtime.device), runtime.num_workers,
                )  # fmt: skip
                _write(stem, record, inputs.val_index, probs)
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


def _read(stem: Path, record: dict, rows: np.ndarray) -> MemberViews | None:
    """The views of `rows` kept with the same record, else None."""
    json_path, probs_path = stem.with_suffix(".json"), stem.with_suffix(".npz")
    if not (json_path.is_file() and probs_path.is_file()):
        return None
    try:
        if read_json(json_path) != record:
            return None
        with np.load(probs_path) as stored:
            if not np.array_equal(stored["rows"], rows):
                return None
            return {view: stored[view] for view in VIEWS}
    except (AutomlError, OSError, ValueError, KeyError):  # damaged or from another version: train again
        return None


def _write(stem: Path, record: dict, rows: np.ndarray, views: MemberViews) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(stem.with_suffix(".npz")) as temporary, open(temporary, "wb") as handle:
        np.savez(handle, rows=rows, **views)
    write_json(stem.with_suffix(".json"), record)  # last: its presence marks the views finished
