"""`export-best` from start to end: the study and its data, candidate members picked over every complete trial and
trained (or copied from the search's kept weights), each judged as the fold ensemble it ships as (`repeats`), TTA,
vote and decision rule chosen on out-of-fold macro F1 with an honest cross-fitted figure beside the selection score,
the eval images predicted, and the export folder written.

Eval images are only ever predicted: nothing is chosen or fitted on them.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial

from automl.atomic import atomic_path, write_csv_atomic
from automl.data.cache import ImageSets
from automl.data.dataset import DataSource, load_dataset
from automl.data.face_crop import FaceCrop
from automl.data.study import StudyData, recorded_settings
from automl.errors import AutomlError
from automl.export.bundle import (
    CARD_FILE,
    MEMBERS_DIR,
    OOF_FILE,
    PREDICTIONS_FILE,
    SUBMISSION_FILE,
    ExportInfo,
    MemberInfo,
    member_dir,
    write_export_info,
    write_json,
)
from automl.export.card import model_card
from automl.export.decision import decide
from automl.export.greedy import GreedyOptions
from automl.export.members import (
    KEPT,
    MODES,
    REUSED,
    TRAINED,
    MemberPlan,
    TrainedModel,
    finished_model,
    model_files,
    pick_members,
    train_member,
)
from automl.export.plan import Candidate, ExportPlan, plan_export, search_fold_fits, seconds_per_fit
from automl.export.predict import MemberViews, ensemble_probs, member_views
from automl.export.repeats import (
    CACHE_DIR,
    cached_repeats,
    mean_views,
    repeated_views,
    ship_repeats,
    study_split_ready,
    study_split_views,
)
from automl.export.repeats import CACHED as REPEAT_CACHED
from automl.export.repeats import TRAINED as REPEAT_TRAINED
from automl.export.selection import AUTO, Library, Procedure, Settings, settings_for
from automl.export.submission import predictions_table, write_submission
from automl.export.tta import COMBINATIONS, PLAIN, VIEWS
from automl.search.artifacts import (
    TRIAL_OOF_FILE,
    WEIGHTS_PREFIX,
    WEIGHTS_SUFFIX,
    artifact_dir,
    find_artifact,
)
from automl.search.budget import describe_duration
from automl.search.storage import STORAGE_FILE, load_task_study, redact
from automl.train.metrics import macro_f1
from automl.train.session import Runtime, TrainSession
from automl.train.weights import ensure_weights

#: progress(description, done, total)
Progress = Callable[[str, int, int], None]
#: announce(line): the plan and what was left out, for a person
Announce = Callable[[str], None]


@dataclass(frozen=True)
class ExportJob:
    source: DataSource
    task: str
    home: Path
    out: Path
    storage_url: str | None = None
    study_name: str | None = None
    top_k: int = 3
    mode: str = "folds"
    distinct_backbones: bool = False
    device: str = "auto"
    loader_workers: int | None = None  # loader processes for training and predicting; None: as a search's
    method: str = AUTO  # the member selection: auto (by the honest figure) or one of selection.SELECTIONS
    decision_rule: str = AUTO  # auto | on | off
    greedy: GreedyOptions = field(default_factory=GreedyOptions)
    # Splits behind each out-of-fold figure (see repeats). 1: the study's folds only, the search's kept models judged
    # as they are; more buys honest fold-mean figures at (splits - 1) x folds fits per candidate (README, benchmark).
    cv_repeats: int = 1
    budget: float | None = None  # seconds of training the plan may take; None: a share of the search's fold fits

    def repeats(self) -> int:
        """The cross-validation splits each candidate is judged on."""
        if self.cv_repeats < 1:
            raise AutomlError(f"--cv-repeats {self.cv_repeats}: use 1 (the study's folds only) or more")
        if self.mode != "folds" and self.cv_repeats > 1:
            raise AutomlError("--cv-repeats judges a fold ensemble; --mode full ships one model, use --cv-repeats 1")
        return self.cv_repeats

    @property
    def selection(self) -> Settings:
        return settings_for(
            self.method, self.decision_rule, top_k=self.top_k, distinct_backbones=self.distinct_backbones,
            greedy=self.greedy,
        )  # fmt: skip


@dataclass
class ExportResult:
    directory: Path
    info: ExportInfo
    submission: Path | None = None
    reused: int = 0  # models of an earlier export to this folder
    trained: int = 0
    kept: int = 0  # fold weights the search kept, copied
    newly_trained: list[str] = field(default_factory=list)  # "member model" of each model trained by this run
    candidates: list[str] = field(default_factory=list)  # the trials judged on their own predictions
    repeats_trained: int = 0  # models of the other cross-validation splits (see repeats) trained by this run
    repeats_cached: int = 0  # and read back from an earlier export's
    plan: ExportPlan | None = None  # what was to be trained, and what was left out
    missing: list[str] = field(default_factory=list)  # complete trials whose out-of-fold file is not on this machine


def load_study(job: ExportJob) -> tuple[optuna.Study, BaseStorage]:
    """The job's study and the storage it was loaded from (where its trials' artifacts are listed)."""
    return load_task_study(job.storage_url, job.home, job.study_name or job.task, job.task)


def prepare_data(job: ExportJob, study: optuna.Study) -> tuple[StudyData, pd.DataFrame | None, ImageSets | None]:
    """The study's data and folds, checked against the study; the eval table and its images (per face crop)."""
    size = int(recorded_settings(study.study_name, study.user_attrs)["image_size"])
    dataset = load_dataset(job.source)
    task = dataset.task(job.task)
    train_images = ImageSets(job.home, size, dataset.train["path"])
    eval_images = None
    if dataset.eval is not None and not dataset.eval.empty:
        eval_images = ImageSets(job.home, size, dataset.eval["path"])
    data = StudyData.of_study(dataset, task, train_images, study.study_name, study.user_attrs)
    return data, dataset.eval, eval_images


