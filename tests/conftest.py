"""Shared fixtures: tiny data sets written by hand, so a test reads in milliseconds."""

from __future__ import annotations

import os

# Before any library import: no hub look-ups (they retry for ~45 s offline), no albumentations update check.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

PHOTOS = ("mask1", "mask2", "mask3", "mask4", "mask5", "incorrect_mask", "normal")
#: Beside the checkout: a copy of the YuNet face detector and real face crops, for tests that need them (skipped
#: where absent). The product never reads this folder: users download the detector (automl/data/face_model.py).
SHARED = Path(__file__).resolve().parents[2] / "shared"
YUNET = SHARED / "models" / "face_detection_yunet_2026may.onnx"
REAL_CROPS = SHARED / "data" / "face-mask-crops"


def write_image(path: Path, seed: int = 0, size: tuple[int, int] = (12, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def write_competition(root: Path, people: list[tuple[str, str, str, str]], eval_images: int = 3) -> Path:
    """A competition layout with tiny images; `people` rows are (id, gender, age, path)."""
    lines = ["id,gender,race,age,path"]
    for n, (person_id, gender, age, folder) in enumerate(people):
        lines.append(f"{person_id},{gender},Asian,{age},{folder}")
        for k, stem in enumerate(PHOTOS):
            write_image(root / "train" / "images" / folder / f"{stem}.jpg", seed=n * 7 + k)
    (root / "train" / "train.csv").write_text("\n".join(lines) + "\n")
    info = ["ImageID,ans"]
    for k in range(eval_images):
        write_image(root / "eval" / "images" / f"e{k}.png", seed=1000 + k)
        info.append(f"e{k}.png,0")
    (root / "eval" / "info.csv").write_text("\n".join(info) + "\n")
    return root


def person(n: int, gender: str = "female", age: int = 25) -> tuple[str, str, str, str]:
    person_id = f"{n:06d}"
    return (person_id, gender, str(age), f"{person_id}_{gender}_Asian_{age}")


@pytest.fixture
def competition(tmp_path: Path) -> Path:
    people = [person(n, "female" if n % 3 else "male", [20, 45, 60][n % 3]) for n in range(6)]
    return write_competition(tmp_path / "data", people)


@pytest.fixture
def yunet(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Detect faces with the shared copy of YuNet, as `--face-detector` would; skip where it is absent."""
    from automl.data.face_model import ENV_VAR

    if not YUNET.is_file():
        pytest.skip(f"no copy of the face detector at {YUNET}")
    monkeypatch.setenv(ENV_VAR, str(YUNET))
    return YUNET
