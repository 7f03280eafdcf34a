"""`export-best` from start to end, a short pipeline: the study and its data; the plan (which candidate trials are
judged, within a tenth of the search's fold fits or the budget: plan.py); each candidate judged on its own
out-of-fold predictions from the fold-model store (store.py), as the fold ensemble it ships as; members, TTA, vote
and decision rule chosen on them with an honest cross-fitted figure beside the selection score (selection.py); the
chosen members' models linked into the export folder, the eval images predicted, and the files written.

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

from automl.atomic import atomic_path, link_or_copy, write_csv_atomic
from automl.data.cache import ImageSets
from automl.data.dataset import DataSource, load_dataset
from automl.data.face_crop import FaceCrop
from automl.data.study import StudyData, recorded_settings
from automl.errors import AutomlError
from automl.export.bundle import (
    CARD_FILE,
    FULL_MODEL,
    MEMBERS_DIR,
    OOF_FILE,
    PREDICTIONS_FILE,
    SUBMISSION_FILE,
    DataInfo,
    EnsembleInfo,
    ExportInfo,
    MemberInfo,
    TtaInfo,
    member_dir,
    write_export_info,
    write_json,
)
from automl.export.card import model_card
from automl.export.crossfit import Fitted
from automl.export.decision import decide
from automl.export.greedy import GreedyOptions
from automl.export.members import MODES, MemberPlan, full_epochs, pick_members
from automl.export.plan import Candidate, ExportPlan, plan_export, search_fold_fits, seconds_per_fit
from automl.export.predict import MemberViews, ensemble_probs, member_views
from automl.export.selection import AUTO, Library, Plan, Procedure, Settings, settings_for
from automl.export.store import (
    KEPT,
    STORED,
    TRAINED,
    FoldStore,
    OnEpoch,
    OnModel,
    StoredModel,
    mean_views,
)
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

#: Cross-validation splits behind each candidate's figures by default (see ExportJob.cv_repeats).
DEFAULT_REPEATS = 2

#: Which trials train the other cross-validation splits' models (ExportJob.repeats_for).
REPEATS_FOR = ("candidates", "shipped")

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
    # Splits behind each out-of-fold figure (store.py): 1, the study's folds only (the search's kept models judged as
    # they are); each more costs folds fits per candidate, and judges (and ships) a mean of fold models as a new
    # image gets it. 2 by default: with 1, a decision rule fitted on single models misfits the shipped mean
    # (benchmarks/ensemble_selection.py, README).
    cv_repeats: int | None = None  # None: DEFAULT_REPEATS in mode folds, 1 in mode full
    # Which trials get the other splits' models: "candidates" (every judged one: its figures are the mean of splits
    # the shipped ensemble is) or "shipped" (only the chosen members, after a choice on the study's folds alone).
    repeats_for: str = "candidates"
    budget: float | None = None  # seconds of training the plan may take; None: a share of the search's fold fits

    def judged_splits(self) -> int:
        """The splits each candidate is judged on: all of them, or the study's own with --repeats-for shipped."""
        return self.repeats() if self.repeats_for == "candidates" else 1

    def repeats(self) -> int:
        """The cross-validation splits each candidate is judged on."""
        if self.cv_repeats is None:
            return DEFAULT_REPEATS if self.mode == "folds" else 1
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


def run_export(
    job: ExportJob,
    progress: Progress | None = None,
    announce: Announce | None = None,
    study: optuna.Study | None = None,
) -> ExportResult:
    """Export the job's study (`study` when the caller loaded it already); `announce(line)` hears the plan (before
    any training) and what was left out."""
    # The images uploaded to the device and the loader processes serve every model the export trains.
    with TrainSession(Runtime(device=job.device, num_workers=job.loader_workers)) as session:
        return _run_export(job, session, progress, announce or (lambda line: None), study or load_study(job)[0])