def _load(images: ImageSets, crop: FaceCrop, what: str, progress: Progress | None) -> list[np.ndarray]:
    """`images` prepared with `crop` (from the cache, filling it where needed), with a progress line."""
    if progress is None:
        return images.get(crop)
    return images.get(crop, lambda done, total: progress(f"caching {what} images (face crop {crop.mode})", done, total))


def run_export(job: ExportJob, progress: Progress | None = None, announce: Announce | None = None) -> ExportResult:
    """Export the job's study; `announce(line)` hears the plan (before any training) and what was left out."""
    # The images uploaded to the device and the loader processes serve every model the export trains.
    with TrainSession(Runtime(device=job.device, num_workers=job.loader_workers)) as session:
        return _run_export(job, session, progress, announce or (lambda line: None))


def _run_export(job: ExportJob, session: TrainSession, progress: Progress | None, announce: Announce) -> ExportResult:
    if job.mode not in MODES:
        raise AutomlError(f"--mode {job.mode!r}: choose {' or '.join(MODES)}")
    settings = job.selection  # checks --method and --decision-rule before any work
    if job.top_k < 1:
        raise AutomlError(f"--top-k {job.top_k}: an ensemble needs at least one member; use --top-k 1 or more")
    if job.budget is not None and job.budget <= 0:
        raise AutomlError(f"--budget {job.budget:g} s: give a time above zero like 10m")
    study, storage = load_study(job)
    trials = study.get_trials(deepcopy=False)  # every trial read once; FrozenTrials below are these
    complete = pick_members(study, None, trials=trials)
    data, eval_table, eval_images = prepare_data(job, study)
    recorded = recorded_settings(study.study_name, study.user_attrs)
    seed, max_epochs = int(recorded["seed"]), int(recorded.get("max_epochs") or 1)
    n_folds = data.n_folds
    repeats = job.repeats()
    out = job.out
    out.mkdir(parents=True, exist_ok=True)
    true = data.true_labels
    frozen = {t.number: t for t in trials}

    # 1. The complete trials with out-of-fold probabilities on this machine (those without are named), and the plan:
    # which of them are judged on their own predictions (--mode folds), within the bound.
    found, missing = _searched(job, complete, frozen, data)
    searched = [member for member, _ in found]
    for name in missing:
        announce(
            f"left out {name}: its out-of-fold probabilities are not in {artifact_dir(job.home)} (another machine?)"
        )
    search_library = _search_library(found)
    caches = job.home / CACHE_DIR / study.study_name  # one folder per trial
    search_fits = search_fold_fits(trials, max_epochs)
    if job.mode == "folds":
        picked = Procedure(search_library, true, data.folds, settings).candidates()
        if 0 not in picked:  # the best trial is always judged
            picked = [0, *picked]
        work = [_candidate(job, searched[i], frozen, data, repeats, seed, caches, max_epochs) for i in picked]
        plan = plan_export(work, search_fits, job.budget)
    else:
        plan = ExportPlan([], [], search_fits, None, job.budget, shipped_fits=_most_members(settings))
    for line in plan.lines():
        announce(line)
    by_name = {p.name: p for p in searched}
    chosen = [by_name[c.name] for c in plan.chosen] if job.mode == "folds" else searched
    # Every candidate's weights before any image is cached or model trained: one message for all that are missing.
    pretrained = (p.params.backbone for p in chosen if p.params.pretrained and not p.params.weights_file)
    ensure_weights(pretrained, announce=None if progress is None else lambda text: progress(text, 0, 0))

    # 2. Each candidate judged on its own out-of-fold predictions (--mode folds): those of its fold models (read back
    # from <home>/cv_repeats, else predicted by the models, copied, reused or trained into the export folder) and,
    # with cv repeats, of the other splits' models: their mean is what the fold ensemble does with a new image. The
    # choices then see only these, all alike (--mode full: the search's predictions of every complete trial).
    counts = {TRAINED: 0, REUSED: 0, KEPT: 0}
    newly_trained: list[str] = []
    fold_models: dict[str, list[TrainedModel]] = {}

    def models_of(member: MemberPlan) -> list[TrainedModel]:
        """The plan's models in the export folder: reused, copied from the search's kept weights, or trained."""
        if member.name not in fold_models:
            fold_models[member.name] = _member_models(
                job, frozen[member.trial], member, data, session, counts, newly_trained, progress
            )
        return fold_models[member.name]

    repeat_counts = {REPEAT_TRAINED: 0, REPEAT_CACHED: 0}
    started, planned_out = time.monotonic(), len(plan.left_out)
    if job.mode == "folds":
        judged, all_views = [], []
        for index, candidate in enumerate(plan.chosen):
            elapsed = time.monotonic() - started
            if index and job.budget is not None and elapsed + (candidate.seconds or 0.0) > job.budget:
                plan.left_out.append((candidate, f"over the budget after {describe_duration(elapsed)}"))
                continue
            member = by_name[candidate.name]
            if progress is not None:
                progress(f"judging candidate {member.name}", index, len(plan.chosen))
            all_views.append(_judged_views(out, member, data, repeats, seed, caches / member.name, session, models_of,
                                           repeat_counts, progress))  # fmt: skip
            judged.append(member)
        library = Library(
            trials=[p.trial for p in judged],
            backbones=[str(p.config.get("backbone")) for p in judged],
            search=[views[PLAIN] for views in all_views],
            views=all_views,
        )
    else:
        judged, library = searched, search_library
    oof_f1 = {p.name: macro_f1(true, library.search[i].argmax(1)) for i, p in enumerate(judged)}
    if len(plan.left_out) > planned_out:  # what the time spent so far left no room for
        announce("left out: " + ", ".join(f"{c.name} ({why})" for c, why in plan.left_out[planned_out:]))

    # 3. Every choice on the judged candidates, and cross-fitted: the selection and the honest figure.
    if progress is not None:
        progress("cross-fitting the choices", 0, 1)
    procedure = Procedure(library, true, data.folds, settings)
    fitted, each_variant = procedure.judge()
    choice = fitted.choice
    variants = {v.name: figures for v, figures in each_variant.items()}

    # 4. The chosen candidates' models (only they stay in the export folder) and their eval predictions.
    positions = sorted(choice.members)  # the shipped members, best study value first
    shipped = [judged[i] for i in positions]

    def shipped_models(member: MemberPlan) -> list[TrainedModel]:
        """What was judged: the study split's fold models and, with cv repeats, every other split's."""
        own = models_of(member)
        if job.mode != "folds":
            return own
        directory = member_dir(out, member.name)
        return own + ship_repeats(caches / member.name, repeats, data.n_folds, directory, own[0].resolved)

    members = [_member(p, shipped_models(p), oof_f1[p.name], out) for p in shipped]
    _remove_stale_members(out, {m.name for m in members})
    eval_views = []
    for member in members if eval_images is not None else ():
        arrays = _load(eval_images, member.params.image_crop, "eval", progress)
        eval_views.append(
            member_views(out, member, data.task.num_classes, arrays, np.arange(len(arrays)), VIEWS, session)
        )
    everyone = np.arange(len(true))
    export = ExportInfo(
        task=job.task,
        classes=list(data.task.classes),
        study=study.study_name,
        mode=job.mode,
        image_size=int(recorded["image_size"]),
        mean=resolved_norm(members, "mean"),
        std=resolved_norm(members, "std"),
        members=members,
        ensemble={
            "selection": choice.variant.selection,
            "decision_rule": choice.variant.rule,
            "method": choice.vote,
            "members": [positions.index(i) for i in choice.members],
            "weights": [w / sum(choice.weights) for w in choice.weights],
            "selection_f1": fitted.selection_f1,
            "honest_f1": fitted.honest_f1,
            "library": len(library.trials),
            "cv_repeats": repeats,
            "candidates": {k: {"selection_f1": v.selection_f1, "honest_f1": v.honest_f1} for k, v in variants.items()},
        },
        tta={
            "views": list(choice.views),
            "selection_f1": {
                "+".join(combo): macro_f1(true, procedure.apply(replace(choice, views=combo), everyone))
                for combo in COMBINATIONS
                if all(
                    library.views[i] is not None and all(v in library.views[i] for v in combo) for i in choice.members
                )
            },
            "note": "" if job.mode == "folds" else "mode full: TTA not judged (no out-of-fold models)",
        },
        data={
            "path": str(job.source.path.absolute()),
            "fingerprint": data.fingerprint,
            "folds": n_folds,
            "seed": seed,
            "storage": redact(job.storage_url or f"sqlite:///{job.home / STORAGE_FILE}"),
            "train_images": len(true),
            "eval_images": 0 if eval_images is None else len(eval_images.paths),
        },
        class_weights=choice.class_weights,
    )

    # 5. Predictions and files.
    oof = procedure.probabilities(choice, everyone)
    oof_table = predictions_table(
        data.dataset.train["image_id"], oof, export.classes, decide(oof, choice.class_weights)
    )
    oof_table.insert(1, "true", true)
    oof_table.insert(2, "fold", data.folds)
    write_csv_atomic(oof_table, out / OOF_FILE)
    submission = None
    if eval_images is not None:
        probs = ensemble_probs(export, eval_views)
        codes = decide(probs, export.class_weights)
        table = predictions_table(eval_table["image_id"], probs, export.classes, codes)
        write_csv_atomic(table, out / PREDICTIONS_FILE)
        if data.dataset.layout == "competition":
            submission = out / SUBMISSION_FILE
            write_submission(eval_table["image_id"], codes, submission)
    write_export_info(out, export)
    with atomic_path(out / CARD_FILE) as temporary:
        temporary.write_text(model_card(export), encoding="utf-8")
    return ExportResult(
        out, export, submission, counts[REUSED], counts[TRAINED], counts[KEPT], newly_trained,
        [p.name for p in judged], repeat_counts[REPEAT_TRAINED], repeat_counts[REPEAT_CACHED], plan, missing,
    )  # fmt: skip


