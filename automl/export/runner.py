"""`export-best` from start to end: the study and its data, candidate members picked over every complete trial and
trained (or copied from the search's kept weights), each judged as the fold ensemble it ships as (`repeats`), TTA,
vote and decision rule chosen on out-of-fold macro F1 with an honest cross-fitted figure beside the selection score,
the eval images predicted, and the export folder written.

Eval images are only ever predicted: nothing is chosen or fitted on them.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from optuna.storages import BaseStorage

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
from automl.export.decision import decide
from automl.export.greedy import GreedyOptions
from automl.export.members import (
    KEPT,
    MODES,
    REUSED,
    TRAINED,
    MemberPlan,
    TrainedModel,
    model_files,
    pick_members,
    train_member,
)
from automl.export.predict import MemberViews, ensemble_probs, member_views
from automl.export.repeats import CACHE_DIR, mean_views, repeated_views, ship_repeats, study_split_views
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
from automl.search.storage import STORAGE_FILE, load_task_study, redact
from automl.train.heads import describe_head
from automl.train.metrics import macro_f1
from automl.train.session import Runtime, TrainSession
from automl.train.weights import ensure_weights

#: Default cross-validation splits for --mode folds, when there are as many folds: a mean of 3 models has most of
#: a 5-fold ensemble's averaging gain, at (splits - 1) x folds models per candidate trial.
DEFAULT_REPEATS = 3

#: progress(description, done, total)
Progress = Callable[[str, int, int], None]


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
    cv_repeats: int | None = None  # splits behind each out-of-fold figure (see repeats); None: DEFAULT_REPEATS

    def repeats(self, n_folds: int) -> int:
        """The cross-validation splits each candidate is judged on (--mode folds: as many as folds, at most 3)."""
        if self.cv_repeats is None:
            return min(n_folds, DEFAULT_REPEATS) if self.mode == "folds" else 1
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


def run_export(job: ExportJob, progress: Progress | None = None) -> ExportResult:
    # The images uploaded to the device and the loader processes serve every model the export trains.
    with TrainSession(Runtime(device=job.device, num_workers=job.loader_workers)) as session:
        return _run_export(job, session, progress)


def _run_export(job: ExportJob, session: TrainSession, progress: Progress | None) -> ExportResult:
    if job.mode not in MODES:
        raise AutomlError(f"--mode {job.mode!r}: choose {' or '.join(MODES)}")
    settings = job.selection  # checks --method and --decision-rule before any work
    if job.top_k < 1:
        raise AutomlError(f"--top-k {job.top_k}: an ensemble needs at least one member; use --top-k 1 or more")
    study, storage = load_study(job)
    candidates = pick_members(study, None)
    data, eval_table, eval_images = prepare_data(job, study)
    n_folds = data.n_folds
    repeats = job.repeats(n_folds)
    out = job.out
    out.mkdir(parents=True, exist_ok=True)

    # 1. The candidates: every trial some variant picks on the search's out-of-fold probabilities. Only they are
    # judged on their own predictions, and only the chosen ones keep models in the export folder.
    library, candidates = _library(job, study, storage, candidates, data)
    true = data.true_labels
    procedure = Procedure(library, true, data.folds, settings)
    plans = [candidates[i] for i in procedure.candidates()]
    # Every candidate's weights before any image is cached or model trained: one message for all that are missing.
    pretrained = (p.params.backbone for p in plans if p.params.pretrained and not p.params.weights_file)
    ensure_weights(pretrained, announce=None if progress is None else lambda text: progress(text, 0, 0))

    # 2. Each candidate judged on its own out-of-fold predictions (--mode folds): those of its fold models (read back
    # from <home>/cv_repeats, else predicted by the models, copied, reused or trained into the export folder) and,
    # with cv repeats, of the other splits' models: their mean is what the fold ensemble does with a new image.
    counts = {TRAINED: 0, REUSED: 0, KEPT: 0}
    newly_trained: list[str] = []
    fold_models: dict[str, list[TrainedModel]] = {}

    def models_of(plan: MemberPlan) -> list[TrainedModel]:
        """The plan's models in the export folder: reused, copied from the search's kept weights, or trained."""
        if plan.name not in fold_models:
            fold_models[plan.name] = _member_models(
                job, study, storage, plan, data, session, counts, newly_trained, progress
            )
        return fold_models[plan.name]

    repeat_counts = {REPEAT_TRAINED: 0, REPEAT_CACHED: 0}
    recorded = recorded_settings(study.study_name, study.user_attrs)
    seed = int(recorded["seed"])
    caches = job.home / CACHE_DIR / study.study_name  # one folder per trial
    oof_f1: dict[str, float] = {}
    for index, plan in enumerate(plans):
        if progress is not None:
            progress(f"judging candidate {plan.name}", index, len(plans))
        position = library.trials.index(plan.trial)
        if job.mode == "folds":
            cache = caches / plan.name

            def predict(plan: MemberPlan = plan) -> MemberViews:
                return _oof_views(out, _member(plan, models_of(plan)), data, session)

            views = study_split_views(plan, data, seed, cache, predict)
            oof_f1[plan.name] = macro_f1(true, views[PLAIN].argmax(1))
            if repeats > 1:
                splits = repeated_views(
                    plan,
                    data,
                    repeats,
                    seed,
                    cache,
                    session,
                    *_repeat_progress(plan, data, repeats, repeat_counts, progress),
                )
                views = mean_views([views, *splits])
            library.views[position] = views
        else:
            oof_f1[plan.name] = macro_f1(true, library.search[position].argmax(1))

    # 3. Every choice again with the views, and cross-fitted: the selection and the honest figure.
    if progress is not None:
        progress("cross-fitting the choices", 0, 1)
    fitted, each_variant = procedure.judge()
    plan = fitted.choice
    variants = {v.name: figures for v, figures in each_variant.items()}
    judged = [library.trials.index(p.trial) for p in plans]
    assert set(plan.members) <= set(judged), "the members chosen with the views are among the candidates judged"

    # 4. The chosen candidates' models (only they stay in the export folder) and their eval predictions.
    positions = sorted(plan.members)  # the shipped members, best study value first
    shipped = [plans[judged.index(i)] for i in positions]

    def shipped_models(plan: MemberPlan) -> list[TrainedModel]:
        """What was judged: the study split's fold models and, with cv repeats, every other split's."""
        own = models_of(plan)
        if job.mode != "folds":
            return own
        directory = member_dir(out, plan.name)
        return own + ship_repeats(caches / plan.name, repeats, data.n_folds, directory, own[0].resolved)

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
            "selection": plan.variant.selection,
            "decision_rule": plan.variant.rule,
            "method": plan.vote,
            "members": [positions.index(i) for i in plan.members],
            "weights": [w / sum(plan.weights) for w in plan.weights],
            "selection_f1": fitted.selection_f1,
            "honest_f1": fitted.honest_f1,
            "library": len(library.trials),
            "cv_repeats": repeats,
            "candidates": {k: {"selection_f1": v.selection_f1, "honest_f1": v.honest_f1} for k, v in variants.items()},
        },
        tta={
            "views": list(plan.views),
            "selection_f1": {
                "+".join(combo): macro_f1(true, procedure.apply(replace(plan, views=combo), everyone))
                for combo in COMBINATIONS
                if all(library.views[i] is not None and all(v in library.views[i] for v in combo) for i in plan.members)
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
        class_weights=plan.class_weights,
    )

    # 5. Predictions and files.
    oof = procedure.probabilities(plan, everyone)
    oof_table = predictions_table(data.dataset.train["image_id"], oof, export.classes, decide(oof, plan.class_weights))
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
        [p.name for p in plans], repeat_counts[REPEAT_TRAINED], repeat_counts[REPEAT_CACHED],
    )  # fmt: skip


def _member_models(
    job: ExportJob,
    study: optuna.Study,
    storage: BaseStorage,
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
    kept = _kept_weights(job, study, storage, plan.trial)
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


def _library(
    job: ExportJob, study: optuna.Study, storage: BaseStorage, candidates: list[MemberPlan], data: StudyData
) -> tuple[Library, list[MemberPlan]]:
    """Every complete trial with out-of-fold probabilities on disk (best first), and those plans."""
    found = [(plan, _search_oof(job, study, storage, plan.trial, data)) for plan in candidates]
    usable = [(plan, probs) for plan, probs in found if probs is not None]
    if not usable:
        raise AutomlError(
            f"no complete trial of study {study.study_name!r} has its out-of-fold probabilities in "
            f"{artifact_dir(job.home)}; pass the --home the search used"
        )
    plans = [plan for plan, _ in usable]
    library = Library(
        trials=[p.trial for p in plans],
        backbones=[str(p.config.get("backbone")) for p in plans],
        search=[probs for _, probs in usable],
        views=[None] * len(plans),
    )
    return library, plans


def _kept_weights(
    job: ExportJob, study: optuna.Study, storage: BaseStorage, trial: int
) -> Callable[[int], Path | None]:
    frozen = study.trials[trial]
    return lambda fold: find_artifact(job.home, storage, frozen, f"{WEIGHTS_PREFIX}{fold}{WEIGHTS_SUFFIX}")


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


def _search_oof(
    job: ExportJob, study: optuna.Study, storage: BaseStorage, trial: int, data: StudyData
) -> np.ndarray | None:
    """The trial's out-of-fold probabilities from the search, in training-table order; None when not on disk."""
    path = find_artifact(job.home, storage, study.trials[trial], TRIAL_OOF_FILE)
    if path is None:
        return None
    table = pd.read_csv(path, dtype={"image_id": str}).set_index("image_id")
    ids = data.dataset.train["image_id"]
    if not ids.isin(table.index).all():
        raise AutomlError(f"trial {trial}'s out-of-fold probabilities miss some training images")
    return table.loc[ids, list(data.task.classes)].to_numpy(dtype=np.float64)


