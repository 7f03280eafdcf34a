"""Export methods against labels no choice saw: selection F1, honest (cross-fitted) F1 and held-out F1.

For each data set, task `mask`:

- demo data in the competition layout: the search and the export see the training people; the held-out figure
  is on the eval people, scored with `eval_truth.csv` (their true labels);
- the real face crops (`../shared/data/face-mask-crops`): a quarter of the source photos (grouped, stratified) is
  held out before anything else; the search and the export see the rest. With `--quarters 4` each quarter is held
  out in turn (four searches), and a last table pools the four: held-out F1 on every photo, each predicted by an
  export that never saw it, and the mean selection and honest F1. One quarter holds only ~17 photos of the rarest
  class (`incorrect`), so a single quarter's held-out F1 moves by several points with a photo or two.

`--seeds 0,1` draws the held-out data again (other quarters of the photos, other demo people; each draw its own
searches) and pools every draw's held-out sets in a last table per data set: twice the held-out predictions.

One small search (the fold weights of the top `--keep-top` trials kept, as a user's search keeps them), then one
export per design of the export, each with method and decision rule `auto` (chosen by the honest F1) unless said:
the best single trial's fold ensemble (the reference), repeats (every candidate judged on 3 cross-validation splits,
unbounded: the old default), 3, 2 (the default) or 1 splits with candidates within a tenth of the search's fold
fits, 2 splits for the shipped members only (candidates judged on the study's folds, room kept in the bound for the
members' second split), and a full refit (one model per member on every image). The designs share one store of
fold models (models are keyed by configuration, data, split and fold: a design reads back what an earlier one
trained, as a second export would); each row counts every fold model the design used that the search did not keep,
trained or read back: its cost from an empty store. Each row: those fold models of the study's split (and, in
brackets, of the other splits; their sum against the search's fold fits is the export's cost), its selection F1, its
honest F1, the macro F1 of its predictions on the held-out images, and that minus the best single trial's (the first
row), with the standard error of the difference by a bootstrap over the held-out people (demo) or source photos
(crops): a gap within about two of them is noise.

    python benchmarks/ensemble_selection.py [--trials 8] [--folds 3] [--size 32] [--epochs 3] [--demo-people 60]
        [--crops ../shared/data/face-mask-crops] [--quarters 1] [--data-sets demo,crops] [--seeds 0] [--work DIR]

The defaults are sized for a shared 2-core CPU (about 15 minutes for the demo data, 40 for the crops).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import f1_score  # noqa: E402
from sklearn.model_selection import StratifiedGroupKFold  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from automl.cli import app  # noqa: E402
from automl.data.dataset import DataSource, load_dataset  # noqa: E402
from automl.data.demo import write_demo_data  # noqa: E402
from automl.export.plan import search_fold_fits  # noqa: E402
from automl.export.predict import Predictor  # noqa: E402
from automl.export.runner import ExportJob, run_export  # noqa: E402
from automl.export.selection import AUTO  # noqa: E402
from automl.export.store import KEPT, STORE_DIR, STORED, FoldStore  # noqa: E402
from automl.search.storage import default_storage_url  # noqa: E402
from automl.train.metrics import macro_f1  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
QUICK = REPO / "search_spaces" / "quick.yaml"
TASK = "mask"


def _kept_is_kept(real: Callable) -> Callable:
    """FoldStore.fold_model saying "kept by the search" for a kept model read back from the store: the designs share
    the store, and a kept model costs no design a fit."""

    def fold_model(self, *args, **kwargs):
        model, source = real(self, *args, **kwargs)
        return model, KEPT if source == STORED and "kept_from" in model.record else source

    return fold_model


def _planned_from_empty(real: Callable) -> Callable:
    """FoldStore.to_train counting as if the store held only the search's kept models: each design plans (and so
    judges the candidates) as from an empty store, though it reads back what an earlier design trained."""

    def to_train(self, *args, **kwargs):
        self.stored = lambda *a, **k: None
        try:
            return real(self, *args, **kwargs)
        finally:
            del self.stored

    return to_train


FoldStore.fold_model = _kept_is_kept(FoldStore.fold_model)
FoldStore.to_train = _planned_from_empty(FoldStore.to_train)


def search(source: DataSource, home: Path, args: argparse.Namespace) -> None:
    sets = [
        f"folds={args.folds}", f"max_epochs={args.epochs}", f"image_size={args.size}", "pruner=none",
        "backbone=test_resnet", "patience=2",
    ]  # fmt: skip
    command = ["search", "--task", TASK, "--trials", str(args.trials), "--space", str(QUICK)]
    command += [x for s in sets for x in ("--set", s)]
    command += ["--keep-top", str(args.keep_top), "--data", str(source.path), "--home", str(home)]
    if source.group_column:
        command += ["--labels", TASK, "--group-column", source.group_column]
    result = CliRunner().invoke(app, command)
    if result.exit_code != 0:
        raise SystemExit(f"search failed:\n{result.output}\n{result.exception!r}")


#: (design, ExportJob options). The first row is the reference: the best single trial's fold ensemble.
DESIGNS = [
    ("best trial", {"method": "best_trial", "decision_rule": "off", "cv_repeats": 1}),
    ("repeats: cv 3, unbounded", {"cv_repeats": 3, "budget": 1e9}),
    ("cv 3, 10% of fits", {"cv_repeats": 3}),
    ("default: cv 2, 10% of fits", {}),
    ("cv 1, 10% of fits", {"cv_repeats": 1}),
    ("cv 2 for the shipped only, 10% of fits", {"cv_repeats": 2, "repeats_for": "shipped"}),
    ("full refit", {"mode": "full", "cv_repeats": 1, "budget": 1e9}),
]
HEADER = (
    "| design | method | decision rule | members | fold fits trained (+ other splits) | selection F1 | honest F1 "
    "| held-out F1 | held-out vs best trial (SE) |\n"
    "|---|---|---|---|---|---|---|---|---|"
)
#: Bootstrap draws over the held-out people for the standard error of a held-out F1 difference.
DRAWS = 1000


def gap_error(true: np.ndarray, first: np.ndarray, second: np.ndarray, people: np.ndarray) -> float:
    """Standard error of macro F1(first) - macro F1(second) on the same held-out images, by a bootstrap over people:
    how much of a held-out difference between two methods a new draw of people would move."""
    names, person = np.unique(people, return_inverse=True)
    rng = np.random.default_rng(0)
    gaps = []
    for _ in range(DRAWS):
        weights = np.bincount(rng.integers(0, len(names), len(names)), minlength=len(names))[person]
        gaps.append(
            f1_score(true, first, average="macro", sample_weight=weights, zero_division=0)
            - f1_score(true, second, average="macro", sample_weight=weights, zero_division=0)
        )
    return float(np.std(gaps))


@dataclass
class Row:
    """One export's figures, and its predictions on the held-out images (for pooling)."""

    design: str
    method: str
    rule: str
    members: int
    trained: int
    repeats_trained: int  # models of the other cross-validation splits, for the honest figure
    selection_f1: float
    honest_f1: float
    predicted: np.ndarray
    true: np.ndarray
    people: np.ndarray  # the person (or source photo) of each held-out image

    def line(self, best_trial: Row) -> str:
        """The row; its last column: its held-out F1 minus the best single trial's (argmax), with the gap's SE."""
        held_out = macro_f1(self.true, self.predicted)
        gap = held_out - macro_f1(self.true, best_trial.predicted)
        error = gap_error(self.true, self.predicted, best_trial.predicted, self.people)
        return (
            f"| {self.design} | {self.method} | {self.rule} | {self.members} "
            f"| {self.trained} (+{self.repeats_trained}) | "
            f"{self.selection_f1:.4f} | {self.honest_f1:.4f} | {held_out:.4f} | {gap:+.4f} ({error:.4f}) |"
        )


