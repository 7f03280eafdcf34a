"""`automl search` and `automl weights` fetch pretrained weights once, up front, or stop before any work."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from automl.search.storage import STORAGE_FILE
from tests.hub_server import HubServer, hub_server, point_hub_at
from tests.search.helpers import automl, load

TINY_PRETRAINED = """
settings: {folds: 2, max_epochs: 1, image_size: 32, seed: 0, pruner: none}
params:
  backbone: {choices: [test_resnet, test_efficientnet]}
  pretrained: true
  batch_size: 16
"""


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[HubServer]:
    with hub_server() as server:
        point_hub_at(monkeypatch, server.url, tmp_path / "weights-cache")
        yield server


def test_offline_search_stops_before_caching_images(
    monkeypatch: pytest.MonkeyPatch, demo: Path, tmp_path: Path
) -> None:
    point_hub_at(monkeypatch, "http://127.0.0.1:9", tmp_path / "empty-cache", offline=True)
    home = tmp_path / "home"
    started = time.monotonic()
    code, out = automl("search", "--task", "age", "--trials", "2", "--data", demo, "--home", home)
    assert code == 2, out
    assert time.monotonic() - started < 30
    for backbone in ("resnet18", "efficientnet_b0", "convnext_nano", "swin_tiny_patch4_window7_224"):
        assert backbone in out
    assert "automl weights" in out and "weights_file=" in out and "pretrained=false" in out
    assert not (home / "cache").exists()  # no image was cached
    assert not (home / STORAGE_FILE).exists()  # no study database was made


def test_search_downloads_each_weights_file_once_and_trials_load_them(
    hub: HubServer, demo: Path, tmp_path: Path
) -> None:
    hub.serve_model("test_resnet")
    hub.serve_model("test_efficientnet")
    space = tmp_path / "tiny.yaml"
    space.write_text(TINY_PRETRAINED)
    home = tmp_path / "home"
    code, out = automl("search", "--task", "mask", "--trials", "3", "--space", space, "--data", demo, "--home", home)
    assert code == 0, out
    assert "downloading the pretrained weights of test_resnet" in out
    assert sorted(hub.downloads.values()) == [1, 1]
    trials = load(home).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert all(t.user_attrs["config"]["pretrained"] for t in trials)

    code, out = automl("search", "--task", "mask", "--trials", "4", "--space", space, "--data", demo, "--home", home)
    assert code == 0, out
    assert sorted(hub.downloads.values()) == [1, 1]  # the cache serves every later run


def test_weights_command_lists_then_downloads(hub: HubServer, tmp_path: Path) -> None:
    hub.serve_model("test_resnet")
    space = tmp_path / "tiny.yaml"
    space.write_text(TINY_PRETRAINED)
    code, out = automl("weights", "--space", space, "--check")
    assert code == 1 and "2 missing" in out and "test_efficientnet" in out
    assert not hub.downloads

    code, out = automl("weights", "test_resnet")
    assert code == 0, out
    assert "test_resnet (hf.co/timm/test_resnet.r160_in1k): /" in out and "models--timm--test_resnet" in out
    code, out = automl("weights", "--space", space)  # test_efficientnet is not served
    assert code == 2 and "test_efficientnet" in out and "test_resnet:" not in out
    assert hub.downloads == {"timm/test_resnet.r160_in1k/resolve/main/model.safetensors": 1}
    code, out = automl("weights", "resnet1B")
    assert code == 2 and "did you mean resnet18" in out