@dataclass
class ModelCounts:
    """What the export's models came from: the study split's (trained, linked from the search's kept weights, read
    back from the store) and the other splits' (trained, read back)."""

    trained: int = 0
    kept: int = 0
    reused: int = 0
    repeats_trained: int = 0
    repeats_stored: int = 0
    newly_trained: list[str] = field(default_factory=list)  # "member model" of each model trained

    def callbacks(self, member: MemberPlan, progress: Progress | None) -> tuple[OnModel, OnEpoch]:
        def on_model(split: int, fold: int | None, source: str) -> None:
            where = model_label(split, fold)
            if split == 0:
                self.trained += source == TRAINED
                self.kept += source == KEPT
                self.reused += source == STORED
            else:
                self.repeats_trained += source == TRAINED
                self.repeats_stored += source == STORED
            if source == TRAINED:
                self.newly_trained.append(f"{member.name} {where}")
            if progress is not None:
                progress(f"{member.name}: {where} {source}", 0, 0)

        def on_epoch(split: int, fold: int | None, epoch: int) -> None:
            if progress is not None:
                progress(f"{member.name}: training {model_label(split, fold)}, epoch {epoch}", 0, 0)

        return on_model, on_epoch


def _run_export(
    job: ExportJob, session: TrainSession, progress: Progress | None, announce: Announce, study: optuna.Study
) -> ExportResult:
    _check(job)
    export = _Export.open(job, session, progress, announce, study)
    plan = export.plan()
    judged, library = export.judge(plan)
    procedure, fitted = export.choose(library)
    members = export.ship(plan, judged, library, fitted.choice)
    return export.write(plan, judged, library, procedure, fitted, members)


def _check(job: ExportJob) -> None:
    """The job's options, before any work."""
    if job.mode not in MODES:
        raise AutomlError(f"--mode {job.mode!r}: choose {' or '.join(MODES)}")
    if job.repeats_for not in REPEATS_FOR:
        raise AutomlError(f"--repeats-for {job.repeats_for!r}: choose {' or '.join(REPEATS_FOR)}")
    job.selection  # noqa: B018 (building the settings checks --method and --decision-rule)
    if job.top_k < 1:
        raise AutomlError(f"--top-k {job.top_k}: an ensemble needs at least one member; use --top-k 1 or more")
    if job.budget is not None and job.budget <= 0:
        raise AutomlError(f"--budget {job.budget:g} s: give a time above zero like 10m")
    job.repeats()  # checks --cv-repeats


