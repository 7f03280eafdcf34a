"""What does each pruner save, and what does it cost? The same study once per pruner and once unpruned, with the
same seed, on demo data and on the real face crops, repeated over seeds.

Per seed the unpruned study runs once and every pruner is compared with it. Prints, per data set and pruner, the
epochs trained, the share of epoch compute saved, the trials that completed (what an export can ensemble; every
pruner waits for the space's `pruner_min_complete`, 3 unless `--min-complete`), the best out-of-fold macro F1 and its
difference from the unpruned study, and the macro F1 of the top-3 vote: the mean out-of-fold probabilities of the
three best complete trials (fewer when fewer completed), what the export's default ensemble starts from. Both F1
figures are selection scores (trials picked on the labels they are scored on), compared like with like. Mean and
[min, max] over the seeds. Epochs are counted, not timed, so the figures do not depend on machine load.

- demo: `--people` people of demo data, task age, `benchmarks/spaces/pruning_realistic.yaml` (5 folds x 10 epochs,
  tiny models, 32 px), seeds `--seeds`;
- crops: the 1,783 real face crops of ../shared (task mask, grouped by source photo),
  `benchmarks/spaces/pruning_crops.yaml` (3 folds x 4 epochs, 32 px), seeds `--crops-seeds`.

    python benchmarks/pruning.py [--datasets demo crops] [--trials 12] [--seeds 0 1] [--crops-seeds 0 1]
                                 [--pruners median median/3 ...] [--min-complete 3]

About 25 minutes on 2 busy cores with the defaults (one process per data set and seed, one thread each).

Every trial is a real trial of a real study (a real sampler, pruner and training). Training is deterministic on
the CPU (same parameters, fold and seed: the same weights), so a fold that an earlier study of the same seed
trained with exactly the same parameters (TPE's first, random trials are the same under every pruner) is
replayed from its recorded learning curve, epoch by epoch through the pruner, instead of trained again; it
counts as trained. `--no-replay` trains everything.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from automl.data.dataset import DataSource  # noqa: E402
from automl.data.demo import write_demo_data  # noqa: E402
from automl.data.study import StudyData  # noqa: E402
from automl.search import objective  # noqa: E402
from automl.search.artifacts import TRIAL_OOF_FILE, find_artifact  # noqa: E402
from automl.search.pruning import PRUNERS  # noqa: E402
from automl.search.ranking import best_trials  # noqa: E402
from automl.search.runner import SearchJob, count_trials, open_study, prepare, run_worker  # noqa: E402
from automl.train.engine import EpochCallback, FoldData, FoldResult, train_fold  # noqa: E402
from automl.train.metrics import macro_f1  # noqa: E402
from automl.train.params import TrainParams  # noqa: E402
from automl.train.session import TrainSession  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CROPS = REPO.parent / "shared" / "data" / "face-mask-crops" / "labels.csv"
#: The trials the vote takes: the export's default `--top-k`.
VOTE = 3


@dataclass(frozen=True)
class Bench:
    """One data set of the benchmark: where it is, its task and the space searched on it."""

    name: str
    source: DataSource
    task: str
    space: Path


class FoldReplay:
    """`train_fold`, remembering each finished fold by (parameters, folds, labels) and replaying a repeat."""

    def __init__(self) -> None:
        self.done: dict[tuple, FoldResult] = {}
        self.replayed = 0

    def __call__(
        self, data: FoldData, params: TrainParams, session: TrainSession, on_epoch: EpochCallback | None = None
    ) -> FoldResult:
        key = (repr(params), data.val_index.tobytes(), data.train_labels.tobytes())
        result = self.done.get(key)
        if result is None:
            result = self.done[key] = train_fold(data, params, session, on_epoch)
            return result
        for record in result.curve:
            if on_epoch is not None:
                on_epoch(record.epoch, record.val_f1)  # the pruner decides exactly as after a real epoch
            self.replayed += 1
        return result


def run_study(args: argparse.Namespace, bench: Bench, home: Path, pruner: str, seed: int) -> dict[str, float]:
    """`pruner` is a name, or a name with its warm-up: `median/3`."""
    name, _, warmup = pruner.partition("/")
    overrides = (f"pruner={name}", f"seed={seed}", *([f"pruner_warmup_epochs={warmup}"] if warmup else []))
    if args.min_complete is not None:
        overrides += (f"pruner_min_complete={args.min_complete}",)
    job = SearchJob(
        source=bench.source, task=bench.task, space_path=bench.space, overrides=overrides,
        home=home, storage_url=None, study_name=f"{pruner.replace('/', '-')}-seed{seed}", trials=args.trials,
        device="cpu",
    )  # fmt: skip
    space, study_data = prepare(job)
    started = time.perf_counter()
    run_worker(job, space, study_data)
    study, storage = open_study(job, space)
    block = space.settings.max_epochs + 1
    epochs = sum(sum(1 for step in t.intermediate_values if step % block != block - 1) for t in study.get_trials())
    counts = count_trials(study)
    if counts.failed:
        raise SystemExit(f"{bench.name} {pruner} seed {seed}: {counts.failed} trials failed: {counts.failures[:3]}")
    return {
        "epochs": epochs, "best": counts.best, "pruned": counts.pruned, "complete": counts.complete,
        "vote": top_vote_f1(study, home, study_data), "seconds": time.perf_counter() - started,
    }  # fmt: skip


def top_vote_f1(study: optuna.Study, home: Path, data: StudyData) -> float:
    """Macro F1 of the mean out-of-fold probabilities of the study's `VOTE` best complete trials."""
    ids = data.dataset.train["image_id"]
    probs = []
    for trial in best_trials(study, VOTE):
        path = find_artifact(home, trial, TRIAL_OOF_FILE)
        if path is None:
            raise SystemExit(f"trial {trial.number} of {study.study_name} kept no {TRIAL_OOF_FILE}")
        table = pd.read_csv(path).set_index("image_id").reindex(ids)
        probs.append(table[list(data.task.classes)].to_numpy())
    return macro_f1(data.true_labels, np.mean(probs, axis=0).argmax(1))


