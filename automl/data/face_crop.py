"""Face crop: the one preprocessing step between a decoded photo and the resized array every model sees.

Modes:
- `none`: the whole photo.
- `center`: a fixed prior box, where faces sit in this kind of photo: set by the user, or learned from the
  training images' detections (the median detected box, as shares of the image).
- `face`: the box of the face YuNet finds (automl/data/face_detector.py; its model file: face_model.py).
- `aligned`: the face YuNet finds, turned so its eyes are level and scaled by the distance between them (from its
  landmarks), so every face sits the same way in the crop.
- `haar`: the box of OpenCV's Haar cascade (what `face` was before YuNet; only where OpenCV still ships it).
A face that is missing, scores below `threshold`, is tiny next to the prior or far from it falls back to the prior
box; `pick` chooses among several faces.

Every box is widened by `margin` (a share of its width and height on each side); a straight box is clamped to the
photo, an aligned one repeats the photo's edge beyond it. `prepare_image` is the only implementation: the image
cache (training, export) and `automl predict` call it, so a model sees the same crop at train and test time.
Detection is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from automl.data.face_detector import Face, Pixels, detect_faces, haar_faces
from automl.data.face_model import FILENAME
from automl.data.images import decode_image, resize_short_side
from automl.errors import AutomlError
from automl.registry import Registry

MAX_MARGIN = 1.0
WHOLE_IMAGE = (0.0, 0.0, 1.0, 1.0)
#: The lowest YuNet score that counts as a face. Measured with benchmarks/face_crop.py's data (pick central): on
#: the real crops in a photo-like frame, where the face's place is known, the share of crops that followed the right
#: face rose as the threshold fell (0.6: 0.81, 0.3: 0.89, 0.1: 0.92, 0.05: 0.93), and the drawn demo faces score
#: low (found at 0.6: 0.70, at 0.1: 0.97). Below 0.1 the gain is small while the faint candidates double.
DEFAULT_THRESHOLD = 0.1
#: Of several faces, the one nearest the prior's centre: on the same crops `largest` followed the right face a little
#: less often at 0.1 (0.91 against 0.92), and far less at 0.05 (0.86 against 0.93), where faint large boxes appear.
DEFAULT_PICK = "central"
#: Names the detector in the image cache's key: another model gives other crops.
DETECTOR = FILENAME.removeprefix("face_detection_").removesuffix(".onnx")
#: A detection whose side is below this share of the prior's side is tiny: an eye, a mask pattern, or (in a
#: tight crop) the upper half of a masked face, whose crop would cut the mask off.
MIN_FACE_SHARE = 0.6
#: A detection whose centre is further from the prior's centre than this share of the prior's size is far.
MAX_OFFSET = 0.5
#: A prior covering at least this share of the photo means the photos are already face crops: `haar` then keeps
#: the prior rather than cropping to the cascade's box, which on a tight crop of a masked face is often the face's
#: upper half (measured on the real crops: macro F1 0.729 cropping to detections vs 0.743 uncropped).
TIGHT_PRIOR_SHARE = 0.6
#: The aligned crop's face box, in eye distances: YuNet's own boxes are a median 2.37 eye distances wide and
#: 2.9-3.0 tall, with the eyes' midpoint centred across and 1.06-1.17 below the top (1,000 faces of the demo data
#: and the real crops). The margin widens it like a box.
ALIGNED_WIDTH, ALIGNED_HEIGHT, EYES_BELOW_TOP = 2.4, 3.0, 1.1
#: The prior is learned from at most this many training images, evenly spread over the table.
PRIOR_SAMPLE = 200
#: ... from the faces scoring at least this: a median needs no faint faces, and at the low crop threshold YuNet
#: finds specks of a few pixels in noise photos.
PRIOR_THRESHOLD = 0.5
#: ... and only when at least this share of them has a face; else the whole image is the prior.
MIN_PRIOR_SHARE = 0.1
#: Modes that run YuNet on every photo.
DETECTING = ("face", "aligned")
Box = tuple[float, float, float, float]
Point = tuple[float, float]


@dataclass(frozen=True)
class FaceCrop:
    """How to crop: `box` is the prior (x0, y0, x1, y1) as shares of the image (every mode but `none` needs it);
    `threshold` (YuNet's score) and `pick` (which face) choose the face of `face` and `aligned`."""

    mode: str = "none"
    margin: float = 0.2
    box: Box | None = None
    threshold: float = DEFAULT_THRESHOLD
    pick: str = DEFAULT_PICK

    def __post_init__(self) -> None:
        FACE_CROPS.get(self.mode)
        FACE_PICKS.get(self.pick)
        if not 0 <= self.margin <= MAX_MARGIN:
            raise AutomlError(
                f"face crop margin {self.margin:g} is out of range: give a share of the box within [0, {MAX_MARGIN:g}]"
            )
        if not 0 < self.threshold <= 1:
            raise AutomlError(f"face crop threshold {self.threshold:g} is out of range: give a score within (0, 1]")
        if self.box is not None:
            check_box(self.box)

    @property
    def prior(self) -> Box:
        return self.box if self.box is not None else WHOLE_IMAGE

    @property
    def needs_detector(self) -> bool:
        """Whether cropping runs YuNet: to find each face, or to learn the prior box first."""
        return self.mode in DETECTING or (self.mode != "none" and self.box is None)

    def key(self) -> str:
        """What identifies the crop's output (the image cache's key): each mode keys only what it reads."""
        if self.mode == "none":
            return "none"
        box = f"-m{self.margin:.4f}-b" + ",".join(f"{v:.4f}" for v in self.prior)
        if self.mode in DETECTING:
            return f"{self.mode}-{DETECTOR}-t{self.threshold:.4f}-{self.pick}{box}"
        return f"{self.mode}-{self.pick}{box}" if self.mode == "haar" else f"{self.mode}{box}"


def check_box(box: Sequence[float]) -> None:
    if len(box) != 4 or not all(0 <= v <= 1 for v in box) or not (box[0] < box[2] and box[1] < box[3]):
        raise AutomlError(
            f"face crop box {list(box)} is not four shares of the image x0, y0, x1, y1 within [0, 1] "
            "with x0 < x1 and y0 < y1"
        )


@dataclass(frozen=True)
class CropResult:
    """Where one photo was cropped: `box` in pixels (x0, y0, x1, y1); `face` is the detection it follows; an
    aligned crop is the turned rectangle `corners` (top-left, top-right, bottom-right, bottom-left; `box` bounds it)."""

    box: Pixels
    face: Face | None = None
    fell_back: bool = False
    corners: tuple[Point, Point, Point, Point] | None = None


def _pixels(box: Box, width: int, height: int) -> tuple[float, float, float, float]:
    return box[0] * width, box[1] * height, box[2] * width, box[3] * height


#: Which of several faces a crop takes: `(faces, the prior in pixels) -> face`.
FACE_PICKS: Registry[Callable[[Sequence[Face], tuple[float, float, float, float]], Face]] = Registry("face_crop_pick")


def _offset(face: Face, prior: tuple[float, float, float, float]) -> float:
    """How far the face's centre is from the prior's, in shares of the prior's width and height."""
    px0, py0, px1, py1 = prior
    dx = ((face.box[0] + face.box[2]) - (px0 + px1)) / 2 / (px1 - px0)
    dy = ((face.box[1] + face.box[3]) - (py0 + py1)) / 2 / (py1 - py0)
    return float(np.hypot(dx, dy))


@FACE_PICKS.register("central")
def _most_central(faces: Sequence[Face], prior: tuple[float, float, float, float]) -> Face:
    return min(faces, key=lambda f: (_offset(f, prior), -f.area, f.box))


@FACE_PICKS.register("largest")
def _largest(faces: Sequence[Face], prior: tuple[float, float, float, float]) -> Face:
    return min(faces, key=lambda f: (-f.area, _offset(f, prior), f.box))


def choose_face(faces: Sequence[Face], prior: Box, width: int, height: int, pick: str = DEFAULT_PICK) -> Face | None:
    """The face `pick` chooses among those not tiny next to the prior; None if there is none or it is far."""
    pixels = _pixels(prior, width, height)
    side = ((pixels[2] - pixels[0]) * (pixels[3] - pixels[1])) ** 0.5
    candidates = [f for f in faces if f.area**0.5 >= MIN_FACE_SHARE * side]
    if not candidates:
        return None
    best = FACE_PICKS.create(pick, candidates, pixels)
    return best if _offset(best, pixels) <= MAX_OFFSET else None


def is_tight(prior: Box) -> bool:
    """Whether a prior says the photos are already face crops (see TIGHT_PRIOR_SHARE)."""
    return (prior[2] - prior[0]) * (prior[3] - prior[1]) >= TIGHT_PRIOR_SHARE


def find_face(image: np.ndarray, crop: FaceCrop) -> Face | None:
    """The face YuNet finds for `crop` (scaled by its prior), chosen by its pick; None: fall back to the prior."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = _pixels(crop.prior, width, height)
    faces = detect_faces(image, max(x1 - x0, y1 - y0), crop.threshold)
    return choose_face(faces, crop.prior, width, height, crop.pick)


#: Face crop mode -> `(RGB photo, crop) -> CropResult`: where to cut.
FACE_CROPS: Registry[Callable[[np.ndarray, FaceCrop], CropResult]] = Registry("face_crop")


def locate(image: np.ndarray, crop: FaceCrop) -> CropResult:
    """Where `crop` cuts an RGB photo: the chosen face or the prior, widened by the margin."""
    return FACE_CROPS.create(crop.mode, image, crop)


@FACE_CROPS.register("none")
def _whole_image(image: np.ndarray, crop: FaceCrop) -> CropResult:
    height, width = image.shape[:2]
    return CropResult((0, 0, width, height))


@FACE_CROPS.register("center")
def _prior_box(image: np.ndarray, crop: FaceCrop) -> CropResult:
    return _widened(image, crop, None)


@FACE_CROPS.register("face")
def _face_box(image: np.ndarray, crop: FaceCrop) -> CropResult:
    face = find_face(image, crop)
    return _widened(image, crop, face, fell_back=face is None)


@FACE_CROPS.register("aligned")
def _aligned_face(image: np.ndarray, crop: FaceCrop) -> CropResult:
    face = find_face(image, crop)
    corners = None if face is None else aligned_corners(face, crop.margin)
    if face is None or corners is None:
        return _widened(image, crop, None, fell_back=True)
    height, width = image.shape[:2]
    xs, ys = [x for x, _ in corners], [y for _, y in corners]
    box = (max(0, math.floor(min(xs))), max(0, math.floor(min(ys))), min(width, math.ceil(max(xs))),
           min(height, math.ceil(max(ys))))  # fmt: skip
    return CropResult(box, face, False, corners)


@FACE_CROPS.register("haar")
def _haar_box(image: np.ndarray, crop: FaceCrop) -> CropResult:
    height, width = image.shape[:2]
    face = None if is_tight(crop.prior) else choose_face(haar_faces(image), crop.prior, width, height, crop.pick)
    return _widened(image, crop, face, fell_back=face is None)


def aligned_corners(face: Face, margin: float) -> tuple[Point, Point, Point, Point] | None:
    """The aligned crop of `face`: a rectangle along its eye line, sized by its eye distance and widened by
    `margin`; None when the landmarks give no eye line."""
    if len(face.landmarks) < 2:
        return None
    (rx, ry), (lx, ly) = face.landmarks[:2]  # the person's right eye is on the photo's left
    distance = math.hypot(lx - rx, ly - ry)
    if distance < 1:
        return None
    across = np.array([lx - rx, ly - ry]) / distance  # along the eye line, left to right in the photo
    down = np.array([-across[1], across[0]])  # perpendicular, towards the chin
    width = ALIGNED_WIDTH * distance * (1 + 2 * margin)
    height = ALIGNED_HEIGHT * distance * (1 + 2 * margin)
    top = np.array([(rx + lx) / 2, (ry + ly) / 2]) - down * distance * (EYES_BELOW_TOP + margin * ALIGNED_HEIGHT)
    top_left, top_right = top - across * width / 2, top + across * width / 2
    points = (top_left, top_right, top_right + down * height, top_left + down * height)
    return tuple((float(x), float(y)) for x, y in points)  # type: ignore[return-value]


def _widened(image: np.ndarray, crop: FaceCrop, face: Face | None, fell_back: bool = False) -> CropResult:
    """The face's box, else the prior, widened by the margin and clamped to the photo."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = face.box if face is not None else _pixels(crop.prior, width, height)
    dx, dy = (x1 - x0) * crop.margin, (y1 - y0) * crop.margin
    left, top = max(0, round(x0 - dx)), max(0, round(y0 - dy))
    right, bottom = min(width, round(x1 + dx)), min(height, round(y1 + dy))
    right, bottom = max(right, min(width, left + 1)), max(bottom, min(height, top + 1))
    return CropResult((left, top, right, bottom), face, fell_back)


def crop_image(image: np.ndarray, crop: FaceCrop) -> tuple[np.ndarray, CropResult]:
    """The cropped pixels (an aligned crop resampled at the photo's own scale) and where they came from."""
    result = locate(image, crop)
    if result.corners is None:
        x0, y0, x1, y1 = result.box
        return image[y0:y1, x0:x1], result
    top_left, top_right, _, bottom_left = result.corners
    size = (max(1, round(math.dist(top_left, top_right))), max(1, round(math.dist(top_left, bottom_left))))
    source = np.float32([top_left, top_right, bottom_left])
    target = np.float32([(0, 0), (size[0], 0), (0, size[1])])
    warped = cv2.warpAffine(
        image, cv2.getAffineTransform(source, target), size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return warped, result


def prepare_image(path: Path, size: int, crop: FaceCrop) -> np.ndarray:
    """Decode, crop and resize (shorter side `size`): what the cache stores and `predict` computes."""
    if crop.mode == "none":
        return decode_image(path, size)  # JPEG draft decoding: only the whole photo is kept
    cropped, _ = crop_image(decode_image(path), crop)
    return resize_short_side(cropped, size)


@dataclass(frozen=True)
class LearnedPrior:
    box: Box
    faces: int  # images of the sample with a face
    sampled: int

    @property
    def learned(self) -> bool:
        return self.box != WHOLE_IMAGE


def prior_sample(count: int, limit: int = PRIOR_SAMPLE) -> list[int]:
    """Up to `limit` row indexes spread evenly over `count` rows: several people, the same on every machine."""
    if count <= limit:
        return list(range(count))
    return sorted({round(k * (count - 1) / (limit - 1)) for k in range(limit)})


def learn_prior(paths: Sequence[str | Path], progress: Callable[[int], None] | None = None) -> LearnedPrior:
    """The median face box (as shares of the image) over a sample of `paths`: give training images only.

    Each sampled photo's best-scoring YuNet face counts, if it scores PRIOR_THRESHOLD (looked for at the scale of a
    face filling the photo); with too few faces the prior is the whole image.
    """
    boxes = []
    sample = prior_sample(len(paths))
    for index in sample:
        image = decode_image(Path(paths[index]))
        height, width = image.shape[:2]
        faces = detect_faces(image, max(height, width), PRIOR_THRESHOLD)
        if faces:
            x0, y0, x1, y1 = faces[0].box
            boxes.append((x0 / width, y0 / height, x1 / width, y1 / height))
        if progress is not None:
            progress(1)
    if not sample or len(boxes) < max(1, MIN_PRIOR_SHARE * len(sample)):
        return LearnedPrior(WHOLE_IMAGE, len(boxes), len(sample))
    median = np.median(np.asarray(boxes), axis=0)
    box = tuple(round(float(v), 4) for v in median)
    return LearnedPrior(box, len(boxes), len(sample))  # type: ignore[return-value]
