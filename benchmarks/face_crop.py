"""Does the face crop find faces, how fast, and does it help? YuNet (the `face` box and the `aligned` crop) beside
OpenCV's Haar cascade (`haar`, what `face` was before).

1. Found: the share of images whose crop follows a detected face (the rest fall back to the prior box, learned
   from the images by YuNet as a study learns it), on the demo data's training photos and on the real face-mask
   crops padded back to a photo-like frame (each crop in the middle of a grey frame twice its width and height,
   where a face sits in a competition photo). On the padded crops the face's place is known: "on the face" is the
   share whose chosen face overlaps it (IoU >= 0.4 with the labelled box). ms: finding the face and cropping one
   photo on one thread (decoded already). Then the demo photos prepared as the image cache does (decode, detect,
   crop, resize), on one thread and on every core.
2. Macro F1 on the real crops as they are (benchmarks/real_crops_f1.py: 64 px resnet18, folds grouped by source
   photo) with each face crop, the same training for all.

    python benchmarks/face_crop.py [--demo-people 80] [--epochs 6] [--folds 5] [--f1-modes center,face,aligned,none]
        [--skip-f1]

Needs ../shared/models (YuNet) and ../shared/data/face-mask-crops.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_crops_f1 import CROPS, crops_params, out_of_fold_f1  # noqa: E402  (sets the detector and offline mode)

from automl.data.demo import write_demo_data  # noqa: E402
from automl.data.face_crop import FaceCrop, LearnedPrior, crop_image, learn_prior, prepare_image  # noqa: E402
from automl.data.images import decode_image, is_image_file  # noqa: E402

DETECTORS = {"YuNet box": "face", "YuNet aligned": "aligned", "Haar": "haar"}
FRAME = 2.0  # the padded frame's side, in crop sides
#: The real crops have a 15% margin around the labelled face box (their SOURCE.md): the box is this share in.
CROP_MARGIN = 0.15 / 1.3
ON_FACE_IOU = 0.4


def pad_crops(table: pd.DataFrame, root: Path, out: Path) -> tuple[list[Path], list[tuple[float, ...]]]:
    """Each crop in the middle of a grey frame FRAME times its size, written to `out`; the true face box in it."""
    paths, boxes = [], []
    for k, row in enumerate(table.itertuples()):
        crop = decode_image(root / row.path)
        height, width = crop.shape[:2]
        frame = np.full((round(height * FRAME), round(width * FRAME), 3), 127, dtype=np.uint8)
        top, left = (frame.shape[0] - height) // 2, (frame.shape[1] - width) // 2
        frame[top : top + height, left : left + width] = crop
        path = out / f"{k:05d}.png"
        Image.fromarray(frame).save(path)
        paths.append(path)
        mx, my = CROP_MARGIN * width, CROP_MARGIN * height
        boxes.append((left + mx, top + my, left + width - mx, top + height - my))
    return paths, boxes


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def detection(photos: list[np.ndarray], crop: FaceCrop, truth: list[tuple[float, ...]] | None) -> dict[str, float]:
    """Found, on the face (with `truth`) and milliseconds per photo, on one thread."""
    start = time.perf_counter()
    results = [crop_image(photo, crop)[1] for photo in photos]
    seconds = time.perf_counter() - start
    found = [r.face is not None for r in results]
    figures = {"found": float(np.mean(found)), "ms": 1000 * seconds / len(photos)}
    if truth is not None:
        pairs = zip(results, truth, strict=True)
        hits = [r.face is not None and iou(r.face.box, box) >= ON_FACE_IOU for r, box in pairs]
        figures["on the face"] = float(np.mean(hits))
    return figures


def prepared_per_second(paths: list[Path], crop: FaceCrop, threads: int) -> float:
    """Photos decoded, detected, cropped and resized per second, as the image cache prepares them."""
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda path: prepare_image(path, 64, crop), paths))
    return len(paths) / (time.perf_counter() - start)


def describe(name: str, prior: LearnedPrior) -> str:
    return f"{name}: prior box {list(prior.box)} from {prior.faces} faces in {prior.sampled} sampled images"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", type=Path, default=CROPS)
    parser.add_argument("--demo-people", type=int, default=80)
    parser.add_argument("--margin", type=float, default=0.2)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--f1-modes", default="center,face,aligned,none")
    parser.add_argument("--skip-f1", action="store_true")
    args = parser.parse_args()
    print(f"face detector: {os.environ['AUTOML_FACE_DETECTOR']}; {os.cpu_count()} CPU cores", flush=True)

    rows = {name: {} for name in DETECTORS}
    with tempfile.TemporaryDirectory() as scratch:
        demo = write_demo_data(Path(scratch) / "demo", people=args.demo_people, seed=0, eval_people=0)
        demo_paths = sorted(p for p in (demo / "train" / "images").rglob("*") if is_image_file(p))
        padded_dir = Path(scratch) / "padded"
        padded_dir.mkdir()
        table = pd.read_csv(args.csv)
        padded_paths, truth = pad_crops(table, args.csv.parent, padded_dir)
        for data, paths, boxes in (("demo", demo_paths, None), ("padded crops", padded_paths, truth)):
            prior = learn_prior(paths)
            print(describe(f"{data} ({len(paths)} images)", prior), flush=True)
            photos = [decode_image(p) for p in paths]
            for name, mode in DETECTORS.items():
                figures = detection(photos, FaceCrop(mode, args.margin, prior.box), boxes)
                rows[name].update({f"{data}: {key}": value for key, value in figures.items()})
            if data == "demo":
                crop = FaceCrop("face", args.margin, prior.box)
                one, every = prepared_per_second(paths, crop, 1), prepared_per_second(paths, crop, os.cpu_count() or 1)
                print(f"demo photos prepared with face crop 'face' (decode, detect, crop, resize to 64 px): "
                      f"{one:.0f}/s on 1 thread, {every:.0f}/s on {os.cpu_count()} threads", flush=True)  # fmt: skip
    print()
    print(pd.DataFrame(rows).T.to_string(float_format=lambda v: f"{v:.3f}"))

    if args.skip_f1:
        return
    print(f"\nmacro F1 on the real crops ({args.folds} folds by source photo, {args.epochs} epochs, 64 px resnet18):")
    for mode in args.f1_modes.split(","):
        start = time.monotonic()
        params = crops_params(epochs=args.epochs, face_crop=mode)
        f1, baseline = out_of_fold_f1(args.csv, params, args.folds, report=lambda line: None)
        print(f"  face_crop {mode:8s} out-of-fold macro F1 {f1:.4f} (majority class {baseline:.3f}; "
              f"{time.monotonic() - start:.0f} s)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
