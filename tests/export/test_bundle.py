"""The export folder's files: weights and export.json, of this format and the older ones still read."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from automl.errors import AutomlError
from automl.export.bundle import (
    EXPORT_FILE,
    DataInfo,
    EnsembleInfo,
    ExportInfo,
    MemberInfo,
    TtaInfo,
    read_export,
    save_weights,
    write_export_info,
)
from automl.export.predict import ensemble_probs
from automl.report.build import export_figures


def test_saved_weights_load_back_and_are_readable_like_any_file_the_user_writes(tmp_path: Path) -> None:
    """safetensors' own save_file makes files only their owner can read; an export is meant to be shared."""
    path = tmp_path / "fold0.safetensors"
    save_weights({"weight": torch.arange(6.0).reshape(2, 3)}, path)
    assert torch.equal(load_file(str(path))["weight"], torch.arange(6.0).reshape(2, 3))
    reference = tmp_path / "plain.txt"
    reference.write_text("x")
    assert stat.S_IMODE(os.stat(path).st_mode) == stat.S_IMODE(os.stat(reference).st_mode)


def _member(name: str, trial: int) -> MemberInfo:
    return MemberInfo(name=name, trial=trial, study_value=0.8, oof_f1=0.75, config={"backbone": "test_resnet"},
                      models=["fold0.safetensors", "fold1.safetensors"], seeds=[7, 8], best_epochs=[3, 4])  # fmt: skip


def test_export_info_round_trips_through_export_json(tmp_path: Path) -> None:
    """The typed sections are written as export.json's format 3 keys, in their order, and read back equal."""
    info = ExportInfo(
        task="mask", classes=["wear", "incorrect", "not_wear"], study="mask", mode="folds", image_size=32,
        mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25], members=[_member("trial3", 3), _member("trial5", 5)],
        ensemble=EnsembleInfo(
            selection="greedy", decision_rule=True, method="weighted", members=[0, 1], weights=[0.75, 0.25],
            selection_f1=0.9, honest_f1=0.85, library=4, cv_repeats=2,
            candidates={"greedy": {"selection_f1": 0.9, "honest_f1": 0.85}},
        ),
        tta=TtaInfo(views=["plain", "flip"], selection_f1={"plain": 0.88, "plain+flip": 0.9}, note=""),
        data=DataInfo(path="/data", fingerprint="abc", folds=2, seed=7, storage="sqlite:///s.db", train_images=40,
                      eval_images=10),
        class_weights=[1.0, 1.5, 0.8],
    )  # fmt: skip
    write_export_info(tmp_path, info)
    raw = json.loads((tmp_path / EXPORT_FILE).read_text())
    assert list(raw) == ["task", "classes", "study", "mode", "image_size", "mean", "std", "members", "ensemble", "tta",
                         "data", "version", "class_weights"]  # fmt: skip
    assert list(raw["ensemble"]) == ["selection", "decision_rule", "method", "members", "weights", "selection_f1",
                                     "honest_f1", "library", "cv_repeats", "candidates"]  # fmt: skip
    assert raw["tta"] == {"views": ["plain", "flip"], "selection_f1": {"plain": 0.88, "plain+flip": 0.9}, "note": ""}
    assert list(raw["data"]) == ["path", "fingerprint", "folds", "seed", "storage", "train_images", "eval_images"]
    assert raw["version"] == 3 and raw["members"][1]["name"] == "trial5"
    assert read_export(tmp_path) == info


def test_a_format_2_export_still_loads_and_predicts(tmp_path: Path) -> None:
    """Format 2 kept other ensemble and TTA figures (no honest F1): they are left out, its oof_f1 read as the
    selection F1 it was, and its vote still combines the members' probabilities."""
    old = {
        "task": "mask", "classes": ["wear", "incorrect", "not_wear"], "study": "mask", "mode": "folds",
        "image_size": 32, "mean": None, "std": None,
        "members": [vars(_member("trial3", 3)), vars(_member("trial5", 5))],
        "ensemble": {"method": "soft", "members": [0, 1], "weights": [0.5, 0.5], "oof_f1": 0.8,
                     "candidates": {"soft": 0.8, "hard": 0.78}, "member_oof_f1_with_tta": [0.75, 0.74]},
        "tta": {"views": ["plain", "flip"], "oof_f1": 0.8, "oof_f1_without": 0.79,
                "candidates": {"plain": 0.79, "plain+flip": 0.8}, "note": ""},
        "data": {"path": "/data", "fingerprint": "abc", "folds": 2, "seed": 7, "storage": "sqlite:///s.db",
                 "train_images": 40, "eval_images": 0},
        "version": 2,
    }  # fmt: skip
    (tmp_path / EXPORT_FILE).write_text(json.dumps(old))
    info = read_export(tmp_path)
    assert info.ensemble == EnsembleInfo(method="soft", members=[0, 1], weights=[0.5, 0.5], selection_f1=0.8)
    assert info.tta == TtaInfo(views=["plain", "flip"], note="")
    assert info.data.folds == 2 and info.data.fingerprint == "abc" and info.class_weights is None
    assert export_figures(info.ensemble) == (
        "ensemble out-of-fold macro F1 0.8000 (selection F1; export again for the honest F1)"
    )
    first, second = np.eye(3)[[0, 1]], np.eye(3)[[2, 1]]  # two images, each member sure of its class
    views = [{"plain": first, "flip": first}, {"plain": second, "flip": second}]
    assert np.allclose(ensemble_probs(info, views), [[0.5, 0, 0.5], [0, 1, 0]])


def test_an_export_json_missing_a_field_is_damaged(tmp_path: Path) -> None:
    """A field or a whole section missing: a clear message, never a traceback."""
    raw = {"task": "mask", "classes": ["a"], "study": "s", "mode": "folds", "image_size": 32, "mean": None,
           "std": None, "members": [], "ensemble": {"method": "soft", "weights": [1.0]}, "tta": {"views": ["plain"]},
           "data": {}, "version": 3}  # fmt: skip
    (tmp_path / EXPORT_FILE).write_text(json.dumps(raw))
    with pytest.raises(AutomlError, match="is damaged: .*members.*; export again"):
        read_export(tmp_path)
    raw["ensemble"]["members"] = [0]
    del raw["tta"]
    (tmp_path / EXPORT_FILE).write_text(json.dumps(raw))
    with pytest.raises(AutomlError, match="is damaged: no 'tta'; export again"):
        read_export(tmp_path)
