"""The decoded-image cache: every image decoded and resized once, then reused by every trial and worker.

An entry is one `.npy` file keyed by the image file's identity (absolute path, size in bytes, modification
time), the target size and the face crop (mode, margin, prior box), so a changed image or crop gets a new entry;
the entry holds the cropped-then-resized array. Entries are written to a temporary file and
renamed into place: several processes can fill the same cache at once and a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from automl.atomic import atomic_path
from automl.data.face_crop import FaceCrop, prepare_image
from automl.errors import DataError

CACHE_VERSION = 1


@dataclass
class CacheStats:
    reused: int = 0
    built: int = 0


class ImageCache:
    """Images face-cropped by `crop` and resized so their shorter side is `size`, under `home/cache/images/`."""

    def __init__(self, home: Path, size: int, crop: FaceCrop | None = None):
        self.size = size
        self.crop = crop or FaceCrop()
        self.root = home / "cache" / "images" / f"v{CACHE_VERSION}-short{size}"

    def entry_path(self, image: Path) -> Path:
        try:
            stat = image.stat()
        except OSError as error:
            raise DataError(f"cannot read image {image}", [f"{image}: {error.strerror}"]) from None
        identity = f"{image.absolute()}|{stat.st_size}|{stat.st_mtime_ns}|{self.size}"
        if self.crop.mode != "none":  # whole-photo entries keep the key they had before face crops existed
            identity += f"|{self.crop.key()}"
        key = hashlib.blake2b(identity.encode(), digest_size=16).hexdigest()
        return self.root / key[:2] / f"{key}.npy"

    def get(self, image: Path) -> tuple[np.ndarray, bool]:
        """The cached array of `image`, decoding it first if needed; the flag says whether it was built."""
        entry = self.entry_path(image)
        try:
            return np.load(entry, allow_pickle=False), False
        except (FileNotFoundError, ValueError, EOFError, OSError):
            pass  # absent, or damaged by a crash outside our write-then-rename: build it again
        array = prepare_image(image, self.size, self.crop)
        with atomic_path(entry) as temporary, open(temporary, "wb") as handle:
            np.save(handle, array, allow_pickle=False)
        return array, True

    def load(
        self,
        images: Sequence[str | Path],
        workers: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> tuple[list[np.ndarray], CacheStats]:
        """Arrays for all `images`, in order, building the missing entries on `workers` threads.

        `progress(n)` is called as each image is done. Decoding (PIL, OpenCV) releases the GIL, so threads
        use every core.
        """

        def one(image: str | Path) -> tuple[np.ndarray, bool]:
            result = self.get(Path(image))
            if progress is not None:
                progress(1)
            return result

        with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
            results = list(pool.map(one, images))
        built = sum(was_built for _, was_built in results)
        return [array for array, _ in results], CacheStats(reused=len(results) - built, built=built)


class ImageSets:
    """The cached arrays of a fixed list of images under any face crop, one memory-mapped file per crop.

    A set is the images of the list, cropped and resized, one after another in one file (`<key>.u8`) with an
    index of where each starts and its shape (`<key>.index.npy`, written last: its presence marks the set whole).
    The key is made of the images' cache keys, so a changed image or crop gets a new set. Every worker and
    loader process maps the file read-only, so the operating system's page cache holds one copy for them all
    (a data set at 224 px takes gigabytes), and switching the face crop maps another file instead of reading
    thousands of entries again.
    """

    def __init__(self, home: Path, size: int, paths: Sequence[str | Path]):
        self.home, self.size, self.paths = home, size, list(paths)
        self._mapped: dict[str, list[np.ndarray]] = {}

    def get(self, crop: FaceCrop, progress: Callable[[int, int], None] | None = None) -> list[np.ndarray]:
        """The images as `crop` crops them: read-only views into the set's mapped file, built first if needed.

        `progress(done, total)` is called as images are ready (once, with done == total, for a set already built).
        """
        if crop.key() not in self._mapped:
            self._mapped[crop.key()] = self._map(crop, progress)
        return self._mapped[crop.key()]

    def set_path(self, crop: FaceCrop) -> Path:
        """The set's data file (its index sits beside it)."""
        cache = ImageCache(self.home, self.size, crop)
        digest = hashlib.blake2b(digest_size=16)
        for path in self.paths:
            digest.update(cache.entry_path(Path(path)).stem.encode())
        return cache.root / "sets" / f"{digest.hexdigest()}.u8"

    def _map(self, crop: FaceCrop, progress: Callable[[int, int], None] | None) -> list[np.ndarray]:
        data = self.set_path(crop)
        index_path = data.with_suffix(".index.npy")
        total, done = len(self.paths), 0
        mapped = _open_set(data, index_path)
        if mapped is not None:
            if progress is not None:
                progress(total, total)
            return mapped

        def advance(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(done, total)

        arrays, _ = ImageCache(self.home, self.size, crop).load(self.paths, progress=advance)
        index, offset = np.zeros((len(arrays), 4), dtype=np.int64), 0
        with atomic_path(data) as temporary, open(temporary, "wb") as handle:
            for row, array in enumerate(arrays):
                handle.write(np.ascontiguousarray(array).tobytes())
                index[row] = (offset, *array.shape)
                offset += array.size
        with atomic_path(index_path) as temporary, open(temporary, "wb") as handle:
            np.save(handle, index, allow_pickle=False)
        del arrays  # the heap copies: from here on, the images are read from the mapped file
        mapped = _open_set(data, index_path)
        assert mapped is not None
        return mapped


def _open_set(data: Path, index_path: Path) -> list[np.ndarray] | None:
    """Views of every image of a set, or None when the set is absent or damaged (then it is built again)."""
    try:
        index = np.load(index_path, allow_pickle=False)
        size = data.stat().st_size
    except (FileNotFoundError, ValueError, EOFError, OSError):
        return None
    if index.ndim != 2 or index.shape[1] != 4:
        return None
    expected = int((index[:, 1] * index[:, 2] * index[:, 3]).sum())
    if size != expected:
        return None
    if expected == 0:
        return []
    flat = np.memmap(data, dtype=np.uint8, mode="r")
    return [flat[o : o + h * w * c].reshape(h, w, c) for o, h, w, c in index.tolist()]
