"""The face detector's model file through the real huggingface_hub download code, against a hub on 127.0.0.1:
fetched once, checked, fetched again when damaged, or one clear message offline."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from automl.data.face_model import ENV_VAR, FILENAME, REPO_ID, cached_model, ensure_model, model_path
from automl.errors import AutomlError
from tests.conftest import YUNET
from tests.hub_server import HubServer, hub_server, point_hub_at

pytestmark = pytest.mark.skipif(not YUNET.is_file(), reason=f"no copy of the face detector at {YUNET}")
SERVED = f"{REPO_ID}/resolve/main/{FILENAME}"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[HubServer]:
    monkeypatch.delenv(ENV_VAR, raising=False)
    with hub_server() as server:
        point_hub_at(monkeypatch, server.url, tmp_path / "cache")
        server.files[SERVED] = YUNET.read_bytes()
        yield server


def test_downloads_once_into_the_hub_cache(hub: HubServer, tmp_path: Path) -> None:
    announced: list[str] = []
    path = ensure_model(announced.append)
    assert hub.downloads == {SERVED: 1} and len(announced) == 1 and FILENAME in announced[0]
    assert path == cached_model() == model_path() and str(tmp_path / "cache") in str(path)
    assert path.read_bytes() == YUNET.read_bytes()
    assert ensure_model() == path and hub.downloads == {SERVED: 1}  # the cache serves every later run


def test_a_damaged_cached_model_is_fetched_again(hub: HubServer) -> None:
    path = ensure_model()
    path.resolve().write_bytes(b"not an onnx file")  # the blob the cache's link points at
    with pytest.raises(AutomlError, match="sha256"):
        model_path()  # detection never downloads: it says what is wrong
    assert ensure_model() == path and hub.downloads == {SERVED: 2}
    assert path.read_bytes() == YUNET.read_bytes()


def test_a_wrong_download_is_refused(hub: HubServer) -> None:
    hub.files[SERVED] = b"\x08\x07 an older model"
    with pytest.raises(AutomlError, match=r"(?s)downloaded .* but its sha256 is .*not the pinned"):
        ensure_model()


def test_offline_without_the_model_is_one_message_with_the_ways_out(
    hub: HubServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    point_hub_at(monkeypatch, hub.url, tmp_path / "cache", offline=True)
    with pytest.raises(AutomlError) as raised:
        ensure_model()
    message = str(raised.value)
    assert "face detector is missing, so nothing was started" in message and "HF_HUB_OFFLINE=1" in message
    assert "automl weights --detector" in message and f"--face-detector PATH (or set {ENV_VAR}=PATH)" in message
    assert not hub.downloads


def test_a_named_file_is_used_without_the_network_and_checked(
    hub: HubServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    point_hub_at(monkeypatch, hub.url, tmp_path / "cache", offline=True)
    monkeypatch.setenv(ENV_VAR, str(YUNET))
    assert ensure_model() == model_path() == YUNET and not hub.downloads
    other = tmp_path / "other.onnx"
    other.write_bytes(b"something else")
    monkeypatch.setenv(ENV_VAR, str(other))
    with pytest.raises(AutomlError, match=rf"face detector {other} \(--face-detector or {ENV_VAR}\): its sha256"):
        ensure_model()
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "absent.onnx"))
    with pytest.raises(AutomlError, match="absent.onnx .*cannot be read"):
        model_path()
