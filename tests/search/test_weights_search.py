"""`automl search` and `automl weights` fetch pretrained weights once, up front, or stop before any work."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from automl.data.face_model import ENV_VAR, FILENAME, REPO_ID
from automl.search.storage import STORAGE_FILE
from tests.conftest import YUNET
from tests.hub_server import HubServer, hub_server, point_hub_at
from tests.search.helpers import FAST, QUICK, automl, load

TINY_PRETRAINED = """
settings: {folds: 2, max_epochs: 1, image_size: 32, seed: 0, pruner: none}
params:
  backbone: {choices: [test_resnet, test_efficientnet]}
  pretrained: true
  batch_size: 16
"""


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[HubServer]:
    monkeypatch.setenv(ENV_VAR, "")  # the face detector from the hub too
    with hub_server() as server:
        point_hub_at(monkeypatch, server.url, tmp_path / "weights-cache")
        yield server


def test_offline_search_stops_before_caching_images(
    monkeypatch: pytest.MonkeyPatch, demo: Path, tmp_path: Path
) -> None:
    point_hub_at(monkeypatch, "http://127.0.0.1:9", tmp_path / "empty-cache", offline=True)
    monkeypatch.setenv(ENV_VAR, "")
    home = tmp_path / "home"
    started = time.monotonic()
    code, out = automl("search", "--task", "age", "--trials", "2", "--data", demo, "--home", home)
    assert code == 2, out
    assert time.monotonic() - started < 30
    for backbone in ("resnet18", "efficientnet_b0", "convnext_nano", "swin_tiny_patch4_window7_224"):
        assert backbone in out
    assert "automl weights" in out and "weights_file=" in out and "pretrained=false" in out
    assert "face detector is missing" in out and "--face-detector PATH" in out  # the space crops faces too
    assert not (home / "cache").exists()  # no image was cached
    assert not (home / STORAGE_FILE).exists()  # no study database was made


def test_offline_without_the_face_detector_stops_before_caching_then_a_named_file_runs(
    monkeypatch: pytest.MonkeyPatch, demo: Path, tmp_path: Path
) -> None:
    point_hub_at(monkeypatch, "http://127.0.0.1:9", tmp_path / "empty-cache", offline=True)
    monkeypatch.setenv(ENV_VAR, "")  # restored after the test: --face-detector sets it for the workers
    home = tmp_path / "home"
    aligned = (*FAST, "--set", "face_crop=aligned")
    args = ("search", "--task", "mask", "--trials", "1", *aligned, "--data", demo, "--home", home)
    code, out = automl(*args)
    assert code == 2, out
    flat = " ".join(out.split())
    assert "error: the face detector is missing, so nothing was started" in flat
    assert "HF_HUB_OFFLINE=1" in flat and "pretrained weights" not in flat  # quick.yaml loads none
    assert not (home / "cache").exists() and not (home / STORAGE_FILE).exists()
    if not YUNET.is_file():
        pytest.skip(f"no copy of the face detector at {YUNET}")
    code, out = automl(*args, "--face-detector", YUNET)
    assert code == 0, out
    assert load(home).trials[0].user_attrs["config"]["face_crop"] == "aligned"


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


def test_weights_command_fetches_the_face_detector(hub: HubServer, tmp_path: Path) -> None:
    if not YUNET.is_file():
        pytest.skip(f"no copy of the face detector at {YUNET}")
    served = f"{REPO_ID}/resolve/main/{FILENAME}"
    hub.files[served] = YUNET.read_bytes()
    space = tmp_path / "aligned.yaml"
    space.write_text(QUICK.read_text() + "  face_crop: aligned\n")
    code, out = automl("weights", "--space", space, "--check")
    assert code == 1 and "face detector (hf.co/opencv/face_detection_yunet" in out and "1 missing" in out
    code, out = automl("weights", "--detector")
    assert code == 0, out
    assert "downloading the face detector" in out and hub.downloads == {served: 1}
    code, out = automl("weights", "--space", space)
    assert code == 0 and "models--opencv--face_detection_yunet" in out and hub.downloads == {served: 1}
