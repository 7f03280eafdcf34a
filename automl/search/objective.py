"""The k-fold objective: a trial trains every fold and scores the out-of-fold predictions on true labels.

Every trial of a study uses the same folds (grouped by person, from the study's seed). The value is the
macro F1 of all out-of-fold predictions together. The storage hears from a trial once per epoch (its report, which
the pruner reads) and once per fold; per-fold F1, per-class F1, best epochs, images per second, peak memory and
where the trial's time went are written when it ends, however it ends, so a pruned trial keeps its partial figures.

With a budget (`Deadline`), a trial whose next epoch would end past the deadline stops after this one: it fails
with the user attribute `cut_by_budget` (where it stopped) and keeps its finished folds' figures and out-of-fold
predictions. Failed, never complete: its value would score only some of the images, so the ranking, the export and
the sampler leave it out, and a resumed study does not count it as finished.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import optuna
import pandas as pd
from sklearn.metrics import confusion_matrix

from automl.data.study import StudyData
from automl.errors import AutomlError
from automl.search.artifacts import TRIAL_CURVES_FILE, TrialArtifacts
from automl.search.budget import Deadline
from automl.search.notes import save_trial_note, trial_note
from automl.search.pruning import epoch_step, fold_step
from automl.search.space import SearchSpace
from automl.search.storage import StorageUnavailable
from automl.train.engine import FoldData, FoldFailed, train_fold
from automl.train.metrics import accuracy, macro_f1, per_class_f1
from automl.train.params import TrainParams
from automl.train.session import TrainSession
from automl.train.targets import training_ages, training_labels

#: The trial's user attribute that says why it failed.
FAIL_REASON = "fail_reason"
#: The study's user attribute holding the face-crop prior learned from its training images.
FACE_PRIOR = "face_crop_prior"
#: The trial's user attribute of where its time went: seconds training, validating, other (set-up, saving, storage).
TIME_SPENT = "seconds"
#: The trial's user attribute set when the budget stopped it: where ("fold 2 epoch 3, 1 of 5 folds finished").
CUT_BY_BUDGET = "cut_by_budget"


class BudgetCut(Exception):
    """The budget ran out at an epoch boundary: the trial ends there, failed, with its finished folds kept."""


def fold_data(
    data: StudyData, fold: int, train_labels: np.ndarray, params: TrainParams, ages: np.ndarray | None = None
) -> FoldData:
    """Fold `fold` validates; the others train, on `train_labels` and `ages` (the age options may bend them), with
    the images as `params` crops them (a trial's prior box is filled in by the objective first)."""
    return FoldData(
        images=data.images.get(params.image_crop),
        true_labels=data.true_labels,
        train_labels=train_labels,
        train_index=np.flatnonzero(data.folds != fold),
        val_index=np.flatnonzero(data.folds == fold),
        num_classes=data.task.num_classes,
        task=data.task,
        ages=ages,
    )


class KFoldObjective:
    def __init__(
        self,
        space: SearchSpace,
        data: StudyData,
        session: TrainSession,
        artifacts: TrialArtifacts | None = None,
        on_fold: Callable[[optuna.Trial, int], None] | None = None,
        on_progress: Callable[[int, str], None] | None = None,
        deadline: Deadline | None = None,
    ):
        self.space, self.data, self.session, self.artifacts, self.on_fold = space, data, session, artifacts, on_fold
        self.on_progress = on_progress  # (trial number, "fold 2/5 epoch 4/25 ...") after every epoch
        self.deadline = deadline

    def __call__(self, trial: optuna.Trial) -> float:
        started, spent = time.perf_counter(), replace(self.session.spent)
        reachable = True
        try:
            return self._run(trial)
        except optuna.TrialPruned:
            raise
        except BudgetCut as cut:
            trial.set_user_attr(CUT_BY_BUDGET, str(cut))
            trial.set_user_attr(FAIL_REASON, f"cut by the budget at {cut}")
            raise
        except StorageUnavailable:
            reachable = False  # there is nowhere to write a reason
            raise
        except Exception as error:  # contained: the trial fails with its reason, the study goes on
            trial.set_user_attr(FAIL_REASON, f"{type(error).__name__}: {error}")
            if not isinstance(error, FoldFailed | AutomlError):  # unexpected: keep where it was, for a bug report
                trial.set_user_attr("fail_traceback", traceback.format_exc()[-2000:])
            raise
        finally:
            if reachable:
                now = self.session.spent
                trial.set_user_attr(TIME_SPENT, time_spent(
                    time.perf_counter() - started, now.training - spent.training, now.validating - spent.validating
                ))  # fmt: skip

    def _run(self, trial: optuna.Trial) -> float:
        params = self._with_face_prior(trial, self.space.suggest(trial))
        trial.set_user_attr("config", params.to_dict())
        self._cache_images(trial.number, params)
        for name, value in self.space.fixed_values(params).items():  # beside the sampled ones in the dashboard
            trial.set_user_attr(f"fixed.{name}", value)
        data, epochs = self.data, self.space.settings.max_epochs
        train_labels = training_labels(data.task, data.dataset.train, params)
        ages = training_ages(data.task, data.dataset.train, params)
        probs = np.full((len(data.true_labels), data.task.num_classes), np.nan, dtype=np.float32)
        curves, figures, states = (
            [],
            {"fold_f1": [], "best_epoch": [], "images_per_second": [], "peak_memory_mb": []},
            [],
        )
        n_folds = self.space.settings.folds
        try:
            for fold in range(n_folds):
                inputs = fold_data(data, fold, train_labels, params, ages)
                watch = _EpochWatch(fold, n_folds, epochs, inputs.train_index.size + inputs.val_index.size)
                watch.show(trial.number, self.on_progress)

                def report(epoch: int, f1: float, fold: int = fold, watch: _EpochWatch = watch) -> None:
                    watch.epoch_done(epoch, f1)
                    watch.show(trial.number, self.on_progress)
                    trial.report(f1, epoch_step(fold, epoch, epochs))  # the epoch's one write to the storage
                    if trial.should_prune():
                        raise optuna.TrialPruned(f"fold {fold} epoch {epoch}: macro F1 {f1:.3f} below other trials")
                    last = fold == n_folds - 1 and epoch == epochs  # nothing left to cut
                    if self.deadline is not None and not last and self.deadline.remaining() < watch.seconds:
                        raise BudgetCut(f"fold {fold + 1} epoch {epoch}, {fold} of {n_folds} folds finished")

                fold_params = replace(params, seed=params.seed + fold)
                result = train_fold(inputs, fold_params, self.session, report)
                probs[result.val_index] = result.val_probs
                curves += [{"fold": fold, **vars(record)} for record in result.curve]
                figures["fold_f1"].append(round(result.best_f1, 5))
                figures["best_epoch"].append(result.best_epoch)
                figures["images_per_second"].append(round(result.images_per_second, 1))
                figures["peak_memory_mb"].append(round(result.peak_memory_mb, 1))
                states.append(result.state_dict)
                if self.on_fold is not None:
                    self.on_fold(trial, fold)
                if fold < n_folds - 1:
                    trial.report(float(np.mean(figures["fold_f1"])), fold_step(fold, epochs))
                    if trial.should_prune():
                        raise optuna.TrialPruned(f"after fold {fold}: mean macro F1 {np.mean(figures['fold_f1']):.3f}")
        finally:
            for key, values in figures.items():
                if values:
                    trial.set_user_attr(key, values)
            self._upload_figures(trial, curves, probs)
        predicted = probs.argmax(1)
        value = macro_f1(data.true_labels, predicted)
        class_f1 = per_class_f1(data.true_labels, predicted, data.task.num_classes)
        trial.set_user_attr("accuracy", round(accuracy(data.true_labels, predicted), 5))
        trial.set_user_attr("class_f1", dict(zip(data.task.classes, np.round(class_f1, 4).tolist(), strict=True)))
        confusion = confusion_matrix(data.true_labels, predicted, labels=np.arange(data.task.num_classes))
        kept = False
        if self.artifacts is not None:
            kept = self.artifacts.keep_weights(trial.study, trial, value, states)
        save_trial_note(trial, trial_note(trial.number, value, data.task, class_f1, confusion, figures, kept))
        return value

    def _with_face_prior(self, trial: optuna.Trial, params: TrainParams) -> TrainParams:
        """A center / face crop without a box gets the study's learned prior: learned once, kept on the study,
        and written into the trial's config so the export and `predict` crop exactly as the trial did."""
        if params.face_crop == "none" or params.face_crop_box is not None:
            return params
        prior = trial.study.user_attrs.get(FACE_PRIOR)
        if prior is None:
            learned = self.data.learned_prior()
            prior = list(learned.box)
            trial.study.set_user_attr(FACE_PRIOR, prior)
            trial.study.set_user_attr("face_crop_prior_faces", f"{learned.faces} of {learned.sampled} sampled images")
        return replace(params, face_crop_box=tuple(prior))

    def _cache_images(self, number: int, params: TrainParams) -> None:
        """Load (decoding where needed) the trial's face crop up front, shown: a new crop takes minutes."""
        if self.on_progress is None:
            return  # the folds load it when they first ask
        on_progress = self.on_progress

        def step(done: int, total: int) -> None:
            if done % 100 == 0 or done == total:
                on_progress(number, f"caching images (face crop {params.face_crop}) {done}/{total}")

        self.data.images.get(params.image_crop, progress=step)

    def _upload_figures(self, trial: optuna.Trial, curves: list[dict], probs: np.ndarray) -> None:
        if self.artifacts is None or not curves:
            return
        self.artifacts.upload_json(trial, "config.json", trial.user_attrs.get("config", {}))
        self.artifacts.upload_table(trial, TRIAL_CURVES_FILE, pd.DataFrame(curves))
        scored = ~np.isnan(probs[:, 0])
        ids = self.data.dataset.train["image_id"].to_numpy()
        self.artifacts.upload_probabilities(trial, ids[scored], probs[scored], self.data.task.classes)


def time_spent(total: float, training: float, validating: float) -> dict[str, float]:
    """A trial's seconds: training epochs, validating, everything else (set-up, saving, the storage), and in all."""
    other = max(0.0, total - training - validating)
    return {"training": round(training, 3), "validating": round(validating, 3), "other": round(other, 3),
            "total": round(training + validating + other, 3)}  # fmt: skip


class _EpochWatch:
    """The running trial's fold, epoch, F1, throughput and epoch time, for the display and the budget (not the
    storage: the dashboard and the other workers read the trial's reports)."""

    def __init__(self, fold: int, folds: int, epochs: int, images: int):
        self.fold, self.folds, self.epochs, self.images = fold, folds, epochs, images
        self.epoch, self.f1, self.per_second = 0, None, None
        self.seconds = 0.0  # the last epoch's, trained and validated: what the next one will take, about
        self.started = time.perf_counter()

    def epoch_done(self, epoch: int, f1: float) -> None:
        now = time.perf_counter()
        self.epoch, self.f1 = epoch, f1
        self.seconds = max(now - self.started, 1e-9)
        self.per_second = self.images / self.seconds  # trained and validated, per wall second
        self.started = now

    def show(self, number: int, on_progress: Callable[[int, str], None] | None) -> None:
        if on_progress is None:
            return
        text = f"fold {self.fold + 1}/{self.folds} epoch {self.epoch}/{self.epochs}"
        if self.f1 is not None:
            text += f"  F1 {self.f1:.3f}  {self.per_second:.0f} images/s"
        on_progress(number, text)
