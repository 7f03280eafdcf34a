"""`automl audit`: the out-of-fold probabilities of a study's best trials (or of its export's ensemble) against
the given labels; writes `audit.csv` (for confirming) and `audit.html` (thumbnails) into the audit folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from automl.atomic import write_csv_atomic
from automl.report.audit import COLUMNS, audit, rank_people
from automl.report.audit_page import render_audit_page
from automl.report.inputs import StudyLabels, StudyRef, find_export, mean_trial_probabilities, open_study_labels
from automl.report.page import write_page

CSV_FILE = "audit.csv"
PAGE_FILE = "audit.html"


@dataclass
class AuditResult:
    table: pd.DataFrame  # every unit of every field, ranked (flagged first)
    people: pd.DataFrame  # people ranked by the evidence against their labels (see audit.rank_people)
    shown: pd.DataFrame  # the flagged rows written, at most `top`
    directory: Path
    source: str  # where the probabilities came from

    @property
    def flagged(self) -> int:
        return int(self.table["flagged"].sum())


def default_audit_dir(home: Path, study: str) -> Path:
    return home / "audits" / study


def audit_probabilities(ref: StudyRef, trials: int, export: Path | None) -> tuple[StudyLabels, np.ndarray, str]:
    """(labels, probabilities, a description of their source): the export's ensemble when there is one."""
    labels = open_study_labels(ref)
    found = find_export(labels, export)
    if found is not None:
        info, probs = found
        members = ", ".join(str(m.trial) for m in info.members)
        return labels, probs, f"the export's ensemble ({info.ensemble.method} of trials {members})"
    probs, numbers = mean_trial_probabilities(labels, trials)
    return labels, probs, f"the mean of the best {len(numbers)} trial(s): {', '.join(map(str, numbers))}"


def run_audit(
    ref: StudyRef, out: Path | None = None, top: int = 100, trials: int = 3, export: Path | None = None
) -> AuditResult:
    labels, probs, source = audit_probabilities(ref, trials, export)
    train = labels.data.dataset.train
    table = audit(train, labels.data.task, probs)
    people = rank_people(table)
    shown = table[table["flagged"]].head(top).reset_index(drop=True)
    directory = out or default_audit_dir(ref.home, labels.study.study_name)
    write_csv_atomic(shown[list(COLUMNS)], directory / CSV_FILE)
    photos = {
        person: list(zip(rows["image_id"], rows["path"], strict=True))
        for person, rows in train[train["group"].isin(set(shown["person"]))].groupby("group")
    }
    flagged_people = int(people["flagged"].sum())
    summary = [
        f"study {labels.study.study_name}, task {ref.task}: out-of-fold probabilities from {source}",
        f"{int(table['flagged'].sum())} label(s) of {flagged_people} person(s) flagged among {len(table)} "
        f"(the first {len(shown)} shown, the person with the most evidence against their labels first)",
        "given label and suggested label with their probabilities; red outline: the image in question",
        f"to fix: set confirm = yes in {directory / CSV_FILE} (edit value if needed), then run "
        f"automl audit --apply-confirmed {directory / CSV_FILE} --out label_fixes.csv",
    ]
    title = f"automl label audit: study {labels.study.study_name}"
    write_page(directory / PAGE_FILE, render_audit_page(title, summary, shown, photos))
    return AuditResult(table, people, shown, directory, source)
