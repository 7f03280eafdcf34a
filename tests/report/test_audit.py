"""The confident-learning audit on hand-made probability tables, and confirmed rows -> label fixes: no training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from automl.data.dataset import DataSource, load_dataset
from automl.data.tasks import AgeTask, CategoricalTask, CombinedTask
from automl.errors import AutomlError, DataError
from automl.report.audit import (
    MAX_SWAP_GROUP,
    audit,
    confident_learning,
    precision_recall_at_k,
    rank_people,
    swapped_labels,
)
from automl.report.confirm import confirmed_fixes, write_fixes
from tests.conftest import person, write_competition

MASK = CategoricalTask("mask", ("wear", "incorrect", "not_wear"))
GENDER = CategoricalTask("gender", ("male", "female"))


def test_confident_learning_flags_the_contradicted_row() -> None:
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.1, 0.9], [0.2, 0.8], [0.95, 0.05]])
    given = np.array([0, 0, 0, 1, 1, 1])  # the last row says class 1, the model says 0
    found = confident_learning(probs, given)
    assert found.thresholds == pytest.approx([0.8, (0.9 + 0.8 + 0.05) / 3])
    assert found.flagged.tolist() == [False, False, False, False, False, True]
    assert found.suggested[5] == 0


def test_confident_learning_needs_another_class_above_its_threshold() -> None:
    # Row 2 is unsure of its label (0.4 < class 0's 0.7), but class 1 (0.6) is below its threshold (0.85): not flagged.
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.1, 0.9], [0.2, 0.8], [0.15, 0.85]])
    given = np.array([0, 0, 0, 1, 1, 1])
    found = confident_learning(probs, given)
    assert not found.flagged.any()
    assert found.thresholds[1] == pytest.approx(0.85)


def _table(people: int, photos: int = 3) -> pd.DataFrame:
    rows = []
    for p in range(people):
        for k in range(photos):
            rows.append({"image_id": f"p{p}/{k}", "group": f"p{p}", "gender": "female" if p % 2 else "male",
                         "age": 20 + 15 * (p % 3), "mask": ("wear", "incorrect", "not_wear")[k]})  # fmt: skip
    return pd.DataFrame(rows)


def test_a_persons_field_is_audited_per_person() -> None:
    train = _table(10)
    truth = GENDER.labels(train)
    probs = np.where(truth[:, None] == np.arange(2), 0.85, 0.15)
    probs[train["group"] == "p3"] = [0.9, 0.1]  # p3 is given female; every photo says male
    probs[train["image_id"] == "p5/0"] = [0.7, 0.3]  # one odd photo of p5 (female): outvoted by the other two
    table = audit(train, GENDER, probs)
    flagged = table[table["flagged"]]
    assert flagged[["person", "image", "given", "suggested", "images", "fix_id", "value"]].to_dict("records") == [
        {
            "person": "p3",
            "image": "",
            "given": "female",
            "suggested": "male",
            "images": 3,
            "fix_id": "p3",
            "value": "male",
        }  # fmt: skip
    ]
    assert rank_people(table)["person"].iloc[0] == "p3"


def test_a_per_image_field_is_audited_per_image_and_ranked_by_evidence() -> None:
    train = _table(10)
    truth = MASK.labels(train)
    probs = np.where(truth[:, None] == np.arange(3), 0.8, 0.1)
    probs[train["image_id"] == "p2/1"] = [0.05, 0.15, 0.8]  # given incorrect, looks like not_wear
    probs[train["image_id"] == "p7/2"] = [0.1, 0.75, 0.15]  # given not_wear, looks incorrect: less evidence
    table = audit(train, MASK, probs)
    flagged = table[table["flagged"]]
    assert list(flagged["image"]) == ["p2/1", "p7/2"] and list(flagged["rank"]) == [1, 2]
    assert list(flagged["suggested"]) == ["not_wear", "incorrect"] and list(flagged["fix_id"]) == ["p2/1", "p7/2"]
    assert list(rank_people(table)["person"][:2]) == ["p2", "p7"]


def test_photos_that_look_swapped_within_a_person_are_flagged_as_a_swap() -> None:
    train = _table(10)
    truth = MASK.labels(train)
    probs = np.where(truth[:, None] == np.arange(3), 0.8, 0.1)
    # p6's incorrect and not_wear photos look like each other's label, but not surely enough to cross the thresholds.
    probs[train["image_id"] == "p6/1"] = [0.1, 0.35, 0.55]
    probs[train["image_id"] == "p6/2"] = [0.1, 0.5, 0.4]
    probs[train["image_id"] == "p2/1"] = [0.05, 0.15, 0.8]  # a plain contradiction, no partner photo
    table = audit(train, MASK, probs)
    flagged = table[table["flagged"]].set_index("image")
    assert sorted(flagged.index) == ["p2/1", "p6/1", "p6/2"]
    assert flagged.loc["p6/1", ["suggested", "reason"]].tolist() == ["not_wear", "swapped with p6/2"]
    assert flagged.loc["p6/2", ["suggested", "reason"]].tolist() == ["incorrect", "swapped with p6/1"]
    assert flagged.loc["p2/1", ["suggested", "reason"]].tolist() == ["not_wear", "below threshold"]
    # A swap's evidence adds up to what it gains: log(0.55 / 0.35) + log(0.5 / 0.4) = 0.68 < p2's log(0.8 / 0.15).
    assert flagged.loc[["p6/1", "p6/2"], "evidence"].sum() == pytest.approx(np.log(0.55 * 0.5 / (0.35 * 0.4)), abs=1e-3)
    assert list(rank_people(table)["person"][:2]) == ["p2", "p6"]


def test_swapped_labels_follow_the_best_reassignment_within_each_group() -> None:
    given = np.array([0, 1, 2, 0, 1, 2, 0, 0])
    groups = np.array(["a", "a", "a", "b", "b", "b", "c", "c"])
    probs = np.full((8, 3), 0.1)
    probs[[0, 1, 2], [1, 2, 0]] = 0.8  # a: every photo shows the next photo's label (a 3-cycle)
    probs[[3, 4, 5], [0, 1, 2]] = 0.8  # b: as given
    probs[6:, 1] = 0.8  # c: both look like class 1, which c does not have: nothing to swap
    source = swapped_labels(probs, given, groups)
    assert source.tolist() == [1, 2, 0, 3, 4, 5, 6, 7]


def test_groups_too_large_to_be_a_person_are_not_searched_for_swaps() -> None:
    size = MAX_SWAP_GROUP + 1
    given = np.arange(size) % 2
    probs = np.where(given[:, None] == np.arange(2), 0.1, 0.9)  # every row looks like the other label
    assert (swapped_labels(probs, given, np.zeros(size)) == np.arange(size)).all()
    assert (swapped_labels(probs[:4], given[:4], np.zeros(4)) != np.arange(4)).all()


def test_age_fix_is_the_nearest_age_in_the_suggested_group_and_all_is_audited_per_field() -> None:
    train = _table(9)
    age = AgeTask(bins=(30, 60))
    task = CombinedTask("all", (MASK, GENDER, age))
    codes = task.labels(train)
    probs = np.where(codes[:, None] == np.arange(18), 0.83, 0.01)
    # p4 is given 35 (30-59); its photos look <30: move the 18-class mass from age 1 to age 0.
    rows = np.flatnonzero(train["group"] == "p4")
    probs[rows] = 0.01
    probs[rows, codes[rows] - 1] = 0.9
    table = audit(train, task, probs)
    flagged = table[table["flagged"]]
    assert flagged[["person", "field", "given", "suggested", "value"]].to_dict("records") == [
        {"person": "p4", "field": "age", "given": "30-59", "suggested": "<30", "value": "29"}
    ]


def test_precision_and_recall_at_k() -> None:
    assert precision_recall_at_k(["a", "b", "c", "d"], {"a", "c", "x"}, 3) == (2 / 3, 2 / 3)


def _audit_csv(path: Path, rows: list[dict]) -> Path:
    base = {"rank": 1, "person": "p", "image": "", "given": "", "suggested": "", "confidence": 0.9}
    pd.DataFrame([{**base, **row} for row in rows]).to_csv(path, index=False)
    return path


def test_confirmed_rows_become_a_fixes_file_the_loader_applies(tmp_path: Path) -> None:
    data = write_competition(tmp_path / "data", [person(1, "female", 25), person(2, "male", 45)])
    p1, p2 = person(1, "female", 25)[3], person(2, "male", 45)[3]
    audit_csv = _audit_csv(tmp_path / "audit.csv", [
        {"fix_id": p1, "field": "gender", "value": "male", "confirm": "yes"},
        {"fix_id": f"{p2}/normal", "field": "mask", "value": "incorrect", "confirm": "Y"},
        {"fix_id": p2, "field": "age", "value": "61", "confirm": ""},
    ])  # fmt: skip
    fixes = tmp_path / "fixes.csv"
    (tmp_path / "fixes.csv").write_text(f"id,field,value\n{p2},age,60\n{p1},gender,female\n")
    assert write_fixes(audit_csv, fixes) == (2, 3)  # p1's older gender fix is replaced by the confirmed one
    assert pd.read_csv(fixes, dtype=str).values.tolist() == [
        [p2, "age", "60"], [p1, "gender", "male"], [f"{p2}/normal", "mask", "incorrect"],
    ]  # fmt: skip
    train = load_dataset(DataSource(data, label_fixes=fixes)).train.set_index("image_id")
    assert (train.loc[train["group"] == p1, "gender"] == "male").all()
    assert train.loc[f"{p2}/normal", "mask"] == "incorrect" and (train.loc[train["group"] == p2, "age"] == 60).all()


def test_bad_confirmed_rows_name_file_line_and_value(tmp_path: Path) -> None:
    audit_csv = _audit_csv(tmp_path / "audit.csv", [
        {"fix_id": "a", "field": "gender", "value": "male", "confirm": "maybe"},
        {"fix_id": "b", "field": "age", "value": "old", "confirm": "yes"},
        {"fix_id": "c", "field": "gender", "value": "other", "confirm": "yes"},
        {"fix_id": "d", "field": "gender", "value": "male", "confirm": "no"},
    ])  # fmt: skip
    with pytest.raises(DataError) as error:
        confirmed_fixes(audit_csv)
    message = str(error.value)
    assert "nothing was written" in message
    assert f"{audit_csv} line 2: confirm 'maybe'" in message
    assert f"{audit_csv} line 3: age 'old'" in message
    assert f"{audit_csv} line 4: gender value 'other'" in message
    nothing = _audit_csv(tmp_path / "none.csv", [{"fix_id": "d", "field": "gender", "value": "male", "confirm": ""}])
    with pytest.raises(AutomlError, match="no row has confirm = yes"):
        write_fixes(nothing, tmp_path / "fixes.csv")
    assert not (tmp_path / "fixes.csv").exists()
    (tmp_path / "bad.csv").write_text("id,field\nx,gender\n")
    with pytest.raises(AutomlError, match="lacks the column"):
        confirmed_fixes(tmp_path / "bad.csv")


def test_people_with_several_contradicted_photos_rank_first() -> None:
    table = pd.DataFrame(
        {
            "person": ["one_big", "two_small", "two_small", "clean"],
            "evidence": [0.6, 0.4, 0.35, 0.7],
            "flagged": [True, True, True, False],
        }
    )
    people = rank_people(table)
    assert list(people["person"]) == ["two_small", "one_big", "clean"]
    assert list(people["issues"]) == [2, 1, 0]
