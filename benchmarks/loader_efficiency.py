"""Does the data path keep the model busy? Train the same model for the same steps twice, in one process:

1. fed as a search feeds it: the worker's session (with `--augment-device gpu`, the image set uploaded to the device
   once and every batch indexed and augmented there; with `cpu`, albumentations in the worker's loader processes)
   -> weighted sampler -> batches;
2. fed by the same batches already in memory as tensors (no decoding, no augmentation, no sampling).

Prints, for each backbone and augmentation device asked for, images per second for both (the in-memory figure is
the model's training speed: on CUDA with bf16 autocast and channels-last) and `loader_efficiency <real / in-memory>`.
Target: 0.9 or better on a 2-core CPU with a 64 px resnet18; 0.95 on a GPU with `--augment-device gpu`. Timings on
shared machines vary 30-40% from run to run, which is why both figures come from one run, interleaved.

    python benchmarks/loader_efficiency.py [--data DIR] [--backbone resnet18] [--size 64] [--steps 30]
        [--device cpu|cuda] [--augment-device cpu|gpu|cpu,gpu] [--people 60]
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

from automl.data.cache import ImageSets  # noqa: E402
from automl.data.dataset import DataSource, load_dataset  # noqa: E402
from automl.data.demo import write_demo_data  # noqa: E402
from automl.data.face_crop import FaceCrop  # noqa: E402
from automl.data.folds import assign_folds  # noqa: E402
from automl.train.engine import FoldData, FoldRun  # noqa: E402
from automl.train.params import TrainParams  # noqa: E402
from automl.train.session import Runtime, TrainSession  # noqa: E402
from automl.train.targets import training_labels  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="a data set (default: a fresh demo set of --people people)")
    parser.add_argument("--backbone", default="resnet18", help="one or several, comma-separated")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30, help="training steps per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating measurements of each feed")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--augment-device", default="cpu", help="cpu, gpu, or both: cpu,gpu")
    parser.add_argument("--people", type=int, default=60, help="people in the fresh demo set")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch, TrainSession(Runtime(device=args.device)) as session:
        data = args.data or write_demo_data(Path(scratch) / "demo", people=args.people, eval_people=1)
        dataset = load_dataset(DataSource(data))
        task = dataset.task("age")
        images = ImageSets(Path(scratch) / "home", args.size, dataset.train["path"]).get(FaceCrop())
        true = task.labels(dataset.train)
        folds = assign_folds(true, dataset.train["group"].to_numpy(), 5, seed=0)
        for backbone in args.backbone.split(","):
            for augment_device in args.augment_device.split(","):
                params = TrainParams(
                    backbone=backbone, image_size=args.size, batch_size=args.batch_size, epochs=1, sampler="weighted",
                    hflip=0.5, color_jitter=0.2, cutout=0.3, affine=0.3, augment_device=augment_device,
                )  # fmt: skip
                fold = FoldData(
                    images, true, training_labels(task, dataset.train, params),
                    np.flatnonzero(folds != 0), np.flatnonzero(folds == 0), task.num_classes,
                )  # fmt: skip
                measure(FoldRun(fold, params, session), args)


def measure(run: FoldRun, args: argparse.Namespace) -> None:
    real_loader = run.train_loader
    in_memory = [batch for _, batch in zip(range(args.steps), _cycle(real_loader), strict=False)]
    real, memory = [], []
    run.train_steps(in_memory[:3])  # warm-up: first calls build kernels
    for _ in range(args.rounds):
        real.append(_images_per_second(run, _take(real_loader, args.steps)))
        memory.append(_images_per_second(run, in_memory))
    real_rate, memory_rate = float(np.median(real)), float(np.median(memory))
    p = run.params
    print(
        f"backbone {p.backbone}, {p.image_size} px, batch {p.batch_size}, {args.steps} steps x {args.rounds}, "
        f"device {run.device}, augment_device {run.augment_device}, loader processes "
        f"{0 if run.augment_device == 'gpu' else run.session.loader_workers}, image sets uploaded {run.session.uploads}"
    )
    print(f"real loader  {real_rate:8.1f} img/s   (rounds: {', '.join(f'{r:.0f}' for r in real)})")
    print(f"in memory    {memory_rate:8.1f} img/s   (rounds: {', '.join(f'{r:.0f}' for r in memory)})")
    print(f"loader_efficiency {real_rate / memory_rate:.2f}", flush=True)


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
