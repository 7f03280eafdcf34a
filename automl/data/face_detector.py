"""Finding faces in a photo: YuNet (OpenCV's `FaceDetectorYN`, the default) and OpenCV's Haar frontal cascade (an
option where the installed OpenCV still ships it; OpenCV 5 does not).

Each thread keeps its own detector (one shared by the image cache's threads mixes up their detections); OpenCV's
dnn releases the GIL, so the cache's thread pool detects on every core. Detection is deterministic.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from automl.data.face_model import model_path
from automl.errors import AutomlError

Pixels = tuple[int, int, int, int]

#: The detection copy is scaled so that the expected face (the prior box) is this many pixels on its longer side:
#: YuNet finds faces of about 10-300 px. On the demo data and on the real crops in a photo-like frame, 224-280 px
#: found the most faces (the demo's drawn faces need the larger sizes, the small real crops the smaller ones).
FACE_SIDE = 256
#: ... and no side of the copy is longer than this (a tiny prior in a large photo would otherwise cost seconds).
MAX_DETECT_SIDE = 1280
NMS_THRESHOLD = 0.3  # OpenCV's defaults for YuNet
TOP_K = 5000


@dataclass(frozen=True)
class Face:
    """A detected face: its box in pixels (x0, y0, x1, y1, clamped to the photo), the detector's score, and YuNet's
    five landmarks (x, y): right eye, left eye, nose tip, right and left mouth corners (the person's right)."""

    box: Pixels
    score: float
    landmarks: tuple[tuple[float, float], ...] = ()

    @property
    def area(self) -> int:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])


_threads = threading.local()


def _yunet(path: Path) -> cv2.FaceDetectorYN:
    """This thread's YuNet; a new one when the model file changed (a test, or --face-detector)."""
    held = getattr(_threads, "yunet", None)
    if held is None or held[0] != path:
        try:
            detector = cv2.FaceDetectorYN.create(str(path), "", (320, 320), 0.5, NMS_THRESHOLD, TOP_K)
        except cv2.error as error:
            raise AutomlError(f"OpenCV {cv2.__version__} cannot load the face detector {path}: {error}") from None
        _threads.yunet = held = (path, detector)
    return held[1]


def detect_faces(image: np.ndarray, face_side: float, threshold: float) -> list[Face]:
    """YuNet's faces in an RGB photo scoring at least `threshold`, best first; `face_side` is the expected face's
    longer side in pixels (the prior box's), which sets the scale YuNet sees the photo at."""
    height, width = image.shape[:2]
    scale = min(FACE_SIDE / max(face_side, 1.0), MAX_DETECT_SIDE / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    detector = _yunet(model_path())
    detector.setInputSize(size)
    detector.setScoreThreshold(threshold)
    _, found = detector.detect(cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
    faces = []
    for row in np.zeros((0, 15)) if found is None else found:
        x, y, w, h = (row[:4] / scale).tolist()
        box = (max(0, round(x)), max(0, round(y)), min(width, round(x + w)), min(height, round(y + h)))
        if box[2] > box[0] and box[3] > box[1]:
            points = (row[4:14] / scale).reshape(5, 2).tolist()
            faces.append(Face(box, round(float(row[14]), 4), tuple((float(px), float(py)) for px, py in points)))
    return sorted(faces, key=lambda f: (-f.score, f.box))


# ------------------------------------------------------------------------------------------------ Haar (legacy)

CASCADE = "haarcascade_frontalface_default.xml"
#: Haar detection runs on a grey copy whose longer side is this long (small crops are scaled up to it).
HAAR_SIDE = 192
#: Replicated border around the Haar copy, as a share of its side: a face that fills the frame still leaves the
#: cascade's window some context.
HAAR_PAD = 0.25


def cascade_path() -> Path | None:
    """The frontal-face cascade the installed OpenCV ships, or None (OpenCV 5 ships none)."""
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    path = Path(folder or "") / CASCADE
    return path if hasattr(cv2, "CascadeClassifier") and path.is_file() else None


def _cascade() -> cv2.CascadeClassifier:
    if getattr(_threads, "cascade", None) is None:
        path = cascade_path()
        if path is None:
            raise AutomlError(
                f"face crop 'haar' needs OpenCV's Haar cascades, which opencv {cv2.__version__} does not ship "
                "(OpenCV 5 moved them out); use face crop 'face' (YuNet), or install opencv-python-headless<5"
            )
        _threads.cascade = cv2.CascadeClassifier(str(path))
    return _threads.cascade


def haar_faces(image: np.ndarray) -> list[Face]:
    """The Haar cascade's frontal faces in an RGB photo, in a fixed order (it gives no score: 1.0)."""
    height, width = image.shape[:2]
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    scale = HAAR_SIDE / max(height, width)
    small = cv2.resize(
        grey,
        (max(1, round(width * scale)), max(1, round(height * scale))),
        interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
    )
    pad = round(HAAR_PAD * HAAR_SIDE)
    small = cv2.equalizeHist(cv2.copyMakeBorder(small, pad, pad, pad, pad, cv2.BORDER_REPLICATE))
    found = _cascade().detectMultiScale(small, scaleFactor=1.1, minNeighbors=4, minSize=(24, 24))
    boxes = set()
    for x, y, w, h in np.asarray(found, dtype=np.float64).reshape(-1, 4):
        x0, y0 = (x - pad) / scale, (y - pad) / scale
        x1, y1 = x0 + w / scale, y0 + h / scale
        box = (max(0, round(x0)), max(0, round(y0)), min(width, round(x1)), min(height, round(y1)))
        if box[2] > box[0] and box[3] > box[1]:
            boxes.add(box)
    return [Face(box, 1.0) for box in sorted(boxes)]