def compare(
    name: str, source: DataSource, held_paths: list[str], held_true: np.ndarray, people: np.ndarray, home: Path, args
) -> list[Row]:
    started = time.perf_counter()
    search(source, home, args)
    study = optuna.load_study(study_name=TASK, storage=default_storage_url(home))
    epochs = int(study.user_attrs["settings"]["max_epochs"])
    fits = search_fold_fits(study.get_trials(deepcopy=False), epochs)
    print(f"\n## {name}: {args.trials} trials x {args.folds} folds searched in {time.perf_counter() - started:.0f} s "
          f"({fits} fold fits; weights kept for the top {args.keep_top})")  # fmt: skip
    print(f"held-out images: {len(held_paths)}, classes {np.bincount(held_true).tolist()}\n")
    print(HEADER)
    rows = []
    shutil.rmtree(home / STORE_DIR, ignore_errors=True)  # only the search's models exist before the first design
    for design, options in DESIGNS:
        out = home / "exports" / design.split(":")[0].replace(" ", "-").replace(",", "")
        job = ExportJob(source=source, task=TASK, home=home, out=out, device="cpu", **options)
        result = run_export(job)
        method = job.method
        e = result.info.ensemble
        predictor = Predictor(out, "cpu")
        predicted = predictor.decide(predictor.predict_files([Path(p) for p in held_paths]))
        rule_used = "on" if e.decision_rule else "off"
        label = (f"{method} -> {e.selection}", f"auto -> {rule_used}") if method == AUTO else (method, rule_used)
        rows.append(
            Row(
                design,
                *label,
                len(e.members),
                result.trained + result.reused,  # read back: trained by an earlier design, or would be
                result.repeats_trained + result.repeats_cached,
                e.selection_f1,
                e.honest_f1,
                predicted,
                held_true,
                people,
            )  # fmt: skip
        )
        print(rows[-1].line(rows[0]), flush=True)
    return rows


