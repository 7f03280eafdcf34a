"""What does each pruner save, and what does it cost? The same study once per pruner and once unpruned, with the
same seed, on demo data, repeated over seeds.

Per seed the unpruned study runs once and every pruner is compared with it. Prints, per pruner, the epochs
trained, the share of epoch compute saved, the best out-of-fold macro F1 and its difference from the unpruned
study, as the mean and [min, max] over the seeds. Epochs are counted, not timed, so the figures do not depend on
machine load. The default space is the realistic horizon (5 folds x 10 epochs; tiny models, 32 px):

    python benchmarks/pruning.py [--trials 24] [--seeds 0 1 2] [--people 30] [--pruners median median/3 ...]
                                 [--space benchmarks/spaces/pruning_realistic.yaml]

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
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from automl.data.dataset import DataSource  # noqa: E402
from automl.data.demo import write_demo_data  # noqa: E402
from automl.search import objective  # noqa: E402
from automl.search.pruning import PRUNERS  # noqa: E402
from automl.search.runner import SearchJob, count_trials, open_study, prepare, run_worker  # noqa: E402
from automl.train.engine import EpochCallback, FoldData, FoldResult, train_fold  # noqa: E402
from automl.train.params import TrainParams  # noqa: E402
from automl.train.session import TrainSession  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


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


def run_study(args: argparse.Namespace, data: Path, home: Path, pruner: str, seed: int) -> dict[str, float]:
    """`pruner` is a name, or a name with its warm-up: `median/3`."""
    name, _, warmup = pruner.partition("/")
    overrides = (f"pruner={name}", f"seed={seed}", *([f"pruner_warmup_epochs={warmup}"] if warmup else []))
    job = SearchJob(
        source=DataSource(data), task=args.task, space_path=args.space, overrides=overrides,
        home=home, storage_url=None, study_name=f"{pruner.replace('/', '-')}-seed{seed}", trials=args.trials,
        device="cpu",
    )  # fmt: skip
    space, study_data = prepare(job)
    started = time.perf_counter()
    run_worker(job, space, study_data)
    study, _ = open_study(job, space)
    block = space.settings.max_epochs + 1
    epochs = sum(sum(1 for step in t.intermediate_values if step % block != block - 1) for t in study.get_trials())
    counts = count_trials(study)
    if counts.failed:
        raise SystemExit(f"{pruner} seed {seed}: {counts.failed} trials failed: {counts.failures[:3]}")
    return {"epochs": epochs, "best": counts.best, "pruned": counts.pruned, "seconds": time.perf_counter() - started}


def compare_on_seed(args: argparse.Namespace, data: Path, home: Path, seed: int) -> dict[str, dict[str, float]]:
    """The unpruned study, then one study per pruner, all with sampler seed `seed`."""
    replay = FoldReplay()
    if not args.no_replay:
        objective.train_fold = replay  # type: ignore[assignment]
    unpruned = run_study(args, data, home, "none", seed)
    unpruned["saved"] = unpruned["difference"] = 0.0
    print(
        f"seed {seed} {'none':>10}: {unpruned['epochs']} epochs, best {unpruned['best']:.4f}, "
        f"{unpruned['seconds']:.0f} s",
        flush=True,
    )
    runs = {"none": unpruned}
    for pruner in args.pruners:
        before = replay.replayed
        run = runs[pruner] = run_study(args, data, home, pruner, seed)
        run["saved"] = 1 - run["epochs"] / unpruned["epochs"]
        run["difference"] = run["best"] - unpruned["best"]
        print(
            f"seed {seed} {pruner:>10}: {run['epochs']} epochs ({run['saved']:.1%} saved, "
            f"{run['pruned']} of {args.trials} trials pruned), best {run['best']:.4f} "
            f"({run['difference']:+.4f}), {run['seconds']:.0f} s, {replay.replayed - before} epochs replayed",
            flush=True,
        )
    return runs


def spread(values: list[float], form: str) -> str:
    return f"{format(np.mean(values), form)} [{format(min(values), form)}, {format(max(values), form)}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--people", type=int, default=30)
    parser.add_argument(
        "--pruners", nargs="+", default=[p for p in PRUNERS if p != "none"],
        help="pruner names, each optionally with its warm-up epochs instead of the space's: median/3",
    )  # fmt: skip
    parser.add_argument("--space", type=Path, default=REPO / "benchmarks" / "spaces" / "pruning_realistic.yaml")
    parser.add_argument("--task", default="age")
    parser.add_argument("--no-replay", action="store_true", help="train every fold, even an exact repeat")
    args = parser.parse_args()

    results: dict[str, list[dict[str, float]]] = {p: [] for p in ("none", *args.pruners)}
    with tempfile.TemporaryDirectory() as scratch:
        data = write_demo_data(Path(scratch) / "demo", people=args.people, eval_people=0)
        # One process per seed, one thread each: on a busy machine two threads per process wait on each other.
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            len(args.seeds), mp_context=spawn, initializer=torch.set_num_threads, initargs=(1,)
        ) as pool:
            futures = [pool.submit(compare_on_seed, args, data, Path(scratch) / f"seed{s}", s) for s in args.seeds]
            for future in futures:
                for pruner, run in future.result().items():
                    results[pruner].append(run)
    print(
        f"\n{args.space.name}: {args.trials} trials, {args.task}, {args.people} people, seeds {args.seeds}; "
        "mean [min, max] over the seeds; difference: best pruned - best unpruned (same seed)"
    )
    print(f"{'pruner':>10} | {'epochs trained':>22} | {'saved':>24} | {'best macro F1':>26} | {'difference':>28}")
    for pruner, runs in results.items():
        print(
            f"{pruner:>10} | {spread([r['epochs'] for r in runs], '.0f'):>22} | "
            f"{spread([100 * r['saved'] for r in runs], '.1f'):>24} | {spread([r['best'] for r in runs], '.4f'):>26} "
            f"| {spread([r['difference'] for r in runs], '+.4f'):>28}"
        )


if __name__ == "__main__":
    main()
