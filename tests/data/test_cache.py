"""The decoded-image cache: built once, read after, safe with two processes at once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from automl.data.cache import ImageCache
from automl.errors import DataError
from tests.conftest import write_image


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    return [write_image(tmp_path / "img" / f"{k}.jpg", seed=k, size=(96, 128)) for k in range(12)]


def test_second_run_reads_not_rebuilds(tmp_path: Path, images: list[Path]) -> None:
    cache = ImageCache(tmp_path / "home", size=32)
    first, stats = cache.load(images)
    assert (stats.built, stats.reused) == (12, 0)
    assert first[0].shape == (43, 32, 3) and first[0].dtype == np.uint8  # shorter side 32, aspect kept
    entries = sorted(cache.root.rglob("*.npy"))
    stamps = [e.stat().st_mtime_ns for e in entries]

    again, stats = ImageCache(tmp_path / "home", size=32).load(images)
    assert (stats.built, stats.reused) == (0, 12)
    assert [e.stat().st_mtime_ns for e in entries] == stamps
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))


def test_changed_image_invalidates_only_its_entry(tmp_path: Path, images: list[Path]) -> None:
    cache = ImageCache(tmp_path / "home", size=32)
    before, _ = cache.load(images)
    write_image(images[3], seed=99, size=(96, 128))
    os.utime(images[3], ns=(1, 1))  # a different modification time, even on coarse clocks
    after, stats = cache.load(images)
    assert (stats.built, stats.reused) == (1, 11)
    assert not np.array_equal(before[3], after[3])


def test_size_is_part_of_the_key(tmp_path: Path, images: list[Path]) -> None:
    small, _ = ImageCache(tmp_path / "home", size=16).load(images[:1])
    large, stats = ImageCache(tmp_path / "home", size=48).load(images[:1])
    assert stats.built == 1 and small[0].shape[1] == 16 and large[0].shape[1] == 48


def test_damaged_entry_is_rebuilt(tmp_path: Path, images: list[Path]) -> None:
    cache = ImageCache(tmp_path / "home", size=32)
    good, _ = cache.load(images[:1])
    cache.entry_path(images[0]).write_bytes(b"\x93NUMPY garbage")
    again, stats = cache.load(images[:1])
    assert stats.built == 1 and np.array_equal(good[0], again[0])


def test_unreadable_image_names_the_file(tmp_path: Path, images: list[Path]) -> None:
    images[2].write_bytes(b"not an image")
    with pytest.raises(DataError, match="2.jpg"):
        ImageCache(tmp_path / "home", size=32).load(images)


def test_two_processes_build_one_cache(tmp_path: Path) -> None:
    images = [write_image(tmp_path / "img" / f"{k}.png", seed=k, size=(160, 200)) for k in range(150)]
    script = (
        "import sys; from pathlib import Path; from automl.data.cache import ImageCache;"
        "paths = sorted(Path(sys.argv[1]).glob('*.png'));"
        "arrays, stats = ImageCache(Path(sys.argv[2]), 24).load(paths, workers=2);"
        "print(stats.built, len(arrays))"
    )
    command = [sys.executable, "-c", script, str(tmp_path / "img"), str(tmp_path / "home")]
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=120)[0].split() for w in workers]
    assert all(w.returncode == 0 for w in workers)
    assert all(int(n) == 150 for _, n in outputs)
    assert sum(int(built) for built, _ in outputs) >= 150  # together they built everything, maybe some twice
    cache = ImageCache(tmp_path / "home", 24)
    assert not list(cache.root.rglob("*.tmp"))  # no temporary file left behind
    arrays, stats = cache.load(images)
    assert stats.built == 0 and all(min(a.shape[:2]) == 24 for a in arrays)
