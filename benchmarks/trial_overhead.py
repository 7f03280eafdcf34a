"""Where a trial's time goes: training epochs, or everything else (set-up, validation, saving, the storage)?

Runs one quick search in this process (`automl search` on a fresh demo set, the quick space, no pruning so every
run trains the same folds) and times every call of the fold loop's `FoldRun.train_steps` (one training epoch) from
outside. Prints the trials' wall time (from the study), the seconds spent in training epochs, and the share of trial
time outside them; with a search that records its own time shares (automl search since the device-resident path),
those too. The same script runs on older commits, so a change's before and after come from one machine:

    python benchmarks/trial_overhead.py [--trials 6] [--people 40] [--set folds=3 ...] [--loader-workers N]
    PYTHONPATH=/path/to/old/checkout python benchmarks/trial_overhead.py     # the same on another commit

Timings on shared machines vary 30-40% from run to run: compare shares, and runs made back to back.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import optuna  # noqa: E402

import automl  # noqa: E402
from automl.cli import app  # noqa: E402
from automl.data.demo import write_demo_data  # noqa: E402
from automl.search.storage import default_storage_url  # noqa: E402
from automl.train import engine  # noqa: E402

QUICK = Path(__file__).resolve().parents[1] / "search_spaces" / "quick.yaml"
DEFAULT_SETS = ("folds=3", "max_epochs=3", "backbone=test_resnet", "pruner=none", "image_size=32")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--people", type=int, default=40)
    parser.add_argument("--set", dest="overrides", action="append", default=None,
                        help=f"KEY=VALUE for the quick space (default: {' '.join(DEFAULT_SETS)})")  # fmt: skip
    parser.add_argument("--loader-workers", type=int, default=None)
    args = parser.parse_args()
    overrides = args.overrides if args.overrides is not None else list(DEFAULT_SETS)

    epochs = EpochTimer()
    with tempfile.TemporaryDirectory() as scratch:
        data = write_demo_data(Path(scratch) / "demo", people=args.people, eval_people=0)
        home = Path(scratch) / "home"
        command = ["search", "--task", "mask", "--trials", str(args.trials), "--space", str(QUICK), "--data",
                   str(data), "--home", str(home), "--device", "cpu", *(f"--set={o}" for o in overrides)]  # fmt: skip
        if args.loader_workers is not None:
            command += ["--loader-workers", str(args.loader_workers)]
        with epochs:
            app(command, standalone_mode=False)
        study = optuna.load_study(study_name="mask", storage=default_storage_url(home))
        trials = [t for t in study.trials if t.datetime_complete is not None]
        total = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials)

    print(f"automl at {Path(automl.__file__).parent}")
    print(f"{len(trials)} trials of {QUICK.name} {' '.join(overrides)} on {args.people} people, CPU, "
          f"{os.cpu_count()} cores")  # fmt: skip
    print(f"trial time  {total:7.1f} s  (the study's start and end of every trial)")
    print(f"epochs      {epochs.seconds:7.1f} s  in {epochs.calls} training epochs (FoldRun.train_steps)")
    print(f"outside training epochs: {1 - epochs.seconds / total:.1%} of trial time")
    recorded = [t.user_attrs["seconds"] for t in trials if isinstance(t.user_attrs.get("seconds"), dict)]
    if recorded:
        sums = {key: sum(r[key] for r in recorded) for key in recorded[0]}
        shares = ", ".join(f"{key} {value / sums['total']:.1%}" for key, value in sums.items() if key != "total")
        print(f"recorded by the search: {shares} of {sums['total']:.1f} s")


class EpochTimer:
    """Times every `FoldRun.train_steps` call while active."""

    def __init__(self) -> None:
        self.seconds, self.calls = 0.0, 0

    def __enter__(self) -> EpochTimer:
        self.original = original = engine.FoldRun.train_steps

        def timed(run, *args, **kwargs):
            started = time.perf_counter()
            try:
                return original(run, *args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started
                self.calls += 1

        engine.FoldRun.train_steps = timed
        return self

    def __exit__(self, *exc: object) -> None:
        engine.FoldRun.train_steps = self.original


if __name__ == "__main__":
    main()
