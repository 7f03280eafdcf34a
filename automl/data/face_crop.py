"""Face crop: the one preprocessing step between a decoded photo and the resized array every model sees.

Modes:
- `none`: the whole photo.
- `center`: a fixed prior box, where faces sit in this kind of photo: set by the user, or learned from the
  training images' detections (the median detected box, as shares of the image).
- `face`: OpenCV's frontal-face Haar cascade (it ships inside the opencv package; nothing is downloaded). A
  detection that is missing, tiny next to the prior, or far from it falls back to the prior box.

Either box is widened by `margin` (a share of its width and height on each side) and clamped to the photo.
`prepare_image` is the only implementation: the image cache (training, export) and `automl predict` call it,
so a model sees the same crop at train and test time. Detection is deterministic.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from automl.data.images import decode_image, resize_short_side
from automl.errors import AutomlError
from automl.registry import Registry

MAX_MARGIN = 1.0
WHOLE_IMAGE = (0.0, 0.0, 1.0, 1.0)
CASCADE = "haarcascade_frontalface_default.xml"
#: Detection runs on a grey copy whose longer side is this long (small crops are scaled up to it).
DETECT_SIDE = 192
#: Replicated border around the detection copy, as a share of its side: a face that fills the frame still
#: leaves the cascade's window some context.
DETECT_PAD = 0.25
#: A detection whose side is below this share of the prior's side is tiny: an eye, a mask pattern, or (in a
#: tight crop) the upper half of a masked face, whose crop would cut the mask off.
MIN_FACE_SHARE = 0.6
#: A detection whose centre is further from the prior's centre than this share of the prior's size is far.
MAX_OFFSET = 0.5
#: A prior covering at least this share of the photo means the photos are already face crops: `face` then keeps
#: the prior rather than cropping to the cascade's box, which on a tight crop of a masked face is often the face's
#: upper half (measured on the real crops: macro F1 0.729 cropping to detections vs 0.743 uncropped).
TIGHT_PRIOR_SHARE = 0.6
#: The prior is learned from at most this many training images, evenly spread over the table.
PRIOR_SAMPLE = 200
#: ... and only when at least this share of them has a face; else the whole image is the prior.
MIN_PRIOR_SHARE = 0.1
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class FaceCrop:
    """How to crop: `box` is the prior (x0, y0, x1, y1) as shares of the image; `center` and `face` need it."""

    mode: str = "none"
    margin: float = 0.2
    box: Box | None = None

    def __post_init__(self) -> None:
        FACE_CROPS.get(self.mode)
        if not 0 <= self.margin <= MAX_MARGIN:
            raise AutomlError(
                f"face crop margin {self.margin:g} is out of range: give a share of the box within [0, {MAX_MARGIN:g}]"
            )
        if self.box is not None:
            check_box(self.box)

    @property
    def prior(self) -> Box:
        return self.box if self.box is not None else WHOLE_IMAGE

    def key(self) -> str:
        """What identifies the crop's output (the image cache's key): `none` ignores margin and box."""
        if self.mode == "none":
            return "none"
        return f"{self.mode}-m{self.margin:.4f}-b" + ",".join(f"{v:.4f}" for v in self.prior)


def check_box(box: Sequence[float]) -> None:
    if len(box) != 4 or not all(0 <= v <= 1 for v in box) or not (box[0] < box[2] and box[1] < box[3]):
        raise AutomlError(
            f"face crop box {list(box)} is not four shares of the image x0, y0, x1, y1 within [0, 1] "
            "with x0 < x1 and y0 < y1"
        )


@dataclass(frozen=True)
class CropResult:
    """Where one photo was cropped, in pixels (x0, y0, x1, y1); `detected` is the face the cascade found."""

    box: tuple[int, int, int, int]
    detected: tuple[int, int, int, int] | None = None
    fell_back: bool = False


_threads = threading.local()


def cascade_path() -> Path | None:
    """The frontal-face cascade the installed OpenCV ships, or None (OpenCV 5 ships none)."""
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    path = Path(folder or "") / CASCADE
    return path if hasattr(cv2, "CascadeClassifier") and path.is_file() else None


def _cascade() -> cv2.CascadeClassifier:
    """This thread's classifier: one shared by the image cache's threads mixes up their detections."""
    if getattr(_threads, "cascade", None) is None:
        path = cascade_path()
        if path is None:
            raise AutomlError(
                f"face crop 'face' needs OpenCV's Haar cascades, which opencv {cv2.__version__} does not ship "
                "(OpenCV 5 moved them out); install opencv-python-headless<5, or use face crop 'none' (or 'center' "
                "with a face_crop_box)"
            )
        _threads.cascade = cv2.CascadeClassifier(str(path))
    return _threads.cascade


def detect_faces(image: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Frontal faces in an RGB photo as pixel boxes (x0, y0, x1, y1), in a fixed order."""
    height, width = image.shape[:2]
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    scale = DETECT_SIDE / max(height, width)
    small = cv2.resize(
        grey,
        (max(1, round(width * scale)), max(1, round(height * scale))),
        interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
    )
    pad = round(DETECT_PAD * DETECT_SIDE)
    small = cv2.equalizeHist(cv2.copyMakeBorder(small, pad, pad, pad, pad, cv2.BORDER_REPLICATE))
    found = _cascade().detectMultiScale(small, scaleFactor=1.1, minNeighbors=4, minSize=(24, 24))
    boxes = set()
    for x, y, w, h in np.asarray(found, dtype=np.float64).reshape(-1, 4):
        x0, y0 = (x - pad) / scale, (y - pad) / scale
        x1, y1 = x0 + w / scale, y0 + h / scale
        box = (max(0, round(x0)), max(0, round(y0)), min(width, round(x1)), min(height, round(y1)))
        if box[2] > box[0] and box[3] > box[1]:
            boxes.add(box)
    return sorted(boxes)


