"""Pretrained weights: where timm fetches a backbone's weights from, whether they are on this machine, fetching them.

A trial only reads the local cache (`cached_weights`), so it never waits on the network. `ensure_weights` runs
once, up front, in the main process of a command: it finds each backbone's weights in the standard caches
(Hugging Face hub, or torch hub for a plain `url`) or downloads them there through huggingface_hub / timm, exactly
where `timm.create_model(name, pretrained=True)` would, and stops with one message when any cannot be had.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError

import timm
from huggingface_hub import constants as hub_constants
from huggingface_hub import hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import LocalEntryNotFoundError, RemoteEntryNotFoundError
from timm.models._hub import download_cached_file, get_cache_dir, hf_split

from automl.errors import AutomlError

#: The files timm loads from a hub repo, in its order of preference (safetensors first).
HUB_FILENAMES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class WeightsSource:
    """Where timm gets a backbone's pretrained weights: a Hugging Face hub repo, else a plain URL."""

    backbone: str
    hf_hub_id: str | None = None
    revision: str | None = None
    filenames: tuple[str, ...] = HUB_FILENAMES
    url: str | None = None

    def __str__(self) -> str:
        return f"hf.co/{self.hf_hub_id}" if self.hf_hub_id else str(self.url)


@dataclass(frozen=True)
class Missing:
    backbone: str
    reason: str


def weights_source(backbone: str) -> WeightsSource:
    """The source timm's pretrained config names (the default tag, or `name.tag`)."""
    config = timm.models.get_pretrained_cfg(backbone)
    if config is None or not (config.hf_hub_id or config.url):
        raise AutomlError(
            f"timm has no pretrained weights for {backbone}; pass your own with --set weights_file=FILE, "
            "or train it from scratch with --set pretrained=false"
        )
    if config.hf_hub_id:
        repo, revision = hf_split(config.hf_hub_id)
        names = (config.hf_hub_filename,) if config.hf_hub_filename else HUB_FILENAMES
        return WeightsSource(backbone, repo, revision, names, config.url or None)
    return WeightsSource(backbone, url=config.url)


def cached_weights(source: WeightsSource) -> Path | None:
    """The weights file in the local hub cache (or timm's old torch hub cache for a URL), without the network."""
    if source.hf_hub_id:
        for filename in source.filenames:
            cached = try_to_load_from_cache(source.hf_hub_id, filename, revision=source.revision)
            if isinstance(cached, str):
                return Path(cached)
    if source.url:
        old_cache = Path(get_cache_dir()) / Path(source.url).name
        if old_cache.is_file():
            return old_cache
    return None


def weights_problem(path: Path) -> str | None:
    """Why a weights file is unusable (empty, truncated, not a weights file), or None. Reads its header only."""
    try:
        if path.stat().st_size == 0:
            return "the file is empty"
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt"):
                return None
        with path.open("rb") as handle:
            head = handle.read(2)
        # torch.save writes a zip archive (PyTorch >= 1.6); older checkpoints are a bare pickle (protocol 2+).
        if zipfile.is_zipfile(path) or head[:1] == b"\x80":
            return None
        return "not a PyTorch checkpoint"
    except Exception as error:  # safetensors raises its own error types for a bad header
        return f"unreadable ({error})"


def is_offline() -> bool:
    """HF_HUB_OFFLINE=1 (read by huggingface_hub when imported) means no download of any kind is tried."""
    return bool(hub_constants.HF_HUB_OFFLINE)


def download_weights(source: WeightsSource, force: bool = False) -> Path:
    """Download into the standard cache (huggingface_hub and torch show their own progress bars)."""
    if source.hf_hub_id:
        for filename in source.filenames:
            try:
                return Path(hf_hub_download(source.hf_hub_id, filename, revision=source.revision, force_download=force))
            except RemoteEntryNotFoundError:
                continue  # timm too falls back from model.safetensors to pytorch_model.bin
        raise FileNotFoundError(f"hf.co/{source.hf_hub_id} has none of {', '.join(source.filenames)}")
    assert source.url is not None
    if force:
        (Path(get_cache_dir()) / Path(source.url).name).unlink(missing_ok=True)
    return Path(download_cached_file(source.url, check_hash=True, progress=True))


def ensure_weights(backbones: Iterable[str], announce: Callable[[str], None] | None = None) -> dict[str, Path]:
    """Every backbone's weights file, downloaded once where missing; an AutomlError listing all that cannot be had."""
    found: dict[str, Path] = {}
    missing: list[Missing] = []
    unreachable = ""  # after one unreachable download, the others are not tried (each retries for ~20 s)
    for backbone in dict.fromkeys(backbones):
        source = weights_source(backbone)
        path = cached_weights(source)
        problem = None if path is None else weights_problem(path)
        if path is not None and problem is None:
            found[backbone] = path
            continue
        if is_offline() or unreachable:
            why = "HF_HUB_OFFLINE=1" if is_offline() else f"{unreachable} did not answer"
            missing.append(Missing(backbone, f"{problem or 'not in the local cache'}, and {why}"))
            continue
        if announce is not None:
            announce(f"downloading the pretrained weights of {backbone} from {source}")
        try:
            path = download_weights(source, force=problem is not None)
        except Exception as error:  # no network, HTTP errors, a full disk: each named in the one message
            if isinstance(error, LocalEntryNotFoundError | URLError):  # what both say when the host is unreachable
                unreachable = hub_constants.ENDPOINT if source.hf_hub_id else str(source.url)
            missing.append(Missing(backbone, f"download from {source} failed: {_first_line(error)}"))
            continue
        problem = weights_problem(path)
        if problem is not None:
            missing.append(Missing(backbone, f"downloaded {path} from {source} is corrupt: {problem}"))
            continue
        found[backbone] = path
    if missing:
        raise AutomlError(missing_message(missing))
    return found


def missing_message(missing: list[Missing]) -> str:
    listed = "\n".join(f"  - {m.backbone}: {m.reason}" for m in missing)
    names = " ".join(m.backbone for m in missing)
    return (
        f"pretrained weights are missing for {len(missing)} backbone(s), so nothing was started:\n{listed}\n"
        "Three ways out:\n"
        f"  1. on a machine with internet run `automl weights {names}` (or `automl weights --space FILE`), then copy "
        f"its cache {hub_constants.HF_HUB_CACHE} to the same place here (or point HF_HUB_CACHE at the copy);\n"
        "  2. --set weights_file=/path/to/weights.safetensors with your own file (with --set backbone=NAME);\n"
        "  3. --set pretrained=false to train from scratch."
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