def _judged_views(
    out: Path,
    member: MemberPlan,
    data: StudyData,
    repeats: int,
    seed: int,
    cache: Path,
    session: TrainSession,
    models_of: Callable[[MemberPlan], list[TrainedModel]],
    counts: dict[str, int],
    progress: Progress | None,
) -> MemberViews:
    """The candidate's out-of-fold views: the study split's fold models' and, with cv repeats, the mean over every
    split's."""

    def predict() -> MemberViews:
        return _oof_views(out, _member(member, models_of(member)), data, session)

    views = study_split_views(member, data, seed, cache, predict)
    if repeats == 1:
        return views
    on_model, on_epoch = _repeat_progress(member, data, repeats, counts, progress)
    splits = repeated_views(member, data, repeats, seed, cache, session, on_model, on_epoch)
    return mean_views([views, *splits])


def _member_models(
    job: ExportJob,
    trial: FrozenTrial,
    plan: MemberPlan,
    data: StudyData,
    session: TrainSession,
    counts: dict[str, int],
    newly_trained: list[str],
    progress: Progress | None,
) -> list[TrainedModel]:
    """Copy (kept by the search), reuse (an earlier export) or train the plan's models in the export folder."""
    directory = member_dir(job.out, plan.name)
    directory.mkdir(parents=True, exist_ok=True)
    write_json(directory / "config.json", plan.config)
    total = len(model_files(job.mode, data.n_folds))
    done = [0]

    def on_model(name: str, source: str) -> None:
        counts[source] += 1
        done[0] += 1
        if source == TRAINED:
            newly_trained.append(f"{plan.name} {name}")
        if progress is not None:
            progress(f"{plan.name}: {name} {source}", done[0], total)

    def on_epoch(name: str, epoch: int) -> None:
        if progress is not None:
            progress(f"{plan.name}: training {name}, epoch {epoch}", done[0], total)

    _load(data.images, plan.params.image_crop, "training", progress)
    kept = _kept_weights(job, trial)
    return train_member(plan, data, job.mode, session, directory, on_model, on_epoch, kept)


