"""Does a fold recover from running out of GPU memory? Train one fold at batch B and read its peak memory, then
cap this process's GPU memory (torch.cuda.set_per_process_memory_fraction) between that peak and what batch 2B
needs, and train the same fold at batch 2B: the fold must run out of memory, retry at B with 2-step gradient
accumulation, and finish. Prints both attempts and, as its last line, `oom_retry recovered|failed`.

Without CUDA (`--device cpu`, for a dry run) the out-of-memory error is simulated: batches larger than B raise
torch.OutOfMemoryError, as CUDA's allocator would.

    python benchmarks/oom_retry.py [--backbone resnet18] [--size 224] [--batch-size 64] [--device cuda]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from automl.data.cache import ImageSets  # noqa: E402
from automl.data.dataset import DataSource, load_dataset  # noqa: E402
from automl.data.demo import write_demo_data  # noqa: E402
from automl.data.face_crop import FaceCrop  # noqa: E402
from automl.data.folds import assign_folds  # noqa: E402
from automl.train.engine import FoldData, FoldFailed, FoldRun, train_fold  # noqa: E402
from automl.train.params import TrainParams  # noqa: E402
from automl.train.session import Runtime  # noqa: E402
from automl.train.targets import training_labels  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64, help="B: the batch that fits")
    parser.add_argument("--people", type=int, default=60)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        dataset = load_dataset(DataSource(write_demo_data(Path(scratch) / "demo", people=args.people, eval_people=0)))
        task = dataset.task("mask")
        images = ImageSets(Path(scratch) / "home", args.size, dataset.train["path"]).get(FaceCrop())
        true = task.labels(dataset.train)
        folds = assign_folds(true, dataset.train["group"].to_numpy(), 3, seed=0)
        params = TrainParams(backbone=args.backbone, image_size=args.size, batch_size=args.batch_size, epochs=1)
        data = FoldData(
            images, true, training_labels(task, dataset.train, params),
            np.flatnonzero(folds != 0), np.flatnonzero(folds == 0), task.num_classes,
        )  # fmt: skip
        runtime = Runtime(device=args.device)
        fits = train_fold(data, params, runtime)
        print(f"batch {args.batch_size}: peak memory {fits.peak_memory_mb:.0f} MB, {fits.images_per_second:.0f} img/s")

        huge = args.batch_size * 2
        if torch.device(args.device).type == "cuda":
            total = torch.cuda.get_device_properties(0).total_memory / 2**20
            cap = fits.peak_memory_mb * 1.4  # room for batch B (and the allocator's slack), not for 2B
            torch.cuda.set_per_process_memory_fraction(cap / total)
            print(f"GPU memory capped at {cap:.0f} MB of {total:.0f} MB")
        else:
            _simulate_out_of_memory_above(args.batch_size)
            print(f"simulated: batches above {args.batch_size} raise torch.OutOfMemoryError")
        try:
            result = train_fold(data, replace(params, batch_size=huge), runtime)
        except FoldFailed as error:
            print(f"batch {huge}: {error}")
            print("oom_retry failed")
            return
        print(
            f"batch {huge}: out of memory, retried at batch {result.batch_size} x {result.accumulation} accumulation; "
            f"epoch 1 macro F1 {result.curve[0].val_f1:.3f}, peak memory {result.peak_memory_mb:.0f} MB"
        )
        recovered = (result.batch_size, result.accumulation) == (args.batch_size, 2)
        print(f"oom_retry {'recovered' if recovered else 'failed: it did not run out of memory'}")


def _simulate_out_of_memory_above(batch_size: int) -> None:
    train_steps = FoldRun.train_steps

    def steps(self: FoldRun, batches, epoch: int = 1):
        if self.batch_size > batch_size:
            raise torch.OutOfMemoryError(f"simulated: CUDA out of memory at batch size {self.batch_size}")
        return train_steps(self, batches, epoch)

    FoldRun.train_steps = steps


if __name__ == "__main__":
    main()
