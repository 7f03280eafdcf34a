"""Commands about the data: the demo set, checking a data set, its folds, the image cache."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import typer
from rich.table import Table

from automl.atomic import write_csv_atomic
from automl.cli.app import (
    DataOptions,
    FaceDetectorOpt,
    app,
    console,
    ensure_face_detector,
    progress_bars,
    tracked,
    with_data_options,
)
from automl.data.cache import ImageSets, cache_root
from automl.data.crop_sheet import write_crop_sheet
from automl.data.dataset import load_dataset
from automl.data.demo import DEMO_DEFAULT_PEOPLE, write_demo_data
from automl.data.face_crop import DEFAULT_PICK, DEFAULT_THRESHOLD, FaceCrop, is_tight, learn_prior, prior_sample
from automl.data.folds import assign_folds, fold_class_counts
from automl.data.images import verify_images
from automl.data.label_noise import NOISE_FIELDS, NOISE_FILE, read_label_noise
from automl.errors import AutomlError


@app.command("demo-data")
def demo_data(
    directory: Annotated[Path, typer.Argument(help="Where to write the data set (must not exist yet).")],
    people: Annotated[int, typer.Option(help="How many people in train (7 photos each).", min=1)] = DEMO_DEFAULT_PEOPLE,
    seed: Annotated[int, typer.Option(help="The same seed writes the same files.")] = 0,
    label_noise: Annotated[
        float,
        typer.Option(help="Give this share of the people one wrong label each (0.05: 5%), listed in label_noise.csv."),
    ] = 0.0,
    noise_fields: Annotated[
        str, typer.Option(help="With --label-noise: the fields that take turns being wrong (gender, age, mask).")
    ] = ",".join(NOISE_FIELDS),
) -> None:
    """Write a synthetic data set in the competition layout: faces with mask, gender and age cues."""
    fields = tuple(f.strip() for f in noise_fields.split(",") if f.strip())
    with progress_bars() as progress:
        bar = progress.add_task("demo photos", total=None)
        write_demo_data(
            directory,
            people=people,
            seed=seed,
            progress=lambda d, t: progress.update(bar, completed=d, total=t),
            label_noise=label_noise,
            noise_fields=fields,
        )
    console.print(f"Wrote {people} people to {directory}. Try: automl check --data {directory}")
    if label_noise > 0:
        planted = read_label_noise(directory / NOISE_FILE)
        console.print(
            f"Planted {planted['person'].nunique()} people's wrong labels ({', '.join(fields)}): "
            f"{directory / NOISE_FILE} lists them"
        )


@app.command()
@with_data_options
def check(
    options: DataOptions,
    show_crops: Annotated[
        int | None,
        typer.Option(
            "--show-crops",
            help="Also draw the face crop of N training images into one PNG and print the detection rate.",
            min=1,
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="With --show-crops: the PNG to write. Default: <home>/crops/<data>-<mode>.png.", show_default=False
        ),
    ] = None,
    face_crop: Annotated[
        str, typer.Option(help="With --show-crops: the mode to show (none, center, face, aligned, haar).")
    ] = "face",
    face_crop_margin: Annotated[
        float, typer.Option(help="With --show-crops: share of the box added on each side, 0 to 1.")
    ] = 0.2,
    face_crop_box: Annotated[
        str | None,
        typer.Option(
            help="With --show-crops: the prior box x0,y0,x1,y1 as shares of the image (default: learned).",
            show_default=False,
        ),
    ] = None,
    face_crop_threshold: Annotated[
        float, typer.Option(help="With --show-crops: the lowest YuNet score that counts as a face.")
    ] = DEFAULT_THRESHOLD,
    face_crop_pick: Annotated[
        str, typer.Option(help="With --show-crops: of several faces, central (nearest the prior) or largest.")
    ] = DEFAULT_PICK,
    face_detector: FaceDetectorOpt = None,
) -> None:
    """Validate a data set (every row, every image decoded) and summarise people, images and classes."""
    crop = None
    if show_crops:
        box = _parse_box(face_crop_box)
        crop = FaceCrop(face_crop, face_crop_margin, box, face_crop_threshold, face_crop_pick)
        ensure_face_detector(face_detector, crop.needs_detector)
    dataset = load_dataset(options.source())
    paths = dataset.image_paths()
    with progress_bars() as progress:
        bar = progress.add_task("decoding images", total=len(paths))
        verify_images(paths, progress=lambda n: progress.advance(bar, n))

    console.print(f"[bold]{dataset.root}[/] ({dataset.layout} layout)")
    console.print(
        f"people (groups): {dataset.num_groups}   images: {len(dataset.train)}   "
        f"eval images: {0 if dataset.eval is None else len(dataset.eval)}"
    )
    for name, task in dataset.tasks.items():
        counts = np.bincount(task.labels(dataset.train), minlength=task.num_classes)
        table = Table(title=f"task {name}: {task.num_classes} classes", title_justify="left")
        table.add_column("class")
        table.add_column("images", justify="right")
        table.add_column("share", justify="right")
        for class_name, count in zip(task.classes, counts, strict=True):
            table.add_row(class_name, str(count), f"{count / counts.sum():.1%}")
        console.print(table)
    if dataset.fixes is not None:
        for line in dataset.fixes.lines():
            console.print(line, markup=False)
    notes = dataset.notes
    console.print(f"problems found: {len(notes) or 'none'}")
    for note in notes[:20]:
        console.print(f"  - {note}", markup=False)
    if len(notes) > 20:
        console.print(f"  ... and {len(notes) - 20} more")
    if crop is not None and show_crops is not None:
        target = out or options.home_dir / "crops" / f"{dataset.root.name}-{crop.mode}.png"
        _show_crops(list(dataset.train["path"]), show_crops, crop, target)


def _parse_box(text: str | None) -> tuple[float, float, float, float] | None:
    if text is None:
        return None
    try:
        box = tuple(float(v) for v in text.split(","))
    except ValueError:
        box = ()
    if len(box) != 4:
        raise AutomlError(f"--face-crop-box {text!r}: write four shares of the image x0,y0,x1,y1 like 0.2,0.1,0.8,0.7")
    return box  # type: ignore[return-value]


def _show_crops(paths: list[str], count: int, crop: FaceCrop, target: Path) -> None:
    """The crop contact sheet of `count` training images; the prior learned from the training images if not set."""
    if crop.mode != "none" and crop.box is None:
        with progress_bars() as progress:
            bar = progress.add_task("learning the prior box", total=len(prior_sample(len(paths))))
            prior = learn_prior(paths, progress=lambda n: progress.advance(bar, n))
        crop = replace(crop, box=prior.box)
        where = f"learned from {prior.faces} faces in {prior.sampled} sampled training images"
        if not prior.learned:
            where = f"the whole image: only {prior.faces} faces in {prior.sampled} sampled training images"
        console.print(f"prior box {list(prior.box)} ({where})", markup=False)
    with progress_bars() as progress:
        bar = progress.add_task("drawing crops", total=min(count, len(paths)))
        summary = write_crop_sheet(paths, count, crop, target, progress=lambda n: progress.advance(bar, n))
    if crop.mode == "haar" and is_tight(crop.prior):
        console.print(
            "the prior box covers most of the photo (the photos are face crops already, or too few faces were "
            "found to learn a prior), so 'haar' keeps the prior box instead of cropping to the cascade's boxes"
        )
    elif crop.mode != "none" and crop.mode != "center":
        console.print(
            f"face detected and used in {summary.detected} of {summary.images} images "
            f"({summary.detection_rate:.0%}); the others fell back to the prior box"
        )
    console.print(
        f"Wrote {target} ({crop.mode} crop, margin {crop.margin:g}: green = detected face, grey = prior box, "
        "blue = crop, orange = crop from the fallback)",
        markup=False,
    )


@app.command()
@with_data_options
def folds(
    task: Annotated[str, typer.Option(help="The task to stratify by (mask, gender, age, all, or a label column).")],
    out: Annotated[Path, typer.Option(help="The CSV to write: image_id, path, group, label, fold.")],
    options: DataOptions,
    n_folds: Annotated[int, typer.Option("--folds", help="Number of folds.")] = 5,
    seed: Annotated[int, typer.Option(help="The same seed gives the same folds on every machine.")] = 0,
) -> None:
    """Write the fold of every image: stratified by the task's label, no person in two folds."""
    dataset = load_dataset(options.source())
    chosen = dataset.task(task)
    codes = chosen.labels(dataset.train)
    fold_of = assign_folds(codes, dataset.train["group"].to_numpy(), n_folds, seed)
    table = dataset.train[["image_id", "path", "group"]].assign(label=np.asarray(chosen.classes)[codes], fold=fold_of)
    write_csv_atomic(table, out)

    counts = fold_class_counts(codes, fold_of, chosen.num_classes)
    view = Table(title=f"{n_folds} folds for task {task} (images per class)", title_justify="left")
    view.add_column("fold")
    view.add_column("people", justify="right")
    for class_name in chosen.classes:
        view.add_column(class_name, justify="right")
    groups = pd.Series(dataset.train["group"].to_numpy()).groupby(fold_of).nunique()
    for fold, row in enumerate(counts):
        view.add_row(str(fold), str(groups[fold]), *(f"{n} ({n / row.sum():.0%})" for n in row))
    console.print(view)
    console.print(f"Wrote {out}")


