"""Reading image files: which files count as images, and decoding one into an RGB array."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from automl.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def is_image_file(path: Path) -> bool:
    """An image by its suffix, skipping macOS `._*` resource forks and other hidden files."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def decode_image(path: Path, short_side: int | None = None) -> np.ndarray:
    """Decode `path` into an RGB uint8 array, optionally resized so its shorter side is `short_side`.

    PIL rather than OpenCV: OpenCV silently returns a partly grey picture for a truncated JPEG, PIL raises.
    """
    try:
        with Image.open(path) as image:
            if short_side is not None:
                # JPEG can decode at 1/2, 1/4 or 1/8 scale directly: far cheaper than a full decode.
                scale = short_side / min(image.size)
                image.draft("RGB", (max(1, round(image.width * scale)), max(1, round(image.height * scale))))
            image = ImageOps.exif_transpose(image).convert("RGB")
            array = np.asarray(image)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as error:
        raise DataError(
            f"cannot read image {path}", [f"{path}: {error}; replace the file or remove it from the data set"]
        ) from None
    return array if short_side is None else resize_short_side(array, short_side)


def resize_short_side(array: np.ndarray, short_side: int) -> np.ndarray:
    """Resize keeping the aspect ratio so the shorter side is `short_side` pixels."""
    height, width = array.shape[:2]
    scale = short_side / min(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == (width, height):
        return np.ascontiguousarray(array)
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return cv2.resize(array, size, interpolation=interpolation)


def verify_images(paths: Sequence[str | Path], progress: Callable[[int], None] | None = None) -> None:
    """Decode every image fully, raising one DataError that lists every unreadable or truncated file."""

    def failure(path: str | Path) -> str | None:
        try:
            with Image.open(path) as image:
                image.load()
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as error:
            return f"{path}: {error}; replace the file or remove it from the data set"
        finally:
            if progress is not None:
                progress(1)
        return None

    with ThreadPoolExecutor() as pool:
        failures = [f for f in pool.map(failure, paths) if f is not None]
    if failures:
        raise DataError(f"{len(failures)} image(s) cannot be read", failures)
