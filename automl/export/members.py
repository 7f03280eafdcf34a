"""The members of an export: the best complete trials of a study, each retrained from its configuration.

Mode `folds` trains one model per fold of the study's folds, with the seeds the search used (`seed + fold`), so
each model's predictions on its own validation fold are honest out-of-fold predictions. Mode `full` trains one
model on every training image for the median best epoch of the trial's folds (the learning-rate schedule runs as
it did in the search, stopped at that epoch).

A fold model whose weights the search kept (`automl search --keep-top`) is copied from the trial's artifacts, not
trained again: the search trained it with the same configuration, data, fold and seed.

Every model file is written atomically with a json beside it (written last, with its seed and configuration): a
rerun skips the models whose json matches, so an interrupted export resumes where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from automl.atomic import link_or_copy
from automl.data.study import StudyData
from automl.errors import AutomlError
from automl.export.bundle import read_json, save_weights, write_json
from automl.search.artifacts import WEIGHTS_SUFFIX
from automl.search.objective import fold_data
from automl.search.ranking import best_trials
from automl.train.device import cpu_state
from automl.train.engine import FoldData, FoldRun, resolved_params, train_fold
from automl.train.params import TrainParams
from automl.train.session import TrainSession
from automl.train.targets import training_ages, training_labels

MODES = ("folds", "full")
FULL_MODEL = "full"
#: Where a member's model came from (on_model's second argument).
TRAINED, REUSED, KEPT = "trained", "reused from an earlier export", "kept by the search"

#: kept(fold) -> the search's weights file of that fold of the trial, or None.
KeptWeights = Callable[[int], Path | None]


@dataclass(frozen=True)
class MemberPlan:
    """A trial chosen for the export."""

    name: str
    trial: int
    study_value: float
    config: dict[str, Any]  # the trial's TrainParams.to_dict()
    best_epochs: list[int]  # per fold, from the search

    @property
    def params(self) -> TrainParams:
        return TrainParams.from_dict(self.config)


@dataclass
class TrainedModel:
    file: str  # the weights' file name in the member's folder
    seed: int
    best_epoch: int
    resolved: dict[str, Any]  # the configuration with the normalisation it trained with


def pick_members(study: optuna.Study, top_k: int | None, distinct_backbones: bool = False) -> list[MemberPlan]:
    """The `top_k` complete trials by value (every one with None; optionally at most one per backbone), best first."""
    if top_k is not None and top_k < 1:
        raise AutomlError(f"--top-k {top_k}: an ensemble needs at least one member; use --top-k 1 or more")
    complete = [t for t in best_trials(study) if isinstance(t.user_attrs.get("config"), dict)]
    if not complete:
        raise AutomlError(
            f"study {study.study_name!r} has no complete trials to export yet; run automl search "
            f"--task {study.user_attrs.get('task', study.study_name)} first (pruned and failed trials do not count)"
        )
    chosen, backbones = [], set()
    for trial in complete:
        backbone = trial.user_attrs["config"].get("backbone")
        if distinct_backbones and backbone in backbones:
            continue
        backbones.add(backbone)
        chosen.append(
            MemberPlan(
                name=f"trial{trial.number}",
                trial=trial.number,
                study_value=float(trial.value),
                config=dict(trial.user_attrs["config"]),
                best_epochs=[int(e) for e in trial.user_attrs.get("best_epoch", [])],
            )
        )
        if len(chosen) == top_k:
            break
    return chosen


def model_files(mode: str, n_folds: int) -> list[str]:
    return [f"fold{k}" for k in range(n_folds)] if mode == "folds" else [FULL_MODEL]


def full_epochs(plan: MemberPlan) -> int:
    """The median best epoch of the trial's folds (at least 1)."""
    if not plan.best_epochs:
        raise AutomlError(f"trial {plan.trial} recorded no best epochs; export it with --mode folds")
    return max(1, int(round(float(np.median(plan.best_epochs)))))


