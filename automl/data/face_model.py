"""The face detector's model file: YuNet from the OpenCV model zoo, pinned by file name and sha256, found or
fetched like backbone weights.

Where it comes from: the file a user names (`--face-detector PATH`, or $AUTOML_FACE_DETECTOR: for machines without
internet), else the standard Hugging Face hub cache, where `ensure_model` downloads it once, up front, in the main
process of a command (`search`, `export-best`, `predict`, `cache`, `check --show-crops`, `automl weights`), or
stops with one message. Detection only reads (`model_path`), so caching images never waits on the network. A file
that is not the pinned one is refused, and a damaged cached copy is fetched again: every machine crops with the
same model, so a model sees the same pixels at train and test time.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from huggingface_hub import constants as hub_constants
from huggingface_hub import hf_hub_download, try_to_load_from_cache

from automl.errors import AutomlError

REPO_ID = "opencv/face_detection_yunet"
#: The dynamic-input-shape release: OpenCV 4 and 5 both load it (5's ONNX engine needs dynamic dimensions).
FILENAME = "face_detection_yunet_2026may.onnx"
SHA256 = "ebafce4e3c118d6554634be5c27ab333b4c047a9a8c3faf1d7cf93101c22f0f0"
ENV_VAR = "AUTOML_FACE_DETECTOR"
SOURCE = f"hf.co/{REPO_ID}"


def model_problem(path: Path) -> str | None:
    """Why `path` is not the pinned model (missing, empty, another file), or None."""
    try:
        stat = path.stat()
    except OSError as error:
        return f"cannot be read ({error.strerror})"
    return _content_problem(str(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=8)
def _content_problem(path: str, size: int, mtime_ns: int) -> str | None:
    """Hashed once per file version (size and time are part of the key): every detecting thread asks."""
    if size == 0:
        return "the file is empty"
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    if digest != SHA256:
        return f"its sha256 is {digest[:16]}..., not the pinned {FILENAME}'s {SHA256[:16]}..."
    return None


def given_model() -> Path | None:
    """The file named by --face-detector or $AUTOML_FACE_DETECTOR, if any."""
    value = os.environ.get(ENV_VAR, "").strip()
    return Path(value).expanduser() if value else None


def cached_model() -> Path | None:
    """The model in the local hub cache, without the network."""
    cached = try_to_load_from_cache(REPO_ID, FILENAME)
    return Path(cached) if isinstance(cached, str) else None


def use_model(path: Path) -> None:
    """Detect with the file `path` in this process and in the processes it starts (workers read the variable)."""
    os.environ[ENV_VAR] = str(Path(path).expanduser().absolute())


def model_path() -> Path:
    """The checked model file, without the network: the one the user named, else the cached one."""
    given = given_model()
    if given is not None:
        problem = model_problem(given)
        if problem is not None:
            raise AutomlError(_given_message(given, problem))
        return given
    cached = cached_model()
    problem = "not in the local cache" if cached is None else model_problem(cached)
    if problem is not None:
        raise AutomlError(missing_message(problem, stopped=False))
    assert cached is not None
    return cached


def ensure_model(announce: Callable[[str], None] | None = None) -> Path:
    """The checked model file, downloaded into the hub cache once where missing or damaged; else one AutomlError."""
    given = given_model()
    if given is not None:
        return model_path()
    cached = cached_model()
    problem = None if cached is None else model_problem(cached)
    if cached is not None and problem is None:
        return cached
    if hub_constants.HF_HUB_OFFLINE:
        raise AutomlError(missing_message(f"{problem or 'not in the local cache'}, and HF_HUB_OFFLINE=1"))
    if announce is not None:
        announce(f"downloading the face detector {FILENAME} from {SOURCE}")
    try:
        path = Path(hf_hub_download(REPO_ID, FILENAME, force_download=problem is not None))
    except Exception as error:  # no network, HTTP errors, a full disk: named in the one message
        raise AutomlError(missing_message(f"download from {SOURCE} failed: {_first_line(error)}")) from None
    problem = model_problem(path)
    if problem is not None:
        raise AutomlError(missing_message(f"downloaded {path} from {SOURCE}, but {problem}"))
    return path


def missing_message(reason: str, stopped: bool = True) -> str:
    """What is missing and the ways out; `stopped`: said before any work, so nothing was started."""
    headline = "the face detector is missing" + (", so nothing was started" if stopped else "")
    return (
        f"{headline}: YuNet ({FILENAME} from {SOURCE}) {reason}.\n"
        "Face crops 'face' and 'aligned' find faces with it, and so does learning the prior box of a crop without "
        "a face_crop_box. Three ways out:\n"
        f"  1. on a machine with internet run `automl weights --detector`, then copy its cache "
        f"{hub_constants.HF_HUB_CACHE} to the same place here (or point HF_HUB_CACHE at the copy);\n"
        f"  2. download {FILENAME} from https://huggingface.co/{REPO_ID} yourself and pass --face-detector PATH "
        f"(or set {ENV_VAR}=PATH);\n"
        "  3. search without it: --set face_crop=none, or center with a face_crop_box."
    )


def _given_message(path: Path, problem: str) -> str:
    return (
        f"face detector {path} (--face-detector or {ENV_VAR}): {problem}. Point it at {FILENAME} "
        f"(sha256 {SHA256}) from https://huggingface.co/{REPO_ID}, or unset {ENV_VAR} to use the hub cache"
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
