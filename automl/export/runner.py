"""`export-best` from start to end: the study and its data, members retrained, TTA and ensemble chosen on
out-of-fold macro F1, the eval images predicted, and the export folder written.

Eval images are only ever predicted: nothing is chosen or fitted on them.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from automl.atomic import atomic_path, write_csv_atomic
from automl.data.cache import ImageSets
from automl.data.dataset import DataSource, load_dataset
from automl.data.face_crop import FaceCrop
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
from automl.export.ensemble import choose_ensemble
from automl.export.members import MODES, MemberPlan, model_files, pick_members, train_member
from automl.export.predict import MemberViews, ensemble_probs, member_views
from automl.export.submission import predictions_table, write_submission
from automl.export.tta import COMBINATIONS, PLAIN, VIEWS, combine_views
from automl.search.artifacts import TRIAL_OOF_FILE, artifact_dir, find_artifact
from automl.search.objective import StudyData
from automl.search.storage import STORAGE_FILE, load_task_study, redact
from automl.train.engine import Runtime
from automl.train.heads import describe_head
from automl.train.metrics import macro_f1

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


@dataclass
class ExportResult:
    directory: Path
    info: ExportInfo
    tta_candidates: dict[str, float] = field(default_factory=dict)
    submission: Path | None = None
    reused: int = 0
    trained: int = 0


def load_study(job: ExportJob) -> optuna.Study:
    return load_task_study(job.storage_url, job.home, job.study_name or job.task, job.task)


def prepare_data(job: ExportJob, study: optuna.Study) -> tuple[StudyData, pd.DataFrame | None, ImageSets | None]:
    """The study's data and folds, checked against the study; the eval table and its images (per face crop)."""
    settings = study.user_attrs.get("settings") or {}
    if not {"folds", "image_size", "seed"} <= set(settings):
        raise AutomlError(f"study {study.study_name!r} has no recorded settings; was it made by automl search?")
    dataset = load_dataset(job.source)
    task = dataset.task(job.task)
    size = int(settings["image_size"])
    train_images = ImageSets(job.home, size, dataset.train["path"])
    eval_images = None
    if dataset.eval is not None and not dataset.eval.empty:
        eval_images = ImageSets(job.home, size, dataset.eval["path"])
    data = StudyData.prepare(dataset, task, train_images, int(settings["folds"]), int(settings["seed"]))
    if data.fingerprint != study.user_attrs.get("data_fingerprint"):
        raise AutomlError(
            f"study {study.study_name!r} was searched on other images, labels or folds (its data: "
            f"{study.user_attrs.get('data')}); pass the --data (and label options) it was made with"
        )
    return data, dataset.eval, eval_images


def _load(images: ImageSets, crop: FaceCrop, what: str, progress: Progress | None) -> list[np.ndarray]:
    """`images` prepared with `crop` (from the cache, filling it where needed), with a progress line."""
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(f"caching {what} images (face crop {crop.mode})", done, len(images.paths))

    return images.get(crop, progress=advance)