def _pixels(box: Box, width: int, height: int) -> tuple[float, float, float, float]:
    return box[0] * width, box[1] * height, box[2] * width, box[3] * height


def choose_face(
    faces: Sequence[tuple[int, int, int, int]], prior: Box, width: int, height: int
) -> tuple[int, int, int, int] | None:
    """The detection closest to the prior's centre (larger first on a tie); None if it is tiny or far."""
    px0, py0, px1, py1 = _pixels(prior, width, height)
    pw, ph = px1 - px0, py1 - py0
    side = (pw * ph) ** 0.5

    def offset(face: tuple[int, int, int, int]) -> float:
        dx = ((face[0] + face[2]) - (px0 + px1)) / 2 / pw
        dy = ((face[1] + face[3]) - (py0 + py1)) / 2 / ph
        return float(np.hypot(dx, dy))

    def area(face: tuple[int, int, int, int]) -> int:
        return (face[2] - face[0]) * (face[3] - face[1])

    candidates = [f for f in faces if area(f) ** 0.5 >= MIN_FACE_SHARE * side]
    if not candidates:
        return None
    best = min(candidates, key=lambda f: (offset(f), -area(f), f))
    return best if offset(best) <= MAX_OFFSET else None


def is_tight(prior: Box) -> bool:
    """Whether a prior says the photos are already face crops (see TIGHT_PRIOR_SHARE)."""
    return (prior[2] - prior[0]) * (prior[3] - prior[1]) >= TIGHT_PRIOR_SHARE


#: Face crop mode -> `(RGB photo, crop) -> CropResult`: the box to keep.
FACE_CROPS: Registry[Callable[[np.ndarray, FaceCrop], CropResult]] = Registry("face_crop")


def locate(image: np.ndarray, crop: FaceCrop) -> CropResult:
    """The crop box of an RGB photo: the chosen face (mode face) or the prior, widened by the margin, clamped."""
    return FACE_CROPS.create(crop.mode, image, crop)


@FACE_CROPS.register("none")
def _whole_image(image: np.ndarray, crop: FaceCrop) -> CropResult:
    height, width = image.shape[:2]
    return CropResult((0, 0, width, height))


@FACE_CROPS.register("center")
def _prior_box(image: np.ndarray, crop: FaceCrop) -> CropResult:
    return _widened(image, crop, None)


@FACE_CROPS.register("face")
def _detected_face(image: np.ndarray, crop: FaceCrop) -> CropResult:
    height, width = image.shape[:2]
    detected = None if is_tight(crop.prior) else choose_face(detect_faces(image), crop.prior, width, height)
    return _widened(image, crop, detected, fell_back=detected is None)


def _widened(
    image: np.ndarray, crop: FaceCrop, detected: tuple[int, int, int, int] | None, fell_back: bool = False
) -> CropResult:
    """The detected face, else the prior, widened by the margin and clamped to the photo."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = detected if detected is not None else _pixels(crop.prior, width, height)
    dx, dy = (x1 - x0) * crop.margin, (y1 - y0) * crop.margin
    left, top = max(0, round(x0 - dx)), max(0, round(y0 - dy))
    right, bottom = min(width, round(x1 + dx)), min(height, round(y1 + dy))
    right, bottom = max(right, min(width, left + 1)), max(bottom, min(height, top + 1))
    return CropResult((left, top, right, bottom), detected, fell_back)


def crop_image(image: np.ndarray, crop: FaceCrop) -> tuple[np.ndarray, CropResult]:
    result = locate(image, crop)
    x0, y0, x1, y1 = result.box
    return image[y0:y1, x0:x1], result


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

    The largest detection of each sampled photo counts; with too few faces the prior is the whole image.
    """
    boxes = []
    sample = prior_sample(len(paths))
    for index in sample:
        image = decode_image(Path(paths[index]))
        height, width = image.shape[:2]
        faces = detect_faces(image)
        if faces:
            x0, y0, x1, y1 = max(faces, key=lambda f: ((f[2] - f[0]) * (f[3] - f[1]), f))
            boxes.append((x0 / width, y0 / height, x1 / width, y1 / height))
        if progress is not None:
            progress(1)
    if not sample or len(boxes) < max(1, MIN_PRIOR_SHARE * len(sample)):
        return LearnedPrior(WHOLE_IMAGE, len(boxes), len(sample))
    median = np.median(np.asarray(boxes), axis=0)
    box = tuple(round(float(v), 4) for v in median)
    return LearnedPrior(box, len(boxes), len(sample))  # type: ignore[arg-type]
