"""The schema of the training parameters: each field's rule, and `automl params` (its table) in the README."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from automl.train.params import DEFAULTS, RULES, TrainParams, check_value

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_field_has_a_description_and_its_default_obeys_its_rule() -> None:
    for f in fields(TrainParams):
        assert RULES[f.name].help, f.name
        if DEFAULTS[f.name] is not None:
            check_value(f.name, DEFAULTS[f.name])


# What the factories (optim, losses, mixing, samplers, heads, augment) used to check themselves.
@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("lr", 0.0, "a number > 0"),
        ("weight_decay", -1e-4, "a number >= 0"),
        ("momentum", 1.0, "within [0, 1)"),
        ("warmup_epochs", -1.0, ">= 0"),
        ("step_epochs", 0, "a whole number >= 1"),
        ("step_gamma", 0.0, "within (0, 1]"),
        ("epochs", 0, ">= 1"),
        ("image_size", 4, ">= 8"),
        ("loss", "ce+f1+focal", "two joined by '+'"),
        ("loss", "dice", "one of: ce, f1, focal, lade, ldam"),
        ("loss_weight", 1.5, "within [0, 1]"),
        ("focal_alpha", "inverse", "one of: balanced, none"),
        ("mix", "fmix", "one of: none, mixup, cutmix, vcutmix"),
        ("mix_alpha", 0.0, "> 0"),
        ("mix_prob", 2.0, "within [0, 1]"),
        ("oversample_factor", 0.5, ">= 1"),
        ("head_hidden", -1, ">= 0"),
        ("head_dropout", 1.0, "within [0, 1)"),
        ("head_init", "he", "default, xavier, normal, zeros"),
        ("age_head", "tree", "groups, bins, regression, ordinal"),
        ("age_bin_width", 0, ">= 1"),
        ("age_regression_loss", "l2", "l1, smooth_l1"),
        ("augment_device", "tpu", "cpu, gpu"),
        ("crop", "zoom", "random_resized, center_weighted, none"),
        ("face_crop", "oval", "none, center, face, aligned, haar"),
        ("face_crop_margin", 1.5, "within [0, 1]"),
        ("face_crop_box", (0.8, 0.1, 0.2, 0.9), "x0 < x1"),
        ("age_drop_borderline", (59, 57), "low age first"),
        ("oversample_classes", (2, -1), "class codes >= 0"),
        ("backbone", "resnet1800", "unknown backbone 'resnet1800'"),
    ],
)
def test_a_value_outside_its_rule_says_what_is_allowed(name: str, value: object, words: str) -> None:
    with pytest.raises(ValueError) as error:
        check_value(name, value)
    assert words in str(error.value) and repr(value) in str(error.value)


def test_the_readme_lists_the_parameters_as_automl_params_prints_them() -> None:
    # A fresh process: the table a user sees, without losses that other test modules register.
    printed = subprocess.run(
        [sys.executable, "-m", "automl", "params"], capture_output=True, text=True, check=True, cwd=README.parent
    ).stdout
    block = re.search(r"<!-- automl params -->\n(.*?)<!-- /automl params -->", README.read_text(), re.S)
    assert block is not None, "README.md lost its <!-- automl params --> markers"
    assert block.group(1) == printed, "README.md's parameter table is stale: paste the output of `automl params`"
    assert printed.count("\n") == len(fields(TrainParams)) + 2


def test_a_config_saved_before_yunet_crops_face_with_the_haar_cascade_it_trained_with() -> None:
    saved = {**TrainParams(face_crop="face").to_dict(), "face_crop_box": [0.2, 0.1, 0.8, 0.9]}
    assert TrainParams.from_dict(saved).face_crop == "face"  # written today: YuNet
    del saved["face_crop_pick"], saved["face_crop_threshold"]  # what a config written before YuNet lacks
    old = TrainParams.from_dict(saved)
    assert old.face_crop == "haar" and old.face_crop_box == (0.2, 0.1, 0.8, 0.9)
    assert not old.image_crop.needs_detector