def run_export(job: ExportJob, progress: Progress | None = None) -> ExportResult:
    if job.mode not in MODES:
        raise AutomlError(f"--mode {job.mode!r}: choose {' or '.join(MODES)}")
    study = load_study(job)
    plans = pick_members(study, job.top_k, job.distinct_backbones)
    data, eval_table, eval_images = prepare_data(job, study)
    n_folds = int(data.folds.max()) + 1
    runtime = Runtime(device=job.device, num_workers=job.loader_workers)
    out = job.out
    out.mkdir(parents=True, exist_ok=True)

    # 1. Train (or reuse) every member's models.
    total = len(plans) * len(model_files(job.mode, n_folds))
    counts = {"done": 0, "reused": 0}
    trained_models = []
    for index, plan in enumerate(plans):
        directory = member_dir(out, plan.name)
        directory.mkdir(parents=True, exist_ok=True)
        write_json(directory / "config.json", plan.config)

        def on_model(name: str, reused: bool, index: int = index, plan: MemberPlan = plan) -> None:
            counts["done"] += 1
            counts["reused"] += int(reused)
            if progress is not None:
                progress(f"member {index + 1}/{len(plans)} {plan.name}: {name}", counts["done"], total)

        _load(data.images, plan.params.image_crop, "training", progress)
        if progress is not None:
            progress(f"member {index + 1}/{len(plans)} {plan.name}", counts["done"], total)
        trained_models.append(train_member(plan, data, job.mode, runtime, directory, on_model))
    _remove_stale_members(out, {p.name for p in plans})

    # 2. Out-of-fold and eval probabilities of every member and view, from the saved weights.
    members, oof_views, eval_views = [], [], []
    for index, (plan, models) in enumerate(zip(plans, trained_models, strict=True)):
        if progress is not None:
            progress(f"predicting with {plan.name}", index, len(plans))
        resolved = models[0].resolved
        write_json(member_dir(out, plan.name) / "config.json", resolved)
        info = MemberInfo(
            name=plan.name,
            trial=plan.trial,
            study_value=plan.study_value,
            oof_f1=float("nan"),
            config=resolved,
            models=[m.file for m in models],
            seeds=[m.seed for m in models],
            best_epochs=[m.best_epoch for m in models],
        )
        members.append(info)
        oof_views.append(_oof_views(job, study, out, info, data))
        if eval_images is not None:
            arrays = _load(eval_images, info.params.image_crop, "eval", progress)
            eval_views.append(
                member_views(out, info, data.task.num_classes, arrays, VIEWS, job.device, job.loader_workers)
            )

    # 3. TTA and ensemble, chosen on out-of-fold macro F1 only.
    true = data.true_labels
    for info, views in zip(members, oof_views, strict=True):
        info.oof_f1 = macro_f1(true, views[PLAIN].argmax(1))
    best_by_views, tta_candidates = {}, {}
    available = [c for c in COMBINATIONS if all(v in oof_views[0] for v in c)]
    for combo in available:
        probs = [combine_views(v, combo) for v in oof_views]
        member_f1 = [macro_f1(true, p.argmax(1)) for p in probs]
        choice = choose_ensemble(probs, true, member_f1)
        key = "+".join(combo)
        best_by_views[key] = (combo, choice, member_f1)
        tta_candidates[key] = choice.oof_f1
    plain_key = PLAIN
    chosen_key = max(best_by_views, key=lambda k: tta_candidates[k])
    if tta_candidates[chosen_key] <= tta_candidates[plain_key]:
        chosen_key = plain_key  # TTA only where it raises out-of-fold F1
    combo, choice, member_f1_tta = best_by_views[chosen_key]

    settings = study.user_attrs.get("settings", {})
    export = ExportInfo(
        task=job.task,
        classes=list(data.task.classes),
        study=study.study_name,
        mode=job.mode,
        image_size=int(settings["image_size"]),
        mean=resolved_norm(members, "mean"),
        std=resolved_norm(members, "std"),
        members=members,
        ensemble={**choice.to_dict(), "member_oof_f1_with_tta": member_f1_tta},
        tta={
            "views": list(combo),
            "oof_f1": tta_candidates[chosen_key],
            "oof_f1_without": tta_candidates[plain_key],
            "candidates": tta_candidates,
            "note": "" if job.mode == "folds" else "mode full: TTA not judged (no out-of-fold models)",
        },
        data={
            "path": str(job.source.path.absolute()),
            "fingerprint": data.fingerprint,
            "folds": n_folds,
            "seed": int(settings["seed"]),
            "storage": redact(job.storage_url or f"sqlite:///{job.home / STORAGE_FILE}"),
            "train_images": len(true),
            "eval_images": 0 if eval_images is None else len(eval_images.paths),
        },
    )

    # 4. Predictions and files.
    oof = ensemble_probs(export, oof_views)
    write_csv_atomic(predictions_table(data.dataset.train["image_id"], oof, export.classes), out / OOF_FILE)
    submission = None
    if eval_images is not None:
        probs = ensemble_probs(export, eval_views)
        write_csv_atomic(predictions_table(eval_table["image_id"], probs, export.classes), out / PREDICTIONS_FILE)
        if data.dataset.layout == "competition":
            submission = out / SUBMISSION_FILE
            write_submission(eval_table["image_id"], probs.argmax(1), submission)
    write_export_info(out, export)
    with atomic_path(out / CARD_FILE) as temporary:
        temporary.write_text(model_card(export), encoding="utf-8")
    return ExportResult(out, export, tta_candidates, submission, counts["reused"], total - counts["reused"])


def resolved_norm(members: list[MemberInfo], key: str) -> list[float] | None:
    """The normalisation shared by every member; None when backbones bring their own (see each config.json)."""
    values = {tuple(m.config[key]) for m in members}
    return list(next(iter(values))) if len(values) == 1 else None