def pooled(name: str, runs: list[list[Row]]) -> None:
    """Each method over every held-out set: held-out F1 of all their predictions, mean selection/honest F1."""
    what = "held-out F1 of every prediction; selection, honest F1: the mean"
    print(f"\n## {name}: {len(runs)} held-out sets pooled ({what})\n")
    print(HEADER)
    merged = []
    for index in range(len(DESIGNS)):
        rows = [run[index] for run in runs]
        both = Row(
            design=DESIGNS[index][0],
            method=" / ".join(dict.fromkeys(r.method for r in rows)),  # auto: what each run chose
            rule=" / ".join(dict.fromkeys(r.rule for r in rows)),
            members=round(float(np.mean([r.members for r in rows]))),
            trained=sum(r.trained for r in rows),
            repeats_trained=sum(r.repeats_trained for r in rows),
            selection_f1=float(np.mean([r.selection_f1 for r in rows])),
            honest_f1=float(np.mean([r.honest_f1 for r in rows])),
            predicted=np.concatenate([r.predicted for r in rows]),
            true=np.concatenate([r.true for r in rows]),
            people=np.concatenate([r.people for r in rows]),
        )
        merged.append(both)
        print(both.line(merged[0]))


def demo(work: Path, args: argparse.Namespace, seed: int) -> list[list[Row]]:
    root = work / "demo"
    if not root.exists():  # a --work kept from an earlier run: the same data, its search already done
        write_demo_data(root, people=args.demo_people, seed=11 + seed, eval_people=args.demo_people // 3)
    source = DataSource(root)
    dataset = load_dataset(source)
    truth = pd.read_csv(root / "eval_truth.csv", dtype={"ImageID": str}).set_index("ImageID")
    task = dataset.task(TASK)
    true = truth.loc[dataset.eval["image_id"], TASK].map({c: i for i, c in enumerate(task.classes)}).to_numpy()
    paths = list(dataset.eval["path"])
    # Another draw's people are other people, whatever their ids.
    people = truth.loc[dataset.eval["image_id"], "person"].map(f"draw {seed}: {{}}".format).to_numpy()
    name = f"demo data (eval people, eval_truth.csv{f'; draw {seed}' if seed else ''})"
    return [compare(name, source, paths, true, people, work / "home-demo", args)]


def crops(work: Path, args: argparse.Namespace, seed: int) -> list[list[Row]]:
    folder = Path(args.crops).absolute()
    if not (folder / "labels.csv").is_file():
        raise SystemExit(f"{folder}: no labels.csv here; pass the face crops folder with --crops")
    table = pd.read_csv(folder / "labels.csv")
    # A quarter of the source photos held out, stratified by mask status: never searched, never exported on.
    split = StratifiedGroupKFold(n_splits=4, shuffle=True, random_state=seed)
    quarters = list(split.split(table, table[TASK], table["group"]))[: args.quarters]
    return [crops_quarter(work, args, folder, table, seed, q, *rows) for q, rows in enumerate(quarters)]


def crops_quarter(
    work: Path,
    args: argparse.Namespace,
    folder: Path,
    table: pd.DataFrame,
    seed: int,
    quarter: int,
    train_rows: np.ndarray,
    held_rows: np.ndarray,
) -> list[Row]:
    data = work / f"crops-q{quarter}"
    data.mkdir(parents=True, exist_ok=True)
    if not (data / "images").exists():
        (data / "images").symlink_to(folder)
    searched = table.iloc[train_rows].assign(path=lambda t: "images/" + t["path"])
    searched[["path", TASK, "group"]].to_csv(data / "labels.csv", index=False)
    source = DataSource(data / "labels.csv", group_column="group", label_columns=(TASK,))
    held = table.iloc[held_rows]
    classes = load_dataset(source).task(TASK).classes
    true = held[TASK].map({c: i for i, c in enumerate(classes)}).to_numpy()
    paths = [str(folder / p) for p in held["path"]]
    name = f"face-mask-crops (quarter {quarter + 1} of the photos held out{f', draw {seed}' if seed else ''})"
    people = held["group"].to_numpy()
    return compare(name, source, paths, true, people, work / f"home-crops-q{quarter}", args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--keep-top", type=int, default=3, help="the search's --keep-top (its default: 3)")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--demo-people", type=int, default=60)
    parser.add_argument("--crops", default=str(REPO.parent / "shared" / "data" / "face-mask-crops"))
    parser.add_argument("--quarters", type=int, choices=range(1, 5), default=1, help="crops: hold out each in turn")
    parser.add_argument("--data-sets", default="demo,crops")
    parser.add_argument(
        "--seeds", default="0",
        help="Draws of the held-out data (the crops' quarters, the demo people), pooled: e.g. 0,1. Draw 0 is kept in "
        "--work, another draw N in --work/drawN.",
    )  # fmt: skip
    parser.add_argument(
        "--work", type=Path, default=None,
        help="Keep the data, studies and exports here; run again with the same folder to redo only the exports.",
    )  # fmt: skip
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        for name in args.data_sets.split(","):
            runs = []
            for seed in (int(s) for s in args.seeds.split(",")):
                runs += {"demo": demo, "crops": crops}[name](work / f"draw{seed}" if seed else work, args, seed)
            if len(runs) > 1:
                pooled({"demo": "demo data", "crops": "face-mask-crops"}[name], runs)


if __name__ == "__main__":
    main()
