"""Pretrained weights through the real huggingface_hub / timm download code, against a hub on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import timm
import torch

from automl.errors import AutomlError
from automl.train.backbone import create_backbone
from automl.train.params import TrainParams
from automl.train.weights import cached_weights, ensure_weights, weights_source
from tests.hub_server import HubServer, hub_server, point_hub_at


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[HubServer]:
    with hub_server() as server:
        point_hub_at(monkeypatch, server.url, tmp_path / "cache")
        yield server


def test_downloads_once_into_the_hub_cache_and_trials_load_it(hub: HubServer) -> None:
    hub.serve_model("test_resnet")
    announced: list[str] = []
    found = ensure_weights(["test_resnet", "test_resnet"], announce=announced.append)
    assert list(hub.downloads.values()) == [1]
    assert len(announced) == 1 and "test_resnet" in announced[0]
    assert found["test_resnet"] == cached_weights(weights_source("test_resnet"))

    ensure_weights(["test_resnet"])  # cached now: no second download
    assert list(hub.downloads.values()) == [1]

    served = timm.create_model("test_resnet", pretrained=False)
    from safetensors.torch import load_file

    served.load_state_dict(load_file(found["test_resnet"]))
    model = create_backbone(TrainParams(backbone="test_resnet", pretrained=True), num_classes=3)
    first = next(iter(served.state_dict()))
    assert torch.equal(model.state_dict()[first], served.state_dict()[first])  # the served weights, a new head
    assert model.get_classifier().out_features == 3


def test_offline_lists_every_missing_backbone_and_the_ways_out(
    monkeypatch: pytest.MonkeyPatch, hub: HubServer, tmp_path: Path
) -> None:
    hub.serve_model("test_resnet")
    point_hub_at(monkeypatch, hub.url, tmp_path / "cache", offline=True)
    with pytest.raises(AutomlError) as error:
        ensure_weights(["test_resnet", "test_efficientnet"])
    message = str(error.value)
    assert "missing for 2 backbone(s)" in message and "HF_HUB_OFFLINE=1" in message
    assert "test_resnet" in message and "test_efficientnet" in message
    assert "automl weights test_resnet test_efficientnet" in message
    assert "--set weights_file=" in message and "--set pretrained=false" in message
    assert not hub.downloads  # offline: not even tried


def test_no_network_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with hub_server() as gone:
        endpoint = gone.url  # a port nobody listens on once the server is closed
    point_hub_at(monkeypatch, endpoint, tmp_path / "cache")
    with pytest.raises(AutomlError, match=r"(?s)test_resnet: download from hf.co/timm/test_resnet.* failed.*Three"):
        ensure_weights(["test_resnet"])


def test_a_missing_file_on_the_hub_is_named(hub: HubServer) -> None:
    with pytest.raises(AutomlError, match="has none of model.safetensors, pytorch_model.bin"):
        ensure_weights(["test_resnet"])


def test_a_corrupt_download_is_refused(hub: HubServer) -> None:
    good = hub.serve_model("test_resnet")
    hub.serve_model("test_resnet", content=good[: len(good) // 2])  # a truncated file
    with pytest.raises(AutomlError, match="test_resnet: downloaded .* is corrupt"):
        ensure_weights(["test_resnet"])


def test_a_damaged_cached_file_is_refused_by_trials_and_downloaded_again(hub: HubServer) -> None:
    good = hub.serve_model("test_resnet")
    cached = ensure_weights(["test_resnet"])["test_resnet"]
    cached.resolve().write_bytes(good[:100])  # damaged on disk after the download
    with pytest.raises(AutomlError, match="are damaged.*automl weights test_resnet"):  # a trial never loads it
        create_backbone(TrainParams(backbone="test_resnet", pretrained=True), num_classes=3)

    assert ensure_weights(["test_resnet"])["test_resnet"].read_bytes() == good
    assert sum(hub.downloads.values()) == 2


def test_a_plain_url_goes_to_the_torch_hub_cache(
    monkeypatch: pytest.MonkeyPatch, hub: HubServer, tmp_path: Path
) -> None:
    content = hub.serve_model("test_resnet")
    hub.files["weights/test_resnet_plain.safetensors"] = content
    config = timm.models.get_pretrained_cfg("test_resnet")
    plain = type(config)(url=f"{hub.url}/weights/test_resnet_plain.safetensors", num_classes=1000)
    monkeypatch.setattr(timm.models, "get_pretrained_cfg", lambda name: plain)
    found = ensure_weights(["test_resnet"])
    checkpoints = tmp_path / "cache" / "torch" / "hub" / "checkpoints"
    assert found["test_resnet"] == checkpoints / "test_resnet_plain.safetensors"
    assert found["test_resnet"].read_bytes() == content
    assert hub.downloads == {"weights/test_resnet_plain.safetensors": 1}
