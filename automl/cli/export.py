"""Commands that use a study's best trials: export them as an ensemble, and predict with an export."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
import typer
from rich.table import Table

from automl.atomic import write_csv_atomic
from automl.cli.app import (
    DataOptions,
    FaceDetectorOpt,
    LoaderWorkersOpt,
    StorageOpt,
    StudyOpt,
    app,
    console,
    ensure_face_detector,
    progress_bars,
    study_source,
    with_data_options,
)
from automl.cli.log import LogFormatOpt, RunLog
from automl.errors import AutomlError

if TYPE_CHECKING:  # imported when used: torch and timm take seconds to load, and `automl --help` should not wait
    import optuna

    from automl.export.runner import ExportJob, ExportResult


@app.command("export-best")
@with_data_options
def export_best(
    task: Annotated[str, typer.Option(help="The task whose study to export (mask, gender, age, all, ...).")],
    options: DataOptions,
    top_k: Annotated[int, typer.Option("--top-k", help="How many of the best complete trials to ensemble.")] = 3,
    out: Annotated[
        Path | None, typer.Option(help="The export folder. Default: <home>/exports/<study>.", show_default=False)
    ] = None,
    mode: Annotated[
        str, typer.Option(help="folds: one model per fold (honest out-of-fold figures); full: one on all data.")
    ] = "folds",
    distinct_backbones: Annotated[
        bool, typer.Option("--distinct-backbones", help="At most one member per backbone (top-k vote).")
    ] = False,
    method: Annotated[
        str,
        typer.Option(
            help="How members are chosen: best_trial, top_k_vote, greedy (ensemble selection over every complete "
            "trial), or auto: the one with the best honest (cross-fitted) F1."
        ),
    ] = "auto",
    decision_rule: Annotated[
        str,
        typer.Option(help="Per-class weights that raise macro F1 (argmax of p * w): on, off, or auto (by honest F1)."),
    ] = "auto",
    ensemble_size: Annotated[
        int, typer.Option(help="Greedy selection: at most this many picks (with replacement).", min=1)
    ] = 10,
    bags: Annotated[
        int, typer.Option(help="Greedy selection: bag it over this many random halves (0: none).", min=0)
    ] = 0,
    cv_repeats: Annotated[
        int | None,
        typer.Option(
            help="Splits behind every out-of-fold figure: each candidate trial also trains on N-1 new person-grouped "
            "splits, so an image's prediction is a mean of N models that never saw it, and the chosen members ship "
            "every split's fold models: (N-1) x folds fits per candidate, counted against the plan's bound. 1: the "
            "study's folds only (the search's kept models, judged as they are). Kept in <home>/fold_models. "
            "Default: 2 (1 with --mode full).",
            show_default=False,
        ),
    ] = None,
    repeats_for: Annotated[
        str,
        typer.Option(
            help="Which trials train the other splits' fold models: candidates (every judged trial; its figures are "
            "the mean of the splits it ships) or shipped (candidates judged on the study's folds alone, then only "
            "the chosen members train the other splits, while the bound leaves room; the figures are then those of "
            "single fold models).",
        ),
    ] = "candidates",
    budget: Annotated[
        str | None,
        typer.Option(
            help="Time the export may spend training, e.g. 10m or 1h: candidates are judged best first while their "
            "estimated time fits (from the trials' recorded times). Default: at most a tenth of the fold models the "
            "search trained.",
            show_default=False,
        ),
    ] = None,
    combine: Annotated[
        bool,
        typer.Option(
            "--combine", help="With --task all: compose the 18 classes from the mask, gender and age exports."
        ),
    ] = False,
    part: Annotated[
        list[str] | None,
        typer.Option("--part", help="With --combine: TASK=EXPORT_DIR (default <home>/exports/TASK); repeatable."),
    ] = None,
    log_format: LogFormatOpt = "auto",
    storage: StorageOpt = None,
    study: StudyOpt = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    loader_workers: LoaderWorkersOpt = None,
    face_detector: FaceDetectorOpt = None,
) -> None:
    """Retrain the best trials of a study, ensemble them, and predict the eval images (submission.csv)."""
    home_dir = options.home_dir
    if combine:
        _export_combined(task, part or [], out or home_dir / "exports" / "combined", home_dir)
        return
    from automl.export.greedy import GreedyOptions
    from automl.export.runner import ExportJob
    from automl.search.budget import parse_duration
    from automl.search.storage import load_task_study
    from automl.train.device import resolve_device

    resolve_device(device)
    seconds = None if budget is None else parse_duration(budget)
    # The study loaded once: its trials read here stay in the storage's cache for the export.
    loaded, _ = load_task_study(storage, home_dir, study or task, task)
    source = study_source(options, task, storage, study, loaded)
    ensure_face_detector(face_detector, _trials_detect_faces(loaded))
    job = ExportJob(
        source=source,
        task=task,
        home=home_dir,
        out=out or home_dir / "exports" / (study or task),
        storage_url=storage,
        study_name=study,
        top_k=top_k,
        mode=mode,
        distinct_backbones=distinct_backbones,
        device=device,
        method=method,
        decision_rule=decision_rule,
        greedy=GreedyOptions(size=ensemble_size, bags=bags),
        loader_workers=loader_workers,
        cv_repeats=cv_repeats,
        repeats_for=repeats_for,
        budget=seconds,
    )
    log = RunLog(log_format)
    report_export(run_logged(job, log, loaded), home_dir, log)


def run_logged(job: ExportJob, log: RunLog, study: optuna.Study | None = None) -> ExportResult:
    """The export (of `study` when loaded already), its plan and what it leaves out said first; its steps on a live
    display on a terminal, else as progress lines at most once a minute."""
    from automl.export.runner import run_export

    def announce(line: str) -> None:
        log.say(line.strip(), "plan")

    if not log.live:
        return run_export(job, lambda text, done, total: log.progress(f"export: {text}"), announce, study)
    with progress_bars() as progress:
        bar = progress.add_task("export", total=None)
        return run_export(
            job, lambda text, d, t: progress.update(bar, description=text, completed=d, total=t), announce, study
        )


def report_export(result: ExportResult, home_dir: Path, log: RunLog) -> None:
    """What the export did and chose, its two figures and where it wrote: tables on a terminal, whole lines in a
    file."""
    from automl.export.card import FIGURES_NOTE, describe_rule

    info, e = result.info, result.info.ensemble
    log.say(
        f"export of study {info.study} ({info.mode} mode): {result.trained} model(s) trained, {result.kept} copied "
        f"from the search's kept fold weights, {result.reused} reused from an earlier run"
        + (f" (trained: {', '.join(result.newly_trained)})" if result.newly_trained else ""),
        "export",
    )
    repeats = e.cv_repeats
    log.say(
        f"{len(result.candidates)} candidate trial(s) judged on their own out-of-fold predictions "
        f"({', '.join(result.candidates)}), {len(info.members)} shipped"
        + (
            f"; {repeats} cross-validation splits each: {result.repeats_trained} model(s) of the other splits trained, "
            f"{result.repeats_cached} read back from {home_dir / 'fold_models'}"
            if repeats > 1
            else ""
        ),
        "export",
    )
    if result.plan is not None:
        log.say(
            f"fold fits: {result.trained + result.repeats_trained} trained, {result.plan.fits} planned"
            + (f"; left out: {', '.join(c.name for c, _ in result.plan.left_out)}" if result.plan.left_out else ""),
            "export",
        )
    weights = dict(zip(e.members, e.weights, strict=True))
    members = [
        (m.name, str(m.trial), m.config["backbone"], f"{m.study_value:.4f}", f"{m.oof_f1:.4f}",
         f"{weights.get(i, 0.0):.3f}")
        for i, m in enumerate(info.members)
    ]  # fmt: skip
    methods = [(name, f"{f['selection_f1']:.4f}", f"{f['honest_f1']:.4f}") for name, f in e.candidates.items()]
    if log.live:
        table = Table(title="members: out-of-fold macro F1 (selection scores)", title_justify="left")
        for column in ("member", "trial", "backbone", "study F1", "retrained OOF F1", "weight"):
            table.add_column(column, justify="left" if column in ("member", "backbone") else "right")
        for row in members:
            table.add_row(*row)
        console.print(table)
        candidates = Table(title=f"methods over {e.library} complete trial(s)", title_justify="left")
        for column in ("method", "selection F1", "honest F1"):
            candidates.add_column(column, justify="left" if column == "method" else "right")
        for row in methods:
            candidates.add_row(*row)
        console.print(candidates)
    else:
        for name, trial, backbone, study_f1, oof_f1, weight in members:
            log.say(f"member {name}: trial {trial}, {backbone}, study F1 {study_f1}, retrained OOF F1 {oof_f1} "
                    f"(selection scores), weight {weight}", "member")  # fmt: skip
        for name, selection, honest in methods:
            log.say(f"method {name} over {e.library} trial(s): selection F1 {selection}, honest F1 {honest}", "method")
    log.say(f"chosen: {e.selection} ({e.method} vote), TTA {' + '.join(info.tta.views)}, decision rule "
            f"{describe_rule(info)}", "chosen")  # fmt: skip
    log.say(f"honest F1 {e.honest_f1:.4f} (cross-fitted), selection F1 {e.selection_f1:.4f}", "figures",
            honest_f1=e.honest_f1, selection_f1=e.selection_f1)  # fmt: skip
    log.say(FIGURES_NOTE.replace("**", ""), "note")
    log.say(f"Wrote {result.directory}" + (f" and {result.submission}" if result.submission else ""), "wrote")


def _trials_detect_faces(study: optuna.Study) -> bool:
    """Whether any complete trial of the study crops with the face detector (its members and their predictions)."""
    from optuna.trial import TrialState

    from automl.train.params import TrainParams

    configs = [t.user_attrs.get("config") for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    return any(TrainParams.from_dict(config).image_crop.needs_detector for config in configs if config)


def _export_combined(task: str, parts: list[str], out: Path, home: Path) -> None:
    from automl.data.tasks import COMBINED_PARTS, COMBINED_TASK
    from automl.export.bundle import PREDICTIONS_FILE, SUBMISSION_FILE, write_json
    from automl.export.decision import decide
    from automl.export.submission import combine_parts, combined_rule, predictions_table, write_submission

    if task != COMBINED_TASK:
        raise AutomlError(f"--combine composes the {COMBINED_TASK!r} task; use --task {COMBINED_TASK} --combine")
    folders = {name: home / "exports" / name for name in COMBINED_PARTS}
    for item in parts:
        name, sep, folder = item.partition("=")
        if not sep or name not in COMBINED_PARTS:
            raise AutomlError(f"--part {item!r}: write TASK=EXPORT_DIR with TASK one of {', '.join(COMBINED_PARTS)}")
        folders[name] = Path(folder)
    ids, probs, classes = combine_parts(folders)
    rule = combined_rule(folders)
    codes = decide(probs, rule.class_weights)
    write_csv_atomic(predictions_table(ids, probs, classes, codes), out / PREDICTIONS_FILE)
    write_submission(ids, codes, out / SUBMISSION_FILE)
    write_json(out / "combination.json", {"parts": folders, **vars(rule)})
    console.print(f"combined {', '.join(f'{k}: {v}' for k, v in folders.items())}", markup=False)
    console.print(
        f"18 classes, out-of-fold macro F1 on the training images: argmax {rule.argmax_f1:.4f}; with the decision "
        f"rule honest F1 {rule.honest_f1:.4f} (cross-fitted), selection F1 {rule.selection_f1:.4f}: "
        + ("rule applied" if rule.class_weights is not None else "rule not applied")
        + " (the parts' own choices are their exports', made on every fold)"
    )
    console.print(f"Wrote {out / SUBMISSION_FILE} ({len(ids)} rows, classes mask*6 + gender*3 + age)")


@app.command()
def predict(
    inputs: Annotated[list[Path], typer.Argument(help="Images, or folders of images, to classify.")],
    export: Annotated[Path, typer.Option("--export", help="An export folder made by automl export-best.")],
    out: Annotated[
        Path | None, typer.Option(help="Write the classes and probabilities to this CSV.", show_default=False)
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    face_detector: FaceDetectorOpt = None,
) -> None:
    """Classify images with an export folder: the same transform, TTA and ensemble, no study needed."""
    from automl.export.predict import Predictor, collect_images
    from automl.export.submission import predictions_table

    predictor = Predictor(export, device)
    paths = collect_images(inputs)
    ensure_face_detector(face_detector, any(m.params.image_crop.needs_detector for m in predictor.info.members))
    members = predictor.info.ensemble.members
    with progress_bars() as progress:
        bar = progress.add_task(f"predicting {len(paths)} image(s)", total=len(members))
        probs = predictor.predict_files(paths, on_member=lambda name: progress.advance(bar))
    table = predictions_table([str(p) for p in paths], probs, predictor.classes, predictor.decide(probs))
    table = table.rename(columns={"image_id": "path"})
    if out is not None:
        write_csv_atomic(table, out)
    view = Table(title=f"{predictor.info.task}: {len(paths)} image(s)", title_justify="left")
    for column in ("path", "class", "label", "probability"):
        view.add_column(column)
    chosen = probs[np.arange(len(probs)), table["class"].to_numpy()]
    for path, code, label, p in zip(table["path"], table["class"], table["label"], chosen, strict=True):
        view.add_row(path, str(code), label, f"{p:.3f}")
        if view.row_count >= 50:
            break
    console.print(view)
    if len(paths) > 50:
        console.print(f"... {len(paths) - 50} more" + ("" if out else "; pass --out FILE.csv for all"))
    if out is not None:
        console.print(f"Wrote {out}")