def _remove_stale_members(out: Path, keep: set[str]) -> None:
    """Members of an earlier export to this folder that are no longer chosen."""
    folder = out / MEMBERS_DIR
    for path in folder.iterdir() if folder.is_dir() else ():
        if path.is_dir() and path.name.startswith("trial") and path.name not in keep:
            shutil.rmtree(path)


FIGURES_NOTE = (
    "Two figures, both macro F1 of out-of-fold predictions on the true labels. **Selection F1**: the choices (members, "
    "vote, TTA views, decision rule) made and scored on the same predictions: optimistic. **Honest F1**: every "
    "choice made on the other folds and applied to each fold in turn (cross-fitted): what to expect on new people. "
    "With cross-validation repeats (--cv-repeats; default: the folds, at most 3) each out-of-fold prediction is the "
    "mean of that many models that never saw the image; a new image gets the mean of the member's models of every "
    "split."
)


def model_card(info: ExportInfo) -> str:
    e, t = info.ensemble, info.tta
    lines = [
        f"# Export of study `{info.study}` (task `{info.task}`)",
        "",
        f"- classes: {', '.join(info.classes)}",
        f"- mode: {info.mode} ({describe_mode(info)})",
        f"- image size: {info.image_size} px (each member's face crop, then the shorter side resized and the "
        f"centred square); normalisation mean {info.mean}, std {info.std}",
        f"- data: {info.data['path']} ({info.data['train_images']} training images, {info.data['folds']} folds "
        f"grouped by person, seed {info.data['seed']}; {info.data['eval_images']} eval images, only predicted)",
        "",
        "## Macro F1",
        "",
        f"- **honest F1 {e['honest_f1']:.4f}** (cross-fitted); selection F1 {e['selection_f1']:.4f}",
        f"- out-of-fold predictions: {describe_repeats(e.get('cv_repeats', 1))}",
        "",
        FIGURES_NOTE,
        "",
        "## Ensemble",
        "",
        f"- chosen: **{e['selection']}** over {e['library']} complete trial(s), vote {e['method']} of members "
        f"{[info.members[i].name for i in e['members']]}, weights {[round(w, 4) for w in e['weights']]}",
        f"- decision rule: {describe_rule(info)}",
        f"- TTA views: {' + '.join(t['views'])}; tried (selection F1): "
        + (", ".join(f"{k} {v:.4f}" for k, v in t["selection_f1"].items()) or "none"),
        *([f"- {t['note']}"] if t.get("note") else []),
        "",
        "| candidate | selection F1 | honest F1 |",
        "|---|---|---|",
        *(f"| {k} | {v['selection_f1']:.4f} | {v['honest_f1']:.4f} |" for k, v in e["candidates"].items()),
        "",
        "## Members (selection F1: out-of-fold macro F1 of each trial, which the trials were picked by)",
        "",
        "| member | trial | backbone | head | face crop | study F1 (selection) | retrained OOF F1 (selection) | seeds "
        "| best epochs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in info.members:
        lines.append(
            f"| {m.name} | {m.trial} | {m.config['backbone']} | {describe_head(m.params)} | "
            f"{describe_crop(m.params.image_crop)} | {m.study_value:.4f} | {m.oof_f1:.4f} | "
            f"{', '.join(map(str, m.seeds))} | {', '.join(map(str, m.best_epochs))} |"
        )
    lines += [
        "",
        "Use: `automl predict --export THIS_FOLDER IMAGE_OR_FOLDER...`: it crops each image with each member's face "
        "crop, as in training, and applies the same TTA, vote and decision rule. Weights are safetensors; each "
        "member's `config.json` is its full training configuration.",
        "",
    ]
    return "\n".join(lines)


def describe_mode(info: ExportInfo) -> str:
    if info.mode != "folds":
        return "one model on all training data"
    repeats = info.ensemble.get("cv_repeats", 1)
    if repeats <= 1:
        return "one model per fold"
    return f"one model per fold of each of {repeats} cross-validation splits, all averaged for a new image"


def describe_repeats(repeats: int) -> str:
    if repeats <= 1:
        return "one model per image (the study's folds)"
    return f"the mean of {repeats} models per image, one per person-grouped cross-validation split, none trained on it"


def describe_rule(info: ExportInfo) -> str:
    if info.class_weights is None:
        return "none (argmax of the probabilities)"
    weights = ", ".join(f"{c} {w:.3g}" for c, w in zip(info.classes, info.class_weights, strict=True))
    return f"argmax of probability x class weight ({weights})"


def describe_crop(crop: FaceCrop) -> str:
    if crop.mode == "none":
        return "none"
    return f"{crop.mode} (margin {crop.margin:g}, prior box {list(crop.prior)})"