def _oof_views(job: ExportJob, study: optuna.Study, out: Path, member: MemberInfo, data: StudyData) -> MemberViews:
    """Honest out-of-fold probabilities: each image only from the fold model that did not train on it."""
    if job.mode == "full":
        return {PLAIN: _search_oof(job, study, member, data)}
    views = {v: np.full((len(data.true_labels), data.task.num_classes), np.nan) for v in VIEWS}
    for file in member.models:
        fold = int(file.removeprefix("fold").removesuffix(".safetensors"))
        rows = np.flatnonzero(data.folds == fold)
        one = MemberInfo(**{**vars(member), "models": [file]})
        images = data.images_for(member.params)
        probs = member_views(
            out, one, data.task.num_classes, [images[i] for i in rows], VIEWS, job.device, job.loader_workers
        )
        for view, p in probs.items():
            views[view][rows] = p
    assert not any(np.isnan(v).any() for v in views.values()), "every image has an out-of-fold prediction"
    return views


def _search_oof(job: ExportJob, study: optuna.Study, member: MemberInfo, data: StudyData) -> np.ndarray:
    """Mode full has no fold models: the trial's own out-of-fold probabilities from the search stand in."""
    trial = study.trials[member.trial]
    path = find_artifact(job.home, study._storage, trial, TRIAL_OOF_FILE)
    if path is None:
        raise AutomlError(f"trial {member.trial} has no out-of-fold probabilities in {artifact_dir(job.home)}")
    table = pd.read_csv(path, dtype={"image_id": str}).set_index("image_id")
    ids = data.dataset.train["image_id"]
    if not ids.isin(table.index).all():
        raise AutomlError(f"trial {member.trial}'s out-of-fold probabilities miss some training images")
    return table.loc[ids, list(data.task.classes)].to_numpy(dtype=np.float64)


def _remove_stale_members(out: Path, keep: set[str]) -> None:
    """Members of an earlier export to this folder that are no longer chosen."""
    folder = out / MEMBERS_DIR
    for path in folder.iterdir() if folder.is_dir() else ():
        if path.is_dir() and path.name.startswith("trial") and path.name not in keep:
            shutil.rmtree(path)


def model_card(info: ExportInfo) -> str:
    lines = [
        f"# Export of study `{info.study}` (task `{info.task}`)",
        "",
        f"- classes: {', '.join(info.classes)}",
        f"- mode: {info.mode} ({'one model per fold' if info.mode == 'folds' else 'one model on all training data'})",
        f"- image size: {info.image_size} px (each member's face crop, then the shorter side resized and the "
        f"centred square); normalisation mean {info.mean}, std {info.std}",
        f"- data: {info.data['path']} ({info.data['train_images']} training images, {info.data['folds']} folds "
        f"grouped by person, seed {info.data['seed']}; {info.data['eval_images']} eval images, only predicted)",
        "",
        "## Members (out-of-fold macro F1 on the true labels)",
        "",
        "| member | trial | backbone | head | face crop | study F1 | retrained OOF F1 | seeds | best epochs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in info.members:
        lines.append(
            f"| {m.name} | {m.trial} | {m.config['backbone']} | {describe_head(m.params)} | "
            f"{describe_crop(m.params.image_crop)} | {m.study_value:.4f} | {m.oof_f1:.4f} | "
            f"{', '.join(map(str, m.seeds))} | {', '.join(map(str, m.best_epochs))} |"
        )
    e, t = info.ensemble, info.tta
    lines += [
        "",
        "## Ensemble",
        "",
        f"- chosen: **{e['method']}** of members {[info.members[i].name for i in e['members']]}, weights "
        f"{[round(w, 4) for w in e['weights']]}: out-of-fold macro F1 **{e['oof_f1']:.4f}**",
        "- candidates: " + ", ".join(f"{k} {v:.4f}" for k, v in e["candidates"].items()),
        f"- TTA views: {' + '.join(t['views'])} (out-of-fold F1 {t['oof_f1']:.4f}, without TTA "
        f"{t['oof_f1_without']:.4f}); tried: " + ", ".join(f"{k} {v:.4f}" for k, v in t["candidates"].items()),
        *([f"- {t['note']}"] if t.get("note") else []),
        "",
        "Use: `automl predict --export THIS_FOLDER IMAGE_OR_FOLDER...`: it crops each image with each member's face "
        "crop, as in training. Weights are safetensors; each member's `config.json` is its full training "
        "configuration.",
        "",
    ]
    return "\n".join(lines)


def describe_crop(crop: FaceCrop) -> str:
    if crop.mode == "none":
        return "none"
    return f"{crop.mode} (margin {crop.margin:g}, prior box {list(crop.prior)})"