def _member(
    plan: MemberPlan, models: list[TrainedModel], oof_f1: float = float("nan"), out: Path | None = None
) -> MemberInfo:
    """The member's description; with `out`, its resolved configuration is written beside its models."""
    resolved = models[0].resolved
    if out is not None:
        write_json(member_dir(out, plan.name) / "config.json", resolved)
    return MemberInfo(
        name=plan.name,
        trial=plan.trial,
        study_value=plan.study_value,
        oof_f1=oof_f1,
        config=resolved,
        models=[m.file for m in models],
        seeds=[m.seed for m in models],
        best_epochs=[m.best_epoch for m in models],
    )


def _repeat_progress(
    plan: MemberPlan, data: StudyData, repeats: int, counts: dict[str, int], progress: Progress | None
) -> tuple[Callable[[int, int, str], None], Callable[[int, int, int], None]]:
    """on_model and on_epoch for the other splits' models of a candidate, counting those trained and read back."""
    total = (repeats - 1) * data.n_folds
    done = [0]

    def on_model(repeat: int, fold: int, source: str) -> None:
        counts[source] += 1
        done[0] += 1
        if progress is not None:
            progress(f"{plan.name}: split {repeat + 1}/{repeats}, fold {fold}", done[0], total)

    def on_epoch(repeat: int, fold: int, epoch: int) -> None:
        if progress is not None:
            progress(f"{plan.name}: split {repeat + 1}/{repeats}, training fold {fold}, epoch {epoch}", done[0], total)

    return on_model, on_epoch