def train_member(
    plan: MemberPlan,
    data: StudyData,
    mode: str,
    session: TrainSession,
    directory: Path,
    on_model: Callable[[str, str], None] | None = None,
    on_epoch: Callable[[str, int], None] | None = None,
    kept: KeptWeights | None = None,
) -> list[TrainedModel]:
    """Train (or reuse, or copy from the search) the member's models in `directory`; `on_model(name, source)` after
    each, source one of TRAINED, REUSED, KEPT, and `on_epoch(name, epoch)` after each epoch it trains."""
    params = plan.params
    labels = training_labels(data.task, data.dataset.train, params)
    ages = training_ages(data.task, data.dataset.train, params)
    models = []
    for name in model_files(mode, data.n_folds):
        fold = None if name == FULL_MODEL else int(name.removeprefix("fold"))
        seed = params.seed + (fold or 0)
        epochs = full_epochs(plan) if fold is None else None
        done = _finished(directory, name, plan.config, seed, epochs)
        source = REUSED
        kept_file = None if (done is not None or fold is None or kept is None) else kept(fold)
        if kept_file is not None and fold is not None and fold < len(plan.best_epochs):
            link_or_copy(kept_file, directory / f"{name}{WEIGHTS_SUFFIX}")
            record = {
                "config": plan.config,
                "resolved": resolved_params(params, data.task, ages).to_dict(),
                "seed": seed,
                "best_epoch": plan.best_epochs[fold],
                "epochs": epochs,
                "trained_on": f"every fold but fold {fold}",
                "kept_from": f"trial {plan.trial} of the search",
            }
            write_json(directory / f"{name}.json", record)
            done, source = record, KEPT
        if done is None:
            source = TRAINED
            epoch_done = None if on_epoch is None else lambda epoch, *_, name=name: on_epoch(name, epoch)
            if fold is None:
                state, resolved, best_epoch = _train_full(
                    data, labels, ages, replace(params, seed=seed), session, epochs, epoch_done
                )
            else:
                inputs = fold_data(data, fold, labels, params, ages)
                result = train_fold(inputs, replace(params, seed=seed), session, epoch_done)
                state, best_epoch = result.state_dict, result.best_epoch
                resolved = result.params.to_dict()
            save_weights(state, directory / f"{name}{WEIGHTS_SUFFIX}")
            record = {
                "config": plan.config,
                "resolved": resolved,
                "seed": seed,
                "best_epoch": best_epoch,
                "epochs": epochs,
                "trained_on": "every training image" if fold is None else f"every fold but fold {fold}",
            }
            write_json(directory / f"{name}.json", record)  # last: its presence marks the model finished
            done = record
        models.append(TrainedModel(f"{name}{WEIGHTS_SUFFIX}", seed, int(done["best_epoch"]), done["resolved"]))
        if on_model is not None:
            on_model(name, source)
    return models


def _finished(directory: Path, name: str, config: dict, seed: int, epochs: int | None) -> dict | None:
    """The json of a model finished by an earlier run with the same configuration and seed, else None."""
    record_path, weights = directory / f"{name}.json", directory / f"{name}{WEIGHTS_SUFFIX}"
    if not (record_path.is_file() and weights.is_file()):
        return None
    try:
        record = read_json(record_path)
    except AutomlError:
        return None
    if record.get("config") != config or record.get("seed") != seed or record.get("epochs") != epochs:
        return None
    return {**record, "reused": True}


def _train_full(
    data: StudyData,
    labels: np.ndarray,
    ages: np.ndarray | None,
    params: TrainParams,
    session: TrainSession,
    epochs: int,
    on_epoch: Callable[[int], None] | None = None,
) -> tuple[dict, dict[str, Any], int]:
    """Train on every training image for `epochs` epochs of the trial's schedule; no validation, no early stop."""
    fold_data = FoldData(
        images=data.images.get(params.image_crop),
        true_labels=data.true_labels,
        train_labels=labels,
        train_index=np.arange(len(data.true_labels)),
        val_index=np.zeros(0, dtype=np.int64),
        num_classes=data.task.num_classes,
        task=data.task,
        ages=ages,
    )
    run = FoldRun(fold_data, params, session)
    for epoch in range(1, min(epochs, params.epochs) + 1):
        run.train_steps(run.train_loader, epoch)
        if on_epoch is not None:
            on_epoch(epoch)
    trained = run.ema.module if run.ema is not None else run.model
    return cpu_state(trained), run.params.to_dict(), epochs