@dataclass
class _Export:
    """One export's study, data and store, and what it has so far: the stages of run_export are its methods."""

    job: ExportJob
    session: TrainSession
    progress: Progress | None
    announce: Announce
    study: optuna.Study
    trials: list[FrozenTrial]  # every trial, read once
    data: StudyData
    eval_table: pd.DataFrame | None
    eval_images: ImageSets | None
    seed: int
    max_epochs: int
    searched: list[MemberPlan]  # complete trials with their out-of-fold file here, best first
    search_library: Library  # their search predictions
    missing: list[str]  # complete trials whose out-of-fold file is not here
    store: FoldStore
    frozen: dict[int, FrozenTrial]  # the trials by number
    image_size: int
    counts: ModelCounts = field(default_factory=ModelCounts)
    models: dict[str, list[StoredModel]] = field(default_factory=dict)  # each judged or shipped trial's models
    started: float = field(default_factory=time.monotonic)
    variants: dict[str, Fitted] = field(default_factory=dict)  # each variant's figures, once chosen

    def __post_init__(self) -> None:
        self.by_name = {p.name: p for p in self.searched}

    @classmethod
    def open(
        cls, job: ExportJob, session: TrainSession, progress: Progress | None, announce: Announce, study: optuna.Study
    ) -> _Export:
        """The study's trials and data, and the complete trials with out-of-fold probabilities on this machine
        (those without are named)."""
        trials = study.get_trials(deepcopy=False)  # every trial read once; FrozenTrials below are these
        complete = pick_members(study, None, trials=trials)  # first: "no complete trials" is the clearer error
        data, eval_table, eval_images = prepare_data(job, study)
        recorded = recorded_settings(study.study_name, study.user_attrs)
        seed = int(recorded["seed"])
        frozen = {t.number: t for t in trials}
        found, missing = _searched(job, complete, frozen, data)
        for name in missing:
            announce(
                f"left out {name}: its out-of-fold probabilities are not in {artifact_dir(job.home)} (another machine?)"
            )
        job.out.mkdir(parents=True, exist_ok=True)
        return cls(
            job, session, progress, announce, study, trials, data, eval_table, eval_images, seed,
            int(recorded.get("max_epochs") or 1), [member for member, _ in found], _search_library(found), missing,
            FoldStore(job.home, data, seed, session), frozen, int(recorded["image_size"]),
        )  # fmt: skip

    # -- 1. the plan ------------------------------------------------------------------------------------------------
    def plan(self) -> ExportPlan:
        """Which candidates are judged on their own predictions (mode folds), within the bound; said first. Every
        candidate's weights are found before any image is cached or model trained (one message for all missing)."""
        job, settings = self.job, self.job.selection
        search_fits = search_fold_fits(self.trials, self.max_epochs)
        if job.mode == "folds":
            picked = Procedure(self.search_library, self.data.true_labels, self.data.folds, settings).candidates()
            if 0 not in picked:  # the best trial is always judged
                picked = [0, *picked]
            work = []
            for member in (self.searched[i] for i in picked):
                fits, kept = self.store.to_train(member, job.judged_splits(), self.kept(member))
                work.append(Candidate(member.name, member.trial, member.study_value, fits, kept,
                                      self.seconds_per_fit(member)))  # fmt: skip
            # --repeats-for shipped: room kept for the other splits of as many members as a top-k vote ships
            shipped_each = (job.repeats() - job.judged_splits()) * self.data.n_folds
            plan = plan_export(work, search_fits, job.budget, shipped_each, settings.top_k)
            chosen = [self.member(c.name) for c in plan.chosen]
        else:
            plan = ExportPlan([], [], search_fits, None, job.budget, shipped_fits=_most_members(settings))
            chosen = self.searched
        for line in plan.lines():
            self.announce(line)
        pretrained = (p.params.backbone for p in chosen if p.params.pretrained and not p.params.weights_file)
        ensure_weights(pretrained, announce=None if self.progress is None else lambda t: self.progress(t, 0, 0))
        return plan

    # -- 2. the candidates judged -----------------------------------------------------------------------------------
    def judge(self, plan: ExportPlan) -> tuple[list[MemberPlan], Library]:
        """Each candidate judged on its own out-of-fold predictions (mode folds): those of its fold models (from the
        store: read back, linked from the search's kept weights, or trained) and, with cv repeats, of the other
        splits' models: their mean is what the fold ensemble does with a new image. The choices then see only
        these, all alike (mode full: the search's predictions of every complete trial)."""
        if self.job.mode != "folds":
            return self.searched, self.search_library
        judged, all_views, planned_out = [], [], len(plan.left_out)
        for index, candidate in enumerate(plan.chosen):
            elapsed = time.monotonic() - self.started
            if index and self.job.budget is not None and elapsed + (candidate.seconds or 0.0) > self.job.budget:
                plan.left_out.append((candidate, f"over the budget after {describe_duration(elapsed)}"))
                continue
            member = self.member(candidate.name)
            self.load_training(member)
            if self.progress is not None:
                self.progress(f"judging candidate {member.name}", index, len(plan.chosen))
            splits = range(self.job.judged_splits())
            all_views.append(mean_views([self.split_views(member, split) for split in splits]))
            judged.append(member)
        if len(plan.left_out) > planned_out:  # what the time spent so far left no room for
            self.announce("left out: " + ", ".join(f"{c.name} ({why})" for c, why in plan.left_out[planned_out:]))
        library = Library(
            trials=[p.trial for p in judged],
            backbones=[str(p.config.get("backbone")) for p in judged],
            search=[views[PLAIN] for views in all_views],
            views=all_views,
        )
        return judged, library

    # -- 3. the choice ----------------------------------------------------------------------------------------------
    def choose(self, library: Library) -> tuple[Procedure, Fitted]:
        """Every choice on the judged candidates, and cross-fitted: the selection and the honest figure."""
        if self.progress is not None:
            self.progress("cross-fitting the choices", 0, 1)
        procedure = Procedure(library, self.data.true_labels, self.data.folds, self.job.selection)
        fitted, each_variant = procedure.judge()
        self.variants = {v.name: figures for v, figures in each_variant.items()}
        return procedure, fitted

    # -- 4. the chosen members' models -----------------------------------------------------------------------------
    def ship(self, plan: ExportPlan, judged: list[MemberPlan], library: Library, choice: Plan) -> list[MemberInfo]:
        """The chosen members' models, linked into the export folder (only they stay there): mode full trains one
        on every image; --repeats-for shipped trains the other splits' while the bound leaves room."""
        positions = sorted(choice.members)  # the shipped members, best study value first
        for member in (judged[i] for i in positions) if self.job.mode == "full" else ():
            self.load_training(member)
            on_model, on_epoch = self.counts.callbacks(member, self.progress)
            model, source = self.store.full_model(member, full_epochs(member), lambda e, f=on_epoch: f(0, None, e))
            on_model(0, None, source)
            self.models[member.name] = [model]
        for member in (judged[i] for i in positions) if plan.shipped_each else ():
            other = range(self.job.judged_splits(), self.job.repeats())
            need = self.store.to_train(member, other.stop, self.kept(member), other.start)[0]
            if not plan.room(need, time.monotonic() - self.started, self.seconds_per_fit(member)):
                self.announce(f"left out: {member.name}'s other splits (no room left in the bound); it ships its "
                              "study folds")  # fmt: skip
                continue
            plan.shipped_fits += need
            for split in other:
                self.split_views(member, split)
        true = self.data.true_labels
        members = [
            _ship(self.job.out, judged[i], self.models[judged[i].name], macro_f1(true, library.search[i].argmax(1)))
            for i in positions
        ]
        _remove_stale_members(self.job.out, {m.name for m in members})
        return members

    # -- 5. the files -----------------------------------------------------------------------------------------------
    def write(
        self,
        plan: ExportPlan,
        judged: list[MemberPlan],
        library: Library,
        procedure: Procedure,
        fitted: Fitted,
        members: list[MemberInfo],
    ) -> ExportResult:
        """export.json and the model card, the ensemble's out-of-fold predictions, and the eval images' predictions
        (and submission.csv in the competition layout)."""
        data, out, choice = self.data, self.job.out, fitted.choice
        export = self.info(library, procedure, fitted, members)
        everyone = np.arange(len(data.true_labels))
        oof = procedure.probabilities(choice, everyone)
        oof_table = predictions_table(
            data.dataset.train["image_id"], oof, export.classes, decide(oof, choice.class_weights)
        )
        oof_table.insert(1, "true", data.true_labels)
        oof_table.insert(2, "fold", data.folds)
        write_csv_atomic(oof_table, out / OOF_FILE)
        submission = None
        if self.eval_images is not None:
            eval_views = []
            for member in members:
                arrays = _load(self.eval_images, member.params.image_crop, "eval", self.progress)
                eval_views.append(member_views(out, member, data.task.num_classes, arrays, np.arange(len(arrays)),
                                               VIEWS, self.session))  # fmt: skip
            probs = ensemble_probs(export, eval_views)
            codes = decide(probs, export.class_weights)
            table = predictions_table(self.eval_table["image_id"], probs, export.classes, codes)
            write_csv_atomic(table, out / PREDICTIONS_FILE)
            if data.dataset.layout == "competition":
                submission = out / SUBMISSION_FILE
                write_submission(self.eval_table["image_id"], codes, submission)
        write_export_info(out, export)
        with atomic_path(out / CARD_FILE) as temporary:
            temporary.write_text(model_card(export), encoding="utf-8")
        c = self.counts
        return ExportResult(
            out, export, submission, c.reused, c.trained, c.kept, c.newly_trained, [p.name for p in judged],
            c.repeats_trained, c.repeats_stored, plan, self.missing,
        )  # fmt: skip

    def info(self, library: Library, procedure: Procedure, fitted: Fitted, members: list[MemberInfo]) -> ExportInfo:
        """What export.json says: the members, the chosen ensemble and its figures, TTA, the data."""
        job, data, choice = self.job, self.data, fitted.choice
        positions = sorted(choice.members)
        everyone = np.arange(len(data.true_labels))
        return ExportInfo(
            task=job.task,
            classes=list(data.task.classes),
            study=self.study.study_name,
            mode=job.mode,
            image_size=self.image_size,
            mean=resolved_norm(members, "mean"),
            std=resolved_norm(members, "std"),
            members=members,
            ensemble=EnsembleInfo(
                selection=choice.variant.selection,
                decision_rule=choice.variant.rule,
                method=choice.vote,
                members=[positions.index(i) for i in choice.members],
                weights=[w / sum(choice.weights) for w in choice.weights],
                selection_f1=fitted.selection_f1,
                honest_f1=fitted.honest_f1,
                library=len(library.trials),
                cv_repeats=job.judged_splits(),  # behind the figures; --repeats-for shipped: the members ship more
                candidates={
                    k: {"selection_f1": v.selection_f1, "honest_f1": v.honest_f1} for k, v in self.variants.items()
                },  # fmt: skip
            ),
            tta=TtaInfo(
                views=list(choice.views),
                selection_f1={
                    "+".join(combo): macro_f1(data.true_labels, procedure.apply(replace(choice, views=combo), everyone))
                    for combo in COMBINATIONS
                    if all(
                        library.views[i] is not None and all(v in library.views[i] for v in combo)
                        for i in choice.members
                    )  # fmt: skip
                },
                note="" if job.mode == "folds" else "mode full: TTA not judged (no out-of-fold models)",
            ),
            data=DataInfo(
                path=str(job.source.path.absolute()),
                fingerprint=data.fingerprint,
                folds=data.n_folds,
                seed=self.seed,
                storage=redact(job.storage_url or f"sqlite:///{job.home / STORAGE_FILE}"),
                train_images=len(data.true_labels),
                eval_images=0 if self.eval_images is None else len(self.eval_images.paths),
            ),
            class_weights=choice.class_weights,
        )

    # -- helpers ----------------------------------------------------------------------------------------------------
    def member(self, name: str) -> MemberPlan:
        return self.by_name[name]

    def kept(self, member: MemberPlan) -> Callable[[int], Path | None]:
        """The search's kept weights of the member's fold k, or None."""
        trial = self.frozen[member.trial]
        return lambda fold: find_artifact(self.job.home, trial, f"{WEIGHTS_PREFIX}{fold}{WEIGHTS_SUFFIX}")

    def seconds_per_fit(self, member: MemberPlan) -> float | None:
        return seconds_per_fit(self.frozen[member.trial], self.max_epochs)

    def load_training(self, member: MemberPlan) -> None:
        _load(self.data.images, member.params.image_crop, "training", self.progress)

    def split_views(self, member: MemberPlan, split: int) -> MemberViews:
        """The member's out-of-fold views on split `split` (the search's kept weights serve split 0); its models are
        kept for shipping."""
        views, models = self.store.views(
            member, split, self.kept(member) if split == 0 else None, *self.counts.callbacks(member, self.progress)
        )
        self.models.setdefault(member.name, []).extend(models)
        return views


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