def compare_on_seed(args: argparse.Namespace, bench: Bench, home: Path, seed: int) -> dict[str, dict[str, float]]:
    """The unpruned study, then one study per pruner, all with sampler seed `seed`."""
    replay = FoldReplay()
    if not args.no_replay:
        objective.train_fold = replay  # type: ignore[assignment]
    runs: dict[str, dict[str, float]] = {}
    for pruner in ("none", *args.pruners):
        before = replay.replayed
        run = runs[pruner] = run_study(args, bench, home, pruner, seed)
        run["saved"] = 1 - run["epochs"] / runs["none"]["epochs"]
        run["difference"] = run["best"] - runs["none"]["best"]
        print(
            f"{bench.name} seed {seed} {pruner:>10}: {run['epochs']} epochs ({run['saved']:.1%} saved, "
            f"{run['pruned']} of {args.trials} trials pruned, {run['complete']} complete), best {run['best']:.4f} "
            f"({run['difference']:+.4f}), top-{VOTE} vote {run['vote']:.4f}, {run['seconds']:.0f} s, "
            f"{replay.replayed - before} epochs replayed",
            flush=True,
        )
    return runs


def spread(values: list[float], form: str) -> str:
    return f"{format(np.mean(values), form)} [{format(min(values), form)}, {format(max(values), form)}]"


def benches(args: argparse.Namespace, scratch: Path) -> dict[str, tuple[Bench, list[int]]]:
    """The data sets asked for, each with its seeds."""
    made: dict[str, tuple[Bench, list[int]]] = {}
    if "demo" in args.datasets:
        data = write_demo_data(scratch / "demo", people=args.people, eval_people=0)
        space = REPO / "benchmarks" / "spaces" / "pruning_realistic.yaml"
        made["demo"] = Bench("demo", DataSource(data), "age", space), args.seeds
    if "crops" in args.datasets:
        source = DataSource(args.crops, label_columns=("mask",), group_column="group")
        made["crops"] = (
            Bench("crops", source, "mask", REPO / "benchmarks" / "spaces" / "pruning_crops.yaml"),
            (args.crops_seeds),
        )
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", choices=["demo", "crops"], default=["demo", "crops"])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds of the demo studies")
    parser.add_argument("--crops-seeds", type=int, nargs="+", default=[0, 1], help="seeds of the face-crop studies")
    parser.add_argument("--people", type=int, default=30)
    parser.add_argument("--crops", type=Path, default=CROPS, help="the face crops' labels.csv")
    parser.add_argument(
        "--pruners", nargs="+", default=[p for p in PRUNERS if p != "none"],
        help="pruner names, each optionally with its warm-up epochs instead of the space's: median/3",
    )  # fmt: skip
    parser.add_argument("--min-complete", type=int, help="pruner_min_complete instead of the space's (3)")
    parser.add_argument("--no-replay", action="store_true", help="train every fold, even an exact repeat")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        made = benches(args, Path(scratch))
        for bench, seeds in made.values():
            print(f"{bench.name}: task {bench.task}, {bench.space.name}, {args.trials} trials, seeds {seeds}")
        results: dict[str, dict[str, list[dict[str, float]]]] = {
            name: {p: [] for p in ("none", *args.pruners)} for name in made
        }
        # One process per data set and seed, one thread each: on a busy machine two threads per process wait on
        # each other.
        spawn = multiprocessing.get_context("spawn")
        jobs = [(bench, seed) for bench, seeds in made.values() for seed in seeds]
        with ProcessPoolExecutor(len(jobs), mp_context=spawn, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            futures = [
                (bench.name, pool.submit(compare_on_seed, args, bench, Path(scratch) / f"{bench.name}-seed{s}", s))
                for bench, s in jobs
            ]
            for name, future in futures:
                for pruner, run in future.result().items():
                    results[name][pruner].append(run)
    for name, (bench, seeds) in made.items():
        print_table(bench, seeds, args, results[name])


def print_table(bench: Bench, seeds: list[int], args: argparse.Namespace, results: dict[str, list[dict]]) -> None:
    print(
        f"\n{bench.name} ({bench.space.name}, task {bench.task}): {args.trials} trials, seeds {seeds}; mean "
        f"[min, max] over the seeds; difference: best pruned - best unpruned (same seed); top-{VOTE} vote: macro F1 "
        f"of the mean probabilities of the {VOTE} best complete trials"
    )
    print(
        f"{'pruner':>10} | {'epochs trained':>18} | {'saved %':>18} | {'complete':>17} | {'best macro F1':>24} | "
        f"{'difference':>26} | {f'top-{VOTE} vote F1':>24}"
    )
    for pruner, runs in results.items():
        print(
            f"{pruner:>10} | {spread([r['epochs'] for r in runs], '.0f'):>18} | "
            f"{spread([100 * r['saved'] for r in runs], '.1f'):>18} | "
            f"{spread([r['complete'] for r in runs], '.1f'):>17} | {spread([r['best'] for r in runs], '.4f'):>24} "
            f"| {spread([r['difference'] for r in runs], '+.4f'):>26} | {spread([r['vote'] for r in runs], '.4f'):>24}"
        )


if __name__ == "__main__":
    main()
