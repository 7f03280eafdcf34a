"""Image sets: one memory-mapped file per face crop, mapped by every worker process, held once in memory."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pytest

from automl.data.cache import ImageCache, ImageSets
from automl.data.face_crop import FaceCrop
from tests.conftest import write_image

SIZE = 256  # 40 images of 256 x 341 px: a 10 MB set, large enough to measure resident memory
WORKERS = 3


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    return [write_image(tmp_path / "img" / f"{k}.png", seed=k, size=(96, 128)) for k in range(40)]


def test_a_set_is_written_once_and_then_mapped(tmp_path: Path, images: list[Path]) -> None:
    home = tmp_path / "home"
    sets = ImageSets(home, SIZE, images)
    first = sets.get(FaceCrop())
    data = sets.set_path(FaceCrop())
    stamp = data.stat().st_mtime_ns
    expected, _ = ImageCache(home, SIZE).load(images)
    assert all(np.array_equal(a, b) for a, b in zip(first, expected, strict=True))
    assert isinstance(first[0].base, np.memmap) and not first[0].flags.writeable

    again = ImageSets(home, SIZE, images).get(FaceCrop())
    assert data.stat().st_mtime_ns == stamp and all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    # Another crop is another file; the first stays mapped and valid.
    center = ImageSets(home, SIZE, images).get(FaceCrop("center", 0.1, (0.2, 0.1, 0.8, 0.9)))
    assert sets.set_path(FaceCrop("center", 0.1, (0.2, 0.1, 0.8, 0.9))) != data
    assert center[0].shape != first[0].shape


def test_a_damaged_set_is_built_again(tmp_path: Path, images: list[Path]) -> None:
    sets = ImageSets(tmp_path / "home", SIZE, images)
    whole = [a.copy() for a in sets.get(FaceCrop())]
    data = sets.set_path(FaceCrop())
    with open(data, "r+b") as handle:
        handle.truncate(data.stat().st_size // 2)  # as a crash outside our write-then-rename might leave it
    rebuilt = ImageSets(tmp_path / "home", SIZE, images).get(FaceCrop())
    assert all(np.array_equal(a, b) for a, b in zip(whole, rebuilt, strict=True))


def _memory_kb() -> dict[str, int]:
    """This process's resident memory by kind (Linux): Anonymous (its own heap), Rss and Pss of mapped files."""
    fields = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":")
        fields[name] = int(value.split()[0])
    return fields


def _worker(home: Path, paths: list[Path], barrier, results) -> None:
    before = _memory_kb()
    arrays = ImageSets(home, SIZE, paths).get(FaceCrop())
    total = sum(int(a.sum(dtype=np.uint64)) for a in arrays)  # reads every byte of every image
    barrier.wait()  # every worker holds its mapping now: the pages are shared by all of them
    after = _memory_kb()
    results.put((total, {key: after[key] - before[key] for key in ("Anonymous", "Rss", "Pss_File")}))
    barrier.wait()


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="needs Linux's /proc/self/smaps_rollup")
def test_worker_processes_share_one_copy_of_the_images(tmp_path: Path, images: list[Path]) -> None:
    home = tmp_path / "home"
    ImageSets(home, SIZE, images).get(FaceCrop())  # the parent builds the set, as `automl search` does
    set_kb = ImageSets(home, SIZE, images).set_path(FaceCrop()).stat().st_size / 1024
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
