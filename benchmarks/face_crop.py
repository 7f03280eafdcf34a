"""Does the face crop find faces, and does it help? Demo data and the real face-mask crops, task `mask`.

For each data set: the prior box learned from the training images, the share of training images where the
`face` mode found and used a face (the rest fell back to the prior), and the out-of-fold macro F1 of one fixed
configuration (folds grouped by person / source photo) with each face crop mode. The real crops are already
tight, so `face` should leave them about as they are.

    python benchmarks/face_crop.py [--demo-people 80] [--size 48] [--epochs 3] [--folds 3] [--modes none,face]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402

from automl.data.cache import ImageCache  # noqa: E402
from automl.data.dataset import DataSource, load_dataset  # noqa: E402
from automl.data.demo import write_demo_data  # noqa: E402
from automl.data.face_crop import FaceCrop, learn_prior, locate  # noqa: E402
from automl.data.folds import assign_folds  # noqa: E402
from automl.data.images import decode_image  # noqa: E402
from automl.train.engine import FoldData, train_fold  # noqa: E402
from automl.train.metrics import macro_f1  # noqa: E402
from automl.train.params import TrainParams  # noqa: E402
from automl.train.targets import training_labels  # noqa: E402

CROPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "face-mask-crops" / "labels.csv"


def detection_rate(paths: list[str], crop: FaceCrop) -> float:
    """The share of `paths` whose crop follows a detected face (not the fallback)."""
    with ThreadPoolExecutor() as pool:
        found = list(pool.map(lambda p: locate(decode_image(Path(p)), crop).detected is not None, paths))
    return float(np.mean(found))


def out_of_fold_f1(source: DataSource, home: Path, params: TrainParams, folds: int) -> float:
    """Macro F1 of every fold's best-epoch predictions on its validation fold, together."""
    dataset = load_dataset(source)
    task = dataset.task("mask")
    true = task.labels(dataset.train)
    fold_of = assign_folds(true, dataset.train["group"].to_numpy(), folds, seed=0)
    images, _ = ImageCache(home, params.image_size, params.image_crop).load(dataset.train["path"])
    labels = training_labels(task, dataset.train, params)
    predicted = np.full(len(true), -1)
    for fold in range(folds):
        train_index, val_index = np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)
        data = FoldData(images, true, labels, train_index, val_index, task.num_classes)
        result = train_fold(data, replace(params, seed=params.seed + fold))
        predicted[val_index] = result.val_probs.argmax(1)
    return macro_f1(true, predicted)


def run(name: str, source: DataSource, home: Path, params: TrainParams, modes: list[str], folds: int) -> None:
    start = time.monotonic()
    paths = list(load_dataset(source).train["path"])
    prior = learn_prior(paths)
    print(f"{name}: {len(paths)} training images; prior box {list(prior.box)} from {prior.faces} faces "
          f"in {prior.sampled} sampled images", flush=True)  # fmt: skip
    rate = detection_rate(paths, FaceCrop("face", params.face_crop_margin, prior.box))
    print(f"{name}: face detected and used in {rate:.1%} of training images (the rest: the prior box)", flush=True)
    for mode in modes:
        crop_params = replace(params, face_crop=mode, face_crop_box=None if mode == "none" else prior.box)
        f1 = out_of_fold_f1(source, home, crop_params, folds)
        print(f"{name}: face_crop {mode:6s} out-of-fold macro F1 {f1:.4f}", flush=True)
    print(f"{name}: {time.monotonic() - start:.0f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", type=Path, default=CROPS)
    parser.add_argument("--demo-people", type=int, default=80)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--margin", type=float, default=0.2)
    parser.add_argument("--modes", default="none,face")
    args = parser.parse_args()
    params = TrainParams(
        backbone=args.backbone, image_size=args.size, epochs=args.epochs, batch_size=32, lr=1e-3,
        patience=args.epochs, sampler="weighted", sampler_power=0.5, hflip=0.5, crop="random_resized",
        crop_scale_min=0.7, face_crop_margin=args.margin,
    )  # fmt: skip
    print(f"config: {args.backbone} {args.size} px, {args.epochs} epochs, {args.folds} folds, margin {args.margin}")
    modes = args.modes.split(",")
    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch)
        demo = write_demo_data(home / "demo", people=args.demo_people, seed=0, eval_people=0)
        run("demo", DataSource(demo), home, params, modes, args.folds)
        run("real crops", DataSource(args.csv, label_columns=("mask",), group_column="group"), home, params, modes,
            args.folds)  # fmt: skip


if __name__ == "__main__":
    main()
