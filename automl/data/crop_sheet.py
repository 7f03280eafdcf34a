"""A contact sheet of face crops: one PNG that shows at a glance whether the crop works on a data set.

Each tile is one training photo with the detected face (green, with YuNet's five landmarks), the prior box (grey)
and the final crop (blue where it follows the face, turned with it for `aligned`; orange where it fell back to the
prior).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from automl.atomic import atomic_path
from automl.data.face_crop import CropResult, FaceCrop, locate, prior_sample
from automl.data.images import decode_image

TILE = 192  # tile height in pixels
DETECTED, PRIOR, CROP, FALLBACK = (40, 200, 60), (150, 150, 150), (40, 110, 240), (245, 140, 20)


@dataclass
class SheetSummary:
    images: int
    detected: int  # photos where the face was found and used
    columns: int

    @property
    def detection_rate(self) -> float:
        return self.detected / self.images if self.images else 0.0


def _scaled_box(box: tuple[float, float, float, float], scale: float) -> tuple[tuple[int, int], tuple[int, int]]:
    return (round(box[0] * scale), round(box[1] * scale)), (round(box[2] * scale) - 1, round(box[3] * scale) - 1)


def _tile(image: np.ndarray, crop: FaceCrop, result: CropResult) -> np.ndarray:
    height, width = image.shape[:2]
    scale = TILE / height
    tile = np.ascontiguousarray(cv2.resize(image, (max(1, round(width * scale)), TILE), interpolation=cv2.INTER_AREA))
    if crop.mode != "none":
        prior = (crop.prior[0] * width, crop.prior[1] * height, crop.prior[2] * width, crop.prior[3] * height)
        cv2.rectangle(tile, *_scaled_box(prior, scale), PRIOR, 1)
    if result.face is not None:
        cv2.rectangle(tile, *_scaled_box(result.face.box, scale), DETECTED, 2)
        for x, y in result.face.landmarks:
            cv2.circle(tile, (round(x * scale), round(y * scale)), 2, DETECTED, -1)
    if result.corners is not None:
        corners = np.round(np.asarray(result.corners) * scale).astype(np.int32)
        cv2.polylines(tile, [corners], True, CROP, 2)
    else:
        cv2.rectangle(tile, *_scaled_box(result.box, scale), FALLBACK if result.fell_back else CROP, 2)
    if result.fell_back:
        cv2.putText(tile, "fallback", (4, TILE - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45, FALLBACK, 1, cv2.LINE_AA)
    return tile


def write_crop_sheet(
    paths: Sequence[str | Path], count: int, crop: FaceCrop, out: Path, progress: Callable[[int], None] | None = None
) -> SheetSummary:
    """Draw the crops of `count` photos spread evenly over `paths` into the PNG `out` (written atomically)."""
    chosen = [paths[i] for i in prior_sample(len(paths), count)]
    tiles, detected = [], 0
    for path in chosen:
        image = decode_image(Path(path))
        result = locate(image, crop)
        detected += result.face is not None
        tiles.append(_tile(image, crop, result))
        if progress is not None:
            progress(1)
    columns = max(1, math.ceil(math.sqrt(len(tiles) * 1.5)))
    width = max(t.shape[1] for t in tiles) if tiles else TILE
    rows = max(1, math.ceil(len(tiles) / columns))
    sheet = np.full((rows * (TILE + 4) + 4, columns * (width + 4) + 4, 3), 255, dtype=np.uint8)
    for k, tile in enumerate(tiles):
        top, left = 4 + (k // columns) * (TILE + 4), 4 + (k % columns) * (width + 4)
        sheet[top : top + TILE, left : left + tile.shape[1]] = tile
    with atomic_path(out) as temporary:
        Image.fromarray(sheet).save(temporary, format="PNG")
    return SheetSummary(len(tiles), detected, columns)
