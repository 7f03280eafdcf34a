"""Does the engine learn real photographs? Train a 64 px resnet18 on the real face-mask crops.

Folds are grouped by source photo. Prints, per fold, the out-of-fold macro F1 at the best epoch beside the
macro F1 of always predicting the majority class, then the figures over all folds' predictions. `--face-crop`
crops every image first, as a search would (the prior box learned from the images, YuNet from ../shared/models);
`benchmarks/face_crop.py` compares the crops with it.

    python benchmarks/real_crops_f1.py [--csv ../shared/data/face-mask-crops/labels.csv] [--epochs 6] [--folds 5]
        [--face-crop none|center|face|aligned|haar]
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
SHARED = Path(__file__).resolve().parents[2] / "shared"
os.environ.setdefault("AUTOML_FACE_DETECTOR", str(SHARED / "models" / "face_detection_yunet_2026may.onnx"))

import numpy as np  # noqa: E402

from automl.data.dataset import DataSource, load_dataset  # noqa: E402
from automl.data.face_crop import learn_prior, prepare_image  # noqa: E402
from automl.data.folds import assign_folds  # noqa: E402
from automl.train.engine import FoldData, train_fold  # noqa: E402
from automl.train.metrics import macro_f1  # noqa: E402
from automl.train.params import TrainParams  # noqa: E402
from automl.train.targets import training_labels  # noqa: E402

CROPS = SHARED / "data" / "face-mask-crops" / "labels.csv"


def crops_params(backbone: str = "resnet18", epochs: int = 6, face_crop: str = "none") -> TrainParams:
    """The one configuration every crop is trained with."""
    return TrainParams(
        backbone=backbone, image_size=64, epochs=epochs, batch_size=32, lr=1e-3, patience=epochs,
        sampler="weighted", sampler_power=0.5, hflip=0.5, crop="random_resized", crop_scale_min=0.7,
        face_crop=face_crop,
    )  # fmt: skip


def out_of_fold_f1(
    csv: Path, params: TrainParams, folds: int, run_folds: int | None = None, report: Callable[[str], None] = print
) -> tuple[float, float]:
    """Out-of-fold macro F1 of `params` on the crops (its face crop applied, the prior learned from the images, as
    a study learns it), and the majority class's, over the folds trained."""
    dataset = load_dataset(DataSource(csv, label_columns=("mask",), group_column="group"))
    task = dataset.task("mask")
    true = task.labels(dataset.train)
    fold_of = assign_folds(true, dataset.train["group"].to_numpy(), folds, seed=0)
    paths = [Path(p) for p in dataset.train["path"]]
    if params.face_crop != "none" and params.face_crop_box is None:
        params = replace(params, face_crop_box=learn_prior(paths).box)
    with ThreadPoolExecutor() as pool:  # what the image cache does, without writing one
        images = list(pool.map(lambda path: prepare_image(path, params.image_size, params.image_crop), paths))
    labels = training_labels(task, dataset.train, params)
    majority = np.bincount(true).argmax()
    oof = np.full(len(true), -1)
    for fold in range(run_folds or folds):
        train_index, val_index = np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)
        result = train_fold(FoldData(images, true, labels, train_index, val_index, task.num_classes), params)
        oof[val_index] = result.val_probs.argmax(1)
        baseline = macro_f1(true[val_index], np.full(len(val_index), majority))
        report(
            f"fold {fold}: macro F1 {result.best_f1:.3f} (epoch {result.best_epoch}) vs majority class {baseline:.3f}"
            f"  [{result.images_per_second:.0f} img/s]"
        )
    scored = oof >= 0
    return macro_f1(true[scored], oof[scored]), macro_f1(true[scored], np.full(scored.sum(), majority))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", type=Path, default=CROPS)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--run-folds", type=int, default=None, help="train only the first N folds")
    parser.add_argument("--face-crop", default="none")
    args = parser.parse_args()
    params = crops_params(args.backbone, args.epochs, args.face_crop)
    f1, baseline = out_of_fold_f1(args.csv, params, args.folds, args.run_folds, lambda line: print(line, flush=True))
    print(f"out-of-fold macro F1 {f1:.3f} vs majority class {baseline:.3f}")


if __name__ == "__main__":
    main()
