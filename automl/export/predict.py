"""Classifying images with an export folder alone: the same decode, face crop, eval transform, TTA and ensemble
as the export.

The export computes its own predictions with this code too, so `automl predict` on the same images gives the
same classes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from automl.data.face_crop import FaceCrop, prepare_image
from automl.data.images import is_image_file
from automl.errors import AutomlError
from automl.export.bundle import ExportInfo, MemberInfo, load_model, member_dir, read_export
from automl.export.decision import decide
from automl.export.ensemble import combine
from automl.export.tta import combine_views
from automl.train.inference import predict_views
from automl.train.session import Runtime, TrainSession

#: A member's probabilities per view, each the mean over its models.
MemberViews = dict[str, np.ndarray]


def collect_images(inputs: Sequence[Path]) -> list[Path]:
    """The image files named, and those inside the folders named (recursively, sorted); hidden files skipped."""
    if not inputs:
        raise AutomlError("name at least one image or folder to classify")
    found: list[Path] = []
    for item in inputs:
        if item.is_dir():
            inside = sorted(p for p in item.rglob("*") if p.is_file() and is_image_file(p))
            if not inside:
                raise AutomlError(f"folder {item} holds no image files (.jpg, .jpeg, .png, .bmp, .webp)")
            found += inside
        elif not item.exists():
            raise AutomlError(f"{item} does not exist")
        elif not is_image_file(item):
            raise AutomlError(f"{item} is not an image file (.jpg, .jpeg, .png, .bmp, .webp); name images or folders")
        else:
            found.append(item)
    return found


def load_images(paths: Sequence[Path], image_size: int, crop: FaceCrop) -> list[np.ndarray]:
    """Decoded, face-cropped and resized exactly as the image cache does for training (shorter side = image size),
    on threads (decoding releases the GIL)."""
    with ThreadPoolExecutor() as pool:
        return list(pool.map(lambda path: prepare_image(Path(path), image_size, crop), paths))


def member_views(
    directory: Path,
    member: MemberInfo,
    num_classes: int,
    arrays: Sequence[np.ndarray],
    rows: np.ndarray,
    views: Sequence[str],
    session: TrainSession,
) -> MemberViews:
    """The member's probabilities of `arrays[rows]` for each view: the mean over its models (a fold ensemble, or one
    full model)."""
    sums: dict[str, np.ndarray] = {}
    for file in member.models:
        model = load_model(member_dir(directory, member.name) / file, member.params, num_classes)
        for view, probs in predict_views(model, arrays, rows, member.params, views, session).items():
            sums[view] = sums.get(view, 0) + probs
    return {view: total / len(member.models) for view, total in sums.items()}


def ensemble_probs(info: ExportInfo, views: Sequence[MemberViews]) -> np.ndarray:
    """The export's probabilities from every member's per-view probabilities: its TTA views, then its vote."""
    chosen, used = info.tta.views, info.ensemble.members
    return combine(info.ensemble.method, [combine_views(views[i], chosen) for i in used], info.ensemble.weights)


class Predictor:
    """An export folder, ready to classify decoded images."""

    def __init__(self, directory: Path, device: str = "auto"):
        self.directory = Path(directory)
        self.info = read_export(self.directory)
        self.session = TrainSession(Runtime(device=device))  # the images on the device once, for every model

    @property
    def classes(self) -> list[str]:
        return self.info.classes

    def predict_images(
        self, images: Callable[[FaceCrop], Sequence[np.ndarray]], on_member: Callable[[str], None] | None = None
    ) -> np.ndarray:
        """The ensemble's probabilities; `images(crop)` gives the images prepared with a member's face crop."""
        views = self.info.tta.views
        per_member: list[MemberViews] = [{} for _ in self.info.members]
        for index in self.info.ensemble.members:
            member = self.info.members[index]
            arrays = images(member.params.image_crop)
            per_member[index] = member_views(
                self.directory, member, len(self.classes), arrays, np.arange(len(arrays)), views, self.session
            )
            if on_member is not None:
                on_member(member.name)
        return ensemble_probs(self.info, per_member)

    def decide(self, probs: np.ndarray) -> np.ndarray:
        """The predicted classes: the export's decision rule on the ensemble's probabilities."""
        return decide(probs, self.info.class_weights)

    def predict_files(self, paths: Sequence[Path], on_member: Callable[[str], None] | None = None) -> np.ndarray:
        prepared: dict[str, list[np.ndarray]] = {}  # members that share a face crop share its images

        def images(crop: FaceCrop) -> list[np.ndarray]:
            if crop.key() not in prepared:
                prepared[crop.key()] = load_images(paths, self.info.image_size, crop)
            return prepared[crop.key()]

        return self.predict_images(images, on_member)
