"""Does the data path keep the model busy? Train the same model for the same steps twice, in one process:

1. fed by the real loader: image cache -> albumentations train pipeline -> weighted sampler -> batches;
2. fed by the same batches already in memory as tensors (no decoding, no augmentation, no sampling).

Prints images per second for both and, as its last line, `loader_efficiency <real / in-memory>`.
Target: 0.9 or better on a 2-core CPU with a 64 px resnet18. Timings on shared machines vary 30-40% from
run to run, which is why both figures come from one run, interleaved.

    python benchmarks/loader_efficiency.py [--data DIR] [--backbone resnet18] [--size 64] [--steps 30]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402

from automl.data.cache import ImageCache  # noqa: E402
from automl.data.dataset import DataSource, load_dataset  # noqa: E402
from automl.data.demo import write_demo_data  # noqa: E402
from automl.data.folds import assign_folds  # noqa: E402
from automl.train.engine import FoldData, FoldRun, Runtime  # noqa: E402
from automl.train.params import TrainParams  # noqa: E402
from automl.train.targets import training_labels  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="a data set (default: a fresh 60-person demo set)")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30, help="training steps per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating measurements of each feed")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        data = args.data or write_demo_data(Path(scratch) / "demo", people=60, eval_people=1)
        dataset = load_dataset(DataSource(data))
        task = dataset.task("age")
        images, _ = ImageCache(Path(scratch) / "home", args.size).load(dataset.train["path"])
        true = task.labels(dataset.train)
        folds = assign_folds(true, dataset.train["group"].to_numpy(), 5, seed=0)
        params = TrainParams(
            backbone=args.backbone, image_size=args.size, batch_size=args.batch_size, epochs=1,
            sampler="weighted", hflip=0.5, color_jitter=0.2, cutout=0.3, affine=0.3,
        )  # fmt: skip
        fold = FoldData(
            images, true, training_labels(task, dataset.train, params),
            np.flatnonzero(folds != 0), np.flatnonzero(folds == 0), task.num_classes,
        )  # fmt: skip
        run = FoldRun(fold, params, Runtime(device="cpu"))
        real_loader = run.train_loader
        in_memory = [batch for _, batch in zip(range(args.steps), _cycle(real_loader), strict=False)]

        real, memory = [], []
        run.train_steps(in_memory[:3])  # warm-up: first calls build kernels
        for _ in range(args.rounds):
            real.append(_images_per_second(run, _take(real_loader, args.steps)))
            memory.append(_images_per_second(run, in_memory))
        real_rate, memory_rate = float(np.median(real)), float(np.median(memory))
        print(f"backbone {args.backbone}, {args.size} px, batch {args.batch_size}, {args.steps} steps x {args.rounds}")
        print(f"real loader  {real_rate:8.1f} img/s   (rounds: {', '.join(f'{r:.0f}' for r in real)})")
        print(f"in memory    {memory_rate:8.1f} img/s   (rounds: {', '.join(f'{r:.0f}' for r in memory)})")
        print(f"loader_efficiency {real_rate / memory_rate:.2f}")


def _cycle(loader):
    while True:
        yield from loader


def _take(loader, steps: int):
    """The real loader, lazily: batches are built while the model trains, as in a fold."""
    return (batch for _, batch in zip(range(steps), _cycle(loader), strict=False))


def _images_per_second(run: FoldRun, batches) -> float:
    started = time.perf_counter()
    _, images = run.train_steps(batches)
    return images / (time.perf_counter() - started)


if __name__ == "__main__":
    main()