@app.command()
@with_data_options
def cache(
    options: DataOptions,
    task: Annotated[
        str, typer.Option(help="Cache for this task's search space (search_spaces/<task>.yaml).")
    ] = "generic",
    space: Annotated[
        Path | None, typer.Option(help="Cache for this search-space file instead.", show_default=False)
    ] = None,
    size: Annotated[
        int | None,
        typer.Option(help="Shorter side of the cached images, in pixels (default: the space's image_size).", min=8),
    ] = None,
    face_detector: FaceDetectorOpt = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="KEY=VALUE pins a parameter or setting, as in search.")
    ] = None,
) -> None:
    """Decode and resize every image once into the cache that trials and workers share.

    It fills the cache a search with the space will read: its image size, and every face crop it can draw.
    """
    from automl.search.space import default_space_path, load_space

    chosen = load_space(space or default_space_path(task), tuple(set_ or ()))
    ensure_face_detector(face_detector, chosen.needs_face_detector())
    image_size = size or chosen.settings.image_size
    dataset = load_dataset(options.source())
    train = list(dataset.train["path"])
    # The sets the search maps (the training images) and the export (the eval images), one file per face crop.
    parts = [("training", ImageSets(options.home_dir, image_size, train))]
    if dataset.eval is not None and not dataset.eval.empty:
        parts.append(("eval", ImageSets(options.home_dir, image_size, list(dataset.eval["path"]))))
    prior = None
    for crop in chosen.face_crops() or [FaceCrop()]:
        if crop.mode != "none" and crop.box is None:  # the prior box a study learns from the training images
            if prior is None:
                sampled = len(prior_sample(len(train)))
                prior = tracked("learning the prior box", sampled, lambda step: learn_prior(train, step)).box
            crop = replace(crop, box=prior)
        for what, images in parts:
            built = images.is_built(crop)
            with progress_bars() as progress:
                bar = progress.add_task(f"caching {what} images ({image_size} px, face crop {crop.mode})", total=None)
                images.get(crop, lambda done, total, bar=bar: progress.update(bar, completed=done, total=total))
            console.print(
                f"{image_size} px, face crop {crop.mode}, {len(images.paths)} {what} image(s): "
                + ("already cached" if built else "decoded"),
                markup=False,
            )
    console.print(f"cache: {cache_root(options.home_dir, image_size)}", markup=False)