def _searched(
    job: ExportJob, complete: list[MemberPlan], frozen: dict[int, FrozenTrial], data: StudyData
) -> tuple[list[tuple[MemberPlan, np.ndarray]], list[str]]:
    """The complete trials (best first) with their search out-of-fold probabilities, and the names of those whose
    file is not on this machine (a study searched on several machines)."""
    found, missing = [], []
    for plan in complete:
        probs = _search_oof(job, frozen[plan.trial], data)
        if probs is None:
            missing.append(plan.name)
        else:
            found.append((plan, probs))
    if not found:
        raise AutomlError(
            f"no complete trial of the study has its out-of-fold probabilities in {artifact_dir(job.home)}; pass "
            "the --home the search used"
        )
    return found, missing


def _search_library(searched: list[tuple[MemberPlan, np.ndarray]]) -> Library:
    return Library(
        trials=[p.trial for p, _ in searched],
        backbones=[str(p.config.get("backbone")) for p, _ in searched],
        search=[probs for _, probs in searched],
        views=[None] * len(searched),
    )


def _candidate(
    job: ExportJob,
    member: MemberPlan,
    frozen: dict[int, FrozenTrial],
    data: StudyData,
    repeats: int,
    seed: int,
    caches: Path,
    max_epochs: int,
) -> Candidate:
    """What judging `member` costs: its study-split fold models not kept by the search nor finished in the export
    folder, and its other splits' not in the cache."""
    kept_weights = _kept_weights(job, frozen[member.trial])
    kept = {fold for fold in range(min(data.n_folds, len(member.best_epochs))) if kept_weights(fold) is not None}
    directory = member_dir(job.out, member.name)
    done = {fold for fold in range(data.n_folds) if finished_model(directory, member, fold, data)}
    ready = study_split_ready(member, data, seed, caches / member.name)
    fits = 0 if ready else data.n_folds - len(kept | done)
    fits += (repeats - 1) * data.n_folds - cached_repeats(member, data, repeats, seed, caches / member.name)
    return Candidate(member.name, member.trial, member.study_value, fits, len(kept),
                     seconds_per_fit(frozen[member.trial], max_epochs))  # fmt: skip


