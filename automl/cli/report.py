"""Commands that read a study back: its report, and the label audit."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from automl.cli.app import DataOptions, StorageOpt, StudyOpt, app, console, study_ref, with_data_options
from automl.errors import AutomlError


@app.command()
@with_data_options
def report(
    task: Annotated[str, typer.Option(help="The task whose study to report (mask, gender, age, all, ...).")],
    options: DataOptions,
    out: Annotated[
        Path | None,
        typer.Option(help="The HTML file to write. Default: <home>/reports/<study>.html.", show_default=False),
    ] = None,
    export: Annotated[
        Path | None,
        typer.Option(help="The study's export folder for the ensemble's figures. Default: <home>/exports/<study>."),
    ] = None,
    storage: StorageOpt = None,
    study: StudyOpt = None,
) -> None:
    """One self-contained HTML page of a study's figures (opens offline); also shown in optuna-dashboard."""
    from automl.report.build import build_report

    ref = study_ref(options, task, storage, study)
    result = build_report(ref, out, export)
    for section in result.sections:
        if section.note:
            console.print(f"  {section.title}: {section.note}", markup=False)
    console.print(
        f"Wrote {result.path} ({result.attached} figures; also attached to the study for optuna-dashboard). "
        "Open it in a browser: no server needed."
    )


@app.command()
@with_data_options
def audit(
    options: DataOptions,
    task: Annotated[
        str | None,
        typer.Option(help="The task whose study to audit (mask, gender, age, all, ...).", show_default=False),
    ] = None,
    top: Annotated[
        int, typer.Option(help="Write at most this many flagged labels, the most contradicted people first.", min=1)
    ] = 100,
    trials: Annotated[
        int, typer.Option(help="Average the out-of-fold probabilities of this many best trials.", min=1)
    ] = 3,
    out: Annotated[
        Path | None,
        typer.Option(
            help="The audit folder (audit.csv, audit.html; default <home>/audits/<study>), or with "
            "--apply-confirmed the label-fixes file to write (default: label_fixes.csv beside the audit file).",
            show_default=False,
        ),
    ] = None,
    apply_confirmed: Annotated[
        Path | None,
        typer.Option(
            "--apply-confirmed",
            help="An audit.csv whose confirm column you filled: add its confirmed rows to a label-fixes file.",
            show_default=False,
        ),
    ] = None,
    export: Annotated[
        Path | None,
        typer.Option(help="Use this export's ensemble probabilities. Default: <home>/exports/<study> if it exists."),
    ] = None,
    storage: StorageOpt = None,
    study: StudyOpt = None,
) -> None:
    """Rank the labels the study's out-of-fold predictions contradict most (confident learning), per person."""
    if apply_confirmed is not None:
        from automl.report.confirm import write_fixes

        target = out or apply_confirmed.with_name("label_fixes.csv")
        confirmed, total = write_fixes(apply_confirmed, target)
        console.print(
            f"Wrote {target}: {confirmed} confirmed fix(es), {total} in the file. Use it with --label-fixes "
            f"{target} (automl check --label-fixes {target} shows what it changes)"
        )
        return
    if task is None:
        raise AutomlError("automl audit needs --task TASK (or --apply-confirmed AUDIT.csv to write a label-fixes file)")
    from automl.report.audit_run import CSV_FILE, PAGE_FILE, run_audit

    ref = study_ref(options, task, storage, study)
    result = run_audit(ref, out, top, trials, export)
    console.print(f"out-of-fold probabilities: {result.source}", markup=False)
    people = result.people
    console.print(f"{result.flagged} label(s) flagged, of {int(people['flagged'].sum())} of {len(people)} people")
    view = Table(title="most contradicted labels", title_justify="left")
    for column in ("rank", "image (or person)", "field", "given", "suggested", "confidence", "reason"):
        view.add_column(column)
    for row in result.shown.head(20).itertuples(index=False):
        view.add_row(str(row.rank), row.image or str(row.person), row.field, str(row.given), str(row.suggested),
                     f"{row.confidence:.3f}", row.reason)  # fmt: skip
    console.print(view)
    console.print(f"Wrote {result.directory / CSV_FILE} and {result.directory / PAGE_FILE} (thumbnails). "
                  f"Mark confirm = yes on the right rows, then: automl audit --apply-confirmed "
                  f"{result.directory / CSV_FILE}")  # fmt: skip
