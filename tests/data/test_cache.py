"""The image cache: one file per image set, decoded once, mapped after, shared by processes, safe to build twice."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from automl.data.cache import ImageSets, cache_root
from automl.data.face_crop import FaceCrop, prepare_image
from automl.errors import DataError
from tests.conftest import write_image

CENTER = FaceCrop("center", 0.1, (0.2, 0.1, 0.8, 0.9))


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    return [write_image(tmp_path / "img" / f"{k}.jpg", seed=k, size=(96, 128)) for k in range(12)]


def cached_files(home: Path) -> list[Path]:
    return sorted(p for p in (home / "cache").rglob("*") if p.is_file())


def test_a_set_is_decoded_once_into_one_file_then_mapped(tmp_path: Path, images: list[Path]) -> None:
    home = tmp_path / "home"
    arrays = ImageSets(home, 32, images).get(FaceCrop())
    assert arrays[0].shape == (43, 32, 3) and arrays[0].dtype == np.uint8  # shorter side 32, aspect kept
    assert all(np.array_equal(a, prepare_image(p, 32, FaceCrop())) for a, p in zip(arrays, images, strict=True))
    assert isinstance(arrays[0].base, np.memmap) and not arrays[0].flags.writeable
    files = cached_files(home)
    assert files == [ImageSets(home, 32, images).set_path(FaceCrop())]  # one file per set, none per image
    stamp = files[0].stat().st_mtime_ns

    again = ImageSets(home, 32, images).get(FaceCrop())
    assert files[0].stat().st_mtime_ns == stamp
    assert all(np.array_equal(a, b) for a, b in zip(arrays, again, strict=True))
    # Another crop is another file; the first stays mapped and valid.
    center = ImageSets(home, 32, images).get(CENTER)
    assert len(cached_files(home)) == 2 and center[0].shape != arrays[0].shape
    assert np.array_equal(arrays[3], prepare_image(images[3], 32, FaceCrop()))


def test_same_list_for_the_same_crop(tmp_path: Path, images: list[Path]) -> None:
    sets = ImageSets(tmp_path / "home", 32, images)
    assert sets.get(FaceCrop()) is sets.get(FaceCrop("none", 0.7))  # `none` ignores the margin


def test_a_changed_image_or_size_is_another_set(tmp_path: Path, images: list[Path]) -> None:
    home = tmp_path / "home"
    before = ImageSets(home, 32, images).get(FaceCrop())
    write_image(images[3], seed=99, size=(96, 128))
    os.utime(images[3], ns=(1, 1))  # a different modification time, even on coarse clocks
    after = ImageSets(home, 32, images).get(FaceCrop())
    assert not np.array_equal(before[3], after[3]) and np.array_equal(before[4], after[4])
    larger = ImageSets(home, 48, images[:1]).get(FaceCrop())
    assert larger[0].shape[1] == 48 and cache_root(home, 48) != cache_root(home, 32)


def test_a_damaged_set_is_built_again(tmp_path: Path, images: list[Path]) -> None:
    sets = ImageSets(tmp_path / "home", 32, images)
    whole = [a.copy() for a in sets.get(FaceCrop())]
    data = sets.set_path(FaceCrop())
    with open(data, "r+b") as handle:
        handle.truncate(data.stat().st_size // 2)  # as a crash outside our write-then-rename might leave it
    rebuilt = ImageSets(tmp_path / "home", 32, images).get(FaceCrop())
    assert all(np.array_equal(a, b) for a, b in zip(whole, rebuilt, strict=True))


def test_an_unreadable_image_is_named_and_nothing_is_left_behind(tmp_path: Path, images: list[Path]) -> None:
    images[2].write_bytes(b"not an image")
    with pytest.raises(DataError, match="2.jpg"):
        ImageSets(tmp_path / "home", 32, images).get(FaceCrop())
    assert cached_files(tmp_path / "home") == []


def test_two_processes_build_one_set(tmp_path: Path) -> None:
    for k in range(150):
        write_image(tmp_path / "img" / f"{k:03d}.png", seed=k, size=(160, 200))
    script = (
        "import sys; from pathlib import Path; from automl.data.cache import ImageSets;"
        "from automl.data.face_crop import FaceCrop;"
        "paths = sorted(Path(sys.argv[1]).glob('*.png'));"
        "print(len(ImageSets(Path(sys.argv[2]), 24, paths).get(FaceCrop())))"
    )
    command = [sys.executable, "-c", script, str(tmp_path / "img"), str(tmp_path / "home")]
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=120)[0].strip() for w in workers]
    assert all(w.returncode == 0 for w in workers) and outputs == ["150", "150"]
    assert len(cached_files(tmp_path / "home")) == 1  # no temporary file left behind
    arrays = ImageSets(tmp_path / "home", 24, sorted((tmp_path / "img").glob("*.png"))).get(FaceCrop())
    assert all(min(a.shape[:2]) == 24 for a in arrays)


def _memory_kb() -> dict[str, int]:
    """This process's resident memory by kind (Linux): Anonymous (its own heap), Rss and Pss of mapped files."""
    fields = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":")
        fields[name] = int(value.split()[0])
    return fields


SHARED_SIZE = 256  # 40 images of 256 x 341 px: a 10 MB set, large enough to measure resident memory
WORKERS = 3


def _worker(home: Path, paths: list[Path], barrier, results) -> None:
    before = _memory_kb()
    arrays = ImageSets(home, SHARED_SIZE, paths).get(FaceCrop())
    total = sum(int(a.sum(dtype=np.uint64)) for a in arrays)  # reads every byte of every image
    barrier.wait()  # every worker holds its mapping now: the pages are shared by all of them
    after = _memory_kb()
    results.put((total, {key: after[key] - before[key] for key in ("Anonymous", "Rss", "Pss_File")}))
    barrier.wait()


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="needs Linux's /proc/self/smaps_rollup")
def test_worker_processes_share_one_copy_of_the_images(tmp_path: Path) -> None:
    home = tmp_path / "home"
    images = [write_image(tmp_path / "img" / f"{k}.png", seed=k, size=(96, 128)) for k in range(40)]
    ImageSets(home, SHARED_SIZE, images).get(FaceCrop())  # the parent builds the set, as `automl search` does
    set_kb = ImageSets(home, SHARED_SIZE, images).set_path(FaceCrop()).stat().st_size / 1024
    context = multiprocessing.get_context("spawn")  # how search workers start
    barrier, results = context.Barrier(WORKERS), context.Queue()
    processes = [context.Process(target=_worker, args=(home, images, barrier, results)) for _ in range(WORKERS)]
    for process in processes:
        process.start()
    measured = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    assert len({total for total, _ in measured}) == 1  # every worker read the same images
    for _, grown in measured:
        assert grown["Rss"] > 0.9 * set_kb  # each worker has every image resident ...
        assert grown["Anonymous"] < 0.2 * set_kb  # ... but none holds a private copy
    # Proportional shares of the mapped pages add up to one copy, not one per worker.
    assert sum(grown["Pss_File"] for _, grown in measured) < 1.5 * set_kb, measured
