"""Resuming a study means the same study: the same search space, or a clear refusal."""

from __future__ import annotations

from pathlib import Path

from tests.search.helpers import FAST, QUICK, automl, load


def test_a_study_resumed_with_another_space_is_refused(demo: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    space = tmp_path / "space.yaml"
    space.write_text(QUICK.read_text())
    fast = [a if a != str(QUICK) else str(space) for a in FAST]
    code, out = automl("search", "--task", "mask", "--trials", "1", *fast, "--data", demo, "--home", home)
    assert code == 0, out
    recorded = load(home).user_attrs["space"]
    assert recorded["file"] == str(space) and len(recorded["sha256"]) == 64
    assert "backbone=test_resnet" in recorded["overrides"]
    trial = load(home).trials[0]
    # Fixed values sit beside the sampled ones, so the dashboard shows the whole configuration.
    assert trial.user_attrs["fixed.backbone"] == "test_resnet" and trial.user_attrs["fixed.batch_size"] == 32
    assert "fixed.loss" not in trial.user_attrs and "loss" in trial.params

    other = [a if a != "backbone=test_resnet" else "backbone=test_vit" for a in fast]
    code, out = automl("search", "--task", "mask", "--trials", "2", *other, "--data", demo, "--home", home)
    assert code == 2
    assert "another search space" in out and "backbone: = 'test_resnet'  ->  = 'test_vit'" in out
    assert "--study NEW_NAME" in out
    assert len(load(home).trials) == 1

    space.write_text(space.read_text().replace("settings:", "# a comment changes nothing\nsettings:"))
    code, out = automl("search", "--task", "mask", "--trials", "2", *fast, "--data", demo, "--home", home)
    assert code == 0, out
    assert len(load(home).trials) == 2

    code, out = automl("search", "--task", "mask", "--trials", "1", *other, "--data", demo, "--home", home,
                       "--study", "vit")  # fmt: skip
    assert code == 0, out