def _most_members(settings: Settings) -> int:
    """The most members a choice can ship (mode full trains one model for each)."""
    return max(settings.top_k, settings.greedy.size)


def _kept_weights(job: ExportJob, trial: FrozenTrial) -> Callable[[int], Path | None]:
    return lambda fold: find_artifact(job.home, trial, f"{WEIGHTS_PREFIX}{fold}{WEIGHTS_SUFFIX}")


def resolved_norm(members: list[MemberInfo], key: str) -> list[float] | None:
    """The normalisation shared by every member; None when backbones bring their own (see each config.json)."""
    values = {tuple(m.config[key]) for m in members}
    return list(next(iter(values))) if len(values) == 1 else None


def _oof_views(out: Path, member: MemberInfo, data: StudyData, session: TrainSession) -> MemberViews:
    """Out-of-fold probabilities: each image only from the fold model that did not train on it."""
    views = {v: np.full((len(data.true_labels), data.task.num_classes), np.nan) for v in VIEWS}
    for file in (f for f in member.models if f.startswith("fold")):  # the study split's (see repeats)
        fold = int(file.removeprefix("fold").removesuffix(WEIGHTS_SUFFIX))
        rows = np.flatnonzero(data.folds == fold)
        one = MemberInfo(**{**vars(member), "models": [file]})
        images = data.images.get(member.params.image_crop)
        probs = member_views(out, one, data.task.num_classes, images, rows, VIEWS, session)
        for view, p in probs.items():
            views[view][rows] = p
    assert not any(np.isnan(v).any() for v in views.values()), "every image has an out-of-fold prediction"
    return views


def _search_oof(job: ExportJob, trial: FrozenTrial, data: StudyData) -> np.ndarray | None:
    """The trial's out-of-fold probabilities from the search, in training-table order; None when not on disk."""
    path = find_artifact(job.home, trial, TRIAL_OOF_FILE)
    if path is None:
        return None
    table = pd.read_csv(path, dtype={"image_id": str}).set_index("image_id")
    ids = data.dataset.train["image_id"]
    if not ids.isin(table.index).all():
        raise AutomlError(f"trial {trial.number}'s out-of-fold probabilities miss some training images")
    return table.loc[ids, list(data.task.classes)].to_numpy(dtype=np.float64)


def _remove_stale_members(out: Path, keep: set[str]) -> None:
    """Members of an earlier export to this folder that are no longer chosen."""
    folder = out / MEMBERS_DIR
    for path in folder.iterdir() if folder.is_dir() else ():
        if path.is_dir() and path.name.startswith("trial") and path.name not in keep:
            shutil.rmtree(path)
