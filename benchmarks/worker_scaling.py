"""Trial throughput with 1, 2 and 4 local workers on one study: does adding workers finish a study sooner?

Each run is `automl search --workers N` on a fresh study (the same demo data, the quick space), timed from the
first trial's start to the last trial's end (so process start-up and image caching are left out), and printed
as trials per minute with the speed-up over one worker. On a CPU machine the workers share its cores, so the
speed-up is bounded by the cores; on a GPU server each worker has a GPU. The figures depend on machine load:
run it on an idle machine.

    python benchmarks/worker_scaling.py [--trials 24] [--people 16] [--workers 1,2,4] [--storage URL]
        [--set folds=2 --set max_epochs=1 ...]

With --storage (a PostgreSQL URL), each run uses a study of its own in that database. With --keep DIR, the demo
data (DIR/demo) and each run's home (DIR/homeN, study scaling-N) stay for a look afterwards.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import optuna  # noqa: E402

from automl.data.demo import write_demo_data  # noqa: E402
from automl.search.storage import default_storage_url, redact  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--people", type=int, default=16)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--space", type=Path, default=REPO / "search_spaces" / "quick.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--storage", default=None)
    parser.add_argument("--keep", type=Path, help="keep the demo data and the studies in this folder")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as temporary:
        scratch = args.keep or temporary
        data = write_demo_data(Path(scratch) / "demo", people=args.people, eval_people=0)
        base = None
        print(
            f"{args.trials} trials of {args.space.name} {' '.join(args.overrides)} on {args.people} people, "
            f"storage {redact(args.storage) if args.storage else 'sqlite (default)'}, {os.cpu_count()} CPU cores"
        )
        for workers in args.workers.split(","):
            home = Path(scratch) / f"home{workers}"
            name = f"scaling-{workers}" if args.keep else f"scaling-{workers}-{int(time.time())}"
            command = [
                sys.executable, "-m", "automl", "search", "--task", "mask", "--study", name, "--trials",
                str(args.trials), "--workers", workers, "--space", str(args.space), "--data", str(data),
                "--home", str(home), *(f"--set={o}" for o in args.overrides),
                *(["--storage", args.storage] if args.storage else []),
            ]  # fmt: skip
            started = time.monotonic()
            subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
            wall = time.monotonic() - started
            study = optuna.load_study(study_name=name, storage=args.storage or default_storage_url(home))
            trials = [t for t in study.trials if t.datetime_complete is not None]
            span = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
            finished = sum(t.state.is_finished() and t.state != optuna.trial.TrialState.FAIL for t in trials)
            per_minute = finished / span * 60
            base = base or per_minute
            print(
                f"workers {workers}: {finished} trials in {span:.1f} s ({wall:.1f} s with start-up): "
                f"{per_minute:.1f} trials/minute, x{per_minute / base:.2f} of 1 worker"
            )


if __name__ == "__main__":
    main()
