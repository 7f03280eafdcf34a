"""Which age head scores best? Out-of-fold age macro F1 of each head on demo data, one backbone and budget for all.

Every head (groups, bins, regression, ordinal) trains the same backbone, image size, epochs, optimiser and sampler on
the same person-grouped folds; each is scored like a search trial: macro F1 of the 3 true age groups over all
out-of-fold predictions (per-group F1 beside it).

    python benchmarks/age_heads.py [--people 200] [--backbone test_resnet] [--image-size 48] [--epochs 8] [--folds 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402

from automl.data.cache import ImageSets  # noqa: E402
from automl.data.dataset import DataSource, load_dataset  # noqa: E402
from automl.data.demo import write_demo_data  # noqa: E402
from automl.data.face_crop import FaceCrop  # noqa: E402
from automl.data.folds import assign_folds  # noqa: E402
from automl.train.engine import FoldData, train_fold  # noqa: E402
from automl.train.heads import AGE_HEADS  # noqa: E402
from automl.train.metrics import macro_f1, per_class_f1  # noqa: E402
from automl.train.params import TrainParams  # noqa: E402
from automl.train.targets import training_ages, training_labels  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=200)
    parser.add_argument("--backbone", default="test_resnet")
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--heads", default=",".join(AGE_HEADS), help="comma-separated age heads to compare")
    args = parser.parse_args()

    params = TrainParams(
        backbone=args.backbone, image_size=args.image_size, epochs=args.epochs, batch_size=32, lr=2e-3,
        patience=args.epochs, schedule="cosine", crop="random_resized", crop_scale_min=0.7, hflip=0.5,
        sampler="weighted", sampler_power=0.5,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        data_dir = write_demo_data(Path(scratch) / "demo", people=args.people, seed=0, eval_people=0)
        dataset = load_dataset(DataSource(data_dir))
        images = ImageSets(Path(scratch) / "home", params.image_size, dataset.train["path"]).get(FaceCrop())
        print(f"demo data: {args.people} people, {len(images)} images ({time.perf_counter() - started:.0f} s)")
    task = dataset.task("age")
    true = task.labels(dataset.train)
    folds = assign_folds(true, dataset.train["group"].to_numpy(), args.folds, seed=0)
    print(
        f"{args.backbone} {args.image_size} px, {args.epochs} epochs, {args.folds} folds by person; "
        f"groups {', '.join(task.classes)}: {np.bincount(true).tolist()} images"
    )
    print(f"{'head':<11} {'OOF macro F1':>12}  per-group F1 ({' / '.join(task.classes)})   seconds")
    for head in args.heads.split(","):
        head_params = replace(params, age_head=head)
        labels = training_labels(task, dataset.train, head_params)
        ages = training_ages(task, dataset.train, head_params)
        probs = np.full((len(true), task.num_classes), np.nan)
        started = time.perf_counter()
        for fold in range(args.folds):
            data = FoldData(
                images, true, labels, np.flatnonzero(folds != fold), np.flatnonzero(folds == fold), task.num_classes,
                task=task, ages=ages,
            )  # fmt: skip
            result = train_fold(data, replace(head_params, seed=fold))
            probs[result.val_index] = result.val_probs
        predicted = probs.argmax(1)
        groups = " / ".join(f"{f:.3f}" for f in per_class_f1(true, predicted, task.num_classes))
        print(
            f"{head:<11} {macro_f1(true, predicted):>12.3f}  {groups:<38} {time.perf_counter() - started:>7.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
