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
    """The cached arrays of a fixed list of images under any face crop, loaded on first use.

    Only the set used last stays in memory: trials switch crops, and one set of a large data set at 224 px
    already takes gigabytes, while reading it back from the cache takes seconds.
    """

    def __init__(self, home: Path, size: int, paths: Sequence[str | Path]):
        self.home, self.size, self.paths = home, size, list(paths)
        self._last: tuple[str, list[np.ndarray]] | None = None

    def get(self, crop: FaceCrop, progress: Callable[[int], None] | None = None) -> list[np.ndarray]:
        if self._last is None or self._last[0] != crop.key():
            self._last = None  # free the old set before loading the new one
            arrays, _ = ImageCache(self.home, self.size, crop).load(self.paths, progress=progress)
            self._last = (crop.key(), arrays)
        return self._last[1]
