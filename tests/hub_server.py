"""A local stand-in for the Hugging Face hub (and any plain URL) on 127.0.0.1, for the real download code.

huggingface_hub asks `HEAD {endpoint}/{repo_id}/resolve/{revision}/{filename}` for the file's commit (X-Repo-Commit),
ETag and size, then GETs the same URL; a missing file is a 404 with X-Error-Code EntryNotFound. The server counts
the GETs of every path, so a test can say each file was downloaded exactly once.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import timm
from huggingface_hub import constants as hub_constants
from safetensors.torch import save_file

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class HubServer:
    url: str
    files: dict[str, bytes] = field(default_factory=dict)  # path (no leading /) -> content
    downloads: Counter[str] = field(default_factory=Counter)

    def serve_model(self, backbone: str, content: bytes | None = None) -> bytes:
        """Serve `backbone`'s weights where its timm pretrained config points: its hub repo's model.safetensors."""
        repo = timm.models.get_pretrained_cfg(backbone).hf_hub_id
        content = content if content is not None else weights_bytes(backbone)
        self.files[f"{repo}/resolve/main/model.safetensors"] = content
        return content


def weights_bytes(backbone: str) -> bytes:
    """A real (untrained) safetensors file of `backbone` with timm's 1000-class head, as the hub holds it."""
    import tempfile

    model = timm.create_model(backbone, pretrained=False)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.safetensors"
        save_file(model.state_dict(), path)
        return path.read_bytes()


@contextmanager
def hub_server() -> Iterator[HubServer]:
    state = HubServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
            self._answer(body=False)

        def do_GET(self) -> None:  # noqa: N802
            self._answer(body=True)

        def _answer(self, body: bool) -> None:
            path = self.path.lstrip("/").split("?")[0]
            content = state.files.get(path)
            if content is None:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{hashlib.sha256(content).hexdigest()}"')
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            if body:
                state.downloads[path] += 1
                self.wfile.write(content)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def point_hub_at(monkeypatch: pytest.MonkeyPatch, endpoint: str, cache: Path, offline: bool = False) -> None:
    """huggingface_hub read HF_ENDPOINT / HF_HUB_OFFLINE / HF_HUB_CACHE when imported: set its constants instead."""
    monkeypatch.setattr(hub_constants, "ENDPOINT", endpoint)
    template = endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(hub_constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", offline)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(cache / "torch"))  # torch.hub reads it on every call
