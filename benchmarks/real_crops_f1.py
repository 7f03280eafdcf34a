"""Does the engine learn real photographs? Train a 64 px resnet18 on the real face-mask crops.

Folds are grouped by source photo. Prints, per fold, the out-of-fold macro F1 at the best epoch beside the
macro F1 of always predicting the majority class, then the figures over all folds' predictions.

    python benchmarks/real_crops_f1.py [--csv ../shared/data/face-mask-crops/labels.csv] [--epochs 6] [--folds 5]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402

from automl.data.cache import ImageSets  # noqa: E402
from automl.data.dataset import DataSource, load_dataset  # noqa: E402
from automl.data.face_crop import FaceCrop  # noqa: E402
from automl.data.folds import assign_folds  # noqa: E402
from automl.train.engine import FoldData, train_fold  # noqa: E402
from automl.train.metrics import macro_f1  # noqa: E402
from automl.train.params import TrainParams  # noqa: E402
from automl.train.targets import training_labels  # noqa: E402

CROPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "face-mask-crops" / "labels.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", type=Path, default=CROPS)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--run-folds", type=int, default=None, help="train only the first N folds")
    args = parser.parse_args()

    dataset = load_dataset(DataSource(args.csv, label_columns=("mask",), group_column="group"))
    task = dataset.task("mask")
    true = task.labels(dataset.train)
    folds = assign_folds(true, dataset.train["group"].to_numpy(), args.folds, seed=0)
    params = TrainParams(
        backbone=args.backbone, image_size=64, epochs=args.epochs, batch_size=32, lr=1e-3, patience=args.epochs,
        sampler="weighted", sampler_power=0.5, hflip=0.5, crop="random_resized", crop_scale_min=0.7,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as home:
        images = ImageSets(Path(home), params.image_size, dataset.train["path"]).get(FaceCrop())
    labels = training_labels(task, dataset.train, params)
    majority = np.bincount(true).argmax()
    oof = np.full(len(true), -1)
    for fold in range(args.run_folds or args.folds):
        train_index, val_index = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
        result = train_fold(FoldData(images, true, labels, train_index, val_index, task.num_classes), params)
        oof[val_index] = result.val_probs.argmax(1)
        baseline = macro_f1(true[val_index], np.full(len(val_index), majority))
        print(
            f"fold {fold}: macro F1 {result.best_f1:.3f} (epoch {result.best_epoch}) vs majority class {baseline:.3f}"
            f"  [{result.images_per_second:.0f} img/s]",
            flush=True,
        )
    scored = oof >= 0
    baseline = macro_f1(true[scored], np.full(scored.sum(), majority))
    print(f"out-of-fold macro F1 {macro_f1(true[scored], oof[scored]):.3f} vs majority class {baseline:.3f}")


if __name__ == "__main__":
    main()
