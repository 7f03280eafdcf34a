"""The decoded-image cache: every image decoded, face-cropped and resized once, into one file per image set that
every trial, worker and loader process maps read-only.

A set is a fixed list of images under one face crop at one size, in `<home>/cache/images/v2-short<size>/<key>.set`:
the images' pixels one after another, then an index (where each image starts, its shape), then a footer that
marks the file whole. The key hashes every image's identity (absolute path, size in bytes, modification time), the
size and the face crop, so a changed image or crop makes a new set. A set is decoded straight into a temporary file
on threads (decoding releases the GIL) and renamed into place once whole: nothing is written twice, several
processes may build the same set at once, and a reader never sees half of one. Mapped read-only, its pages sit
once in the operating system's page cache however many processes read them (a data set at 224 px takes
gigabytes), and switching the face crop maps another file instead of decoding the images again.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from automl.atomic import atomic_path
from automl.data.face_crop import FaceCrop, prepare_image
from automl.errors import DataError

CACHE_VERSION = 2
SUFFIX = ".set"
#: The last bytes of a whole set: this mark, then the number of images (little-endian uint64).
FOOTER_MARK = b"AUTOMLIS"
_FOOTER = len(FOOTER_MARK) + 8


def cache_root(home: Path, size: int) -> Path:
    """The folder of the image sets at `size` px under the studies home."""
    return home / "cache" / "images" / f"v{CACHE_VERSION}-short{size}"


def image_identity(image: Path) -> str:
    """What identifies an image file's content: its absolute path, size in bytes and modification time."""
    try:
        stat = image.stat()
    except OSError as error:
        raise DataError(f"cannot read image {image}", [f"{image}: {error.strerror}"]) from None
    return f"{image.absolute()}|{stat.st_size}|{stat.st_mtime_ns}"


class ImageSets:
    """The cached arrays of a fixed list of images, resized so their shorter side is `size`, under any face crop."""

    def __init__(self, home: Path, size: int, paths: Sequence[str | Path]):
        self.home, self.size, self.paths = home, size, list(paths)
        self._mapped: dict[str, list[np.ndarray]] = {}

    def get(self, crop: FaceCrop, progress: Callable[[int, int], None] | None = None) -> list[np.ndarray]:
        """The images as `crop` crops them: read-only views into the set's mapped file, decoded first if needed.
        The same list for the same crop, for as long as this object lives.

        `progress(done, total)` is called as images are decoded (once, with done == total, for a set already built).
        """
        if crop.key() not in self._mapped:
            self._mapped[crop.key()] = self._map(crop, progress)
        return self._mapped[crop.key()]

    def is_built(self, crop: FaceCrop) -> bool:
        return _open_set(self.set_path(crop)) is not None

    def set_path(self, crop: FaceCrop) -> Path:
        digest = hashlib.blake2b(f"{self.size}|{crop.key()}".encode(), digest_size=16)
        for path in self.paths:
            digest.update(f"\n{image_identity(Path(path))}".encode())
        return cache_root(self.home, self.size) / f"{digest.hexdigest()}{SUFFIX}"

    def _map(self, crop: FaceCrop, progress: Callable[[int, int], None] | None) -> list[np.ndarray]:
        path = self.set_path(crop)
        total = len(self.paths)
        mapped = _open_set(path)
        if mapped is None:
            _build_set(path, self.paths, self.size, crop, progress)
            mapped = _open_set(path)
            assert mapped is not None, f"{path} was just written whole"
        elif progress is not None:
            progress(total, total)
        return mapped


def _build_set(
    path: Path, images: Sequence[str | Path], size: int, crop: FaceCrop, progress: Callable[[int, int], None] | None
) -> None:
    """Decode every image into a temporary file beside `path`, in order, then rename it into place."""
    index = np.zeros((len(images), 4), dtype=np.int64)
    offset = 0
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            # In order, as they come: the images not yet written are at most the pool's backlog.
            for row, array in enumerate(pool.map(lambda image: prepare_image(Path(image), size, crop), images)):
                handle.write(np.ascontiguousarray(array, dtype=np.uint8).tobytes())
                index[row] = (offset, *array.shape)
                offset += array.size
                if progress is not None:
                    progress(row + 1, len(images))
        handle.write(index.tobytes())
        handle.write(FOOTER_MARK + np.uint64(len(images)).tobytes())


def _open_set(path: Path) -> list[np.ndarray] | None:
    """Views of every image of a set, or None when the set is absent or damaged (then it is built again)."""
    try:
        with open(path, "rb") as handle:
            length = handle.seek(0, os.SEEK_END)
            if length < _FOOTER:
                return None
            handle.seek(length - _FOOTER)
            footer = handle.read(_FOOTER)
            if footer[: len(FOOTER_MARK)] != FOOTER_MARK:
                return None
            count = int(np.frombuffer(footer[len(FOOTER_MARK) :], dtype=np.uint64)[0])
            pixels = length - _FOOTER - count * 4 * 8
            if pixels < 0:
                return None
            handle.seek(pixels)
            index = np.frombuffer(handle.read(count * 4 * 8), dtype=np.int64).reshape(count, 4)
    except (FileNotFoundError, OSError, ValueError):
        return None
    sizes = index[:, 1] * index[:, 2] * index[:, 3]
    if count and (index[0, 0] != 0 or not np.array_equal(index[1:, 0], np.cumsum(sizes)[:-1]) or sizes.sum() != pixels):
        return None
    if pixels == 0:
        return [np.zeros(tuple(shape), dtype=np.uint8) for shape in index[:, 1:].tolist()]
    flat = np.memmap(path, dtype=np.uint8, mode="r", shape=(pixels,))
    return [flat[o : o + h * w * c].reshape(h, w, c) for o, h, w, c in index.tolist()]