def model_label(split: int, fold: int | None) -> str:
    if fold is None:
        return "full model"
    return f"fold{fold}" if split == 0 else f"split {split + 1} fold{fold}"


def _ship(out: Path, member: MemberPlan, models: list[StoredModel], oof_f1: float) -> MemberInfo:
    """Link the member's models from the store into its export folder, each with a json saying what it is, and its
    resolved configuration beside them; stale models of an earlier export to this folder go."""
    directory = member_dir(out, member.name)
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for model in models:
        split, fold = model.record["split"], model.record["fold"]
        name = FULL_MODEL if fold is None else f"fold{fold}" if split == 0 else f"repeat{split}-fold{fold}"
        link_or_copy(model.weights, directory / f"{name}{WEIGHTS_SUFFIX}")
        trained_on = "every training image" if fold is None else f"split {split + 1}: every fold but fold {fold}"
        write_json(directory / f"{name}.json", {
            "config": member.config, "resolved": model.resolved, "seed": model.seed, "best_epoch": model.best_epoch,
            "epochs": model.record["epochs"], "trained_on": trained_on, "data": model.record["data"],
            **({"kept_from": model.record["kept_from"]} if "kept_from" in model.record else {}),
        })  # fmt: skip
        files.append(f"{name}{WEIGHTS_SUFFIX}")
    for stale in directory.glob(f"*{WEIGHTS_SUFFIX}"):
        if stale.name not in files:
            stale.unlink()
            stale.with_suffix(".json").unlink(missing_ok=True)
    resolved = models[0].resolved
    write_json(directory / "config.json", resolved)
    return MemberInfo(
        name=member.name,
        trial=member.trial,
        study_value=member.study_value,
        oof_f1=oof_f1,
        config=resolved,
        models=files,
        seeds=[m.seed for m in models],
        best_epochs=[m.best_epoch for m in models],
    )


def _most_members(settings: Settings) -> int:
    """The most members a choice can ship (mode full trains one model for each)."""
    return max(settings.top_k, settings.greedy.size)


def resolved_norm(members: list[MemberInfo], key: str) -> list[float] | None:
    """The normalisation shared by every member; None when backbones bring their own (see each config.json)."""
    values = {tuple(m.config[key]) for m in members}
    return list(next(iter(values))) if len(values) == 1 else None


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
