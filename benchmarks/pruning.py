"""What does pruning save, and what does it cost? The same study twice, with the same sampler seed, on demo data:
once with the space's pruner (median by default), once with none.

Prints the epochs trained by each run, the share of epoch compute saved, and the best out-of-fold macro F1 of
each with their difference. Epochs are counted, not timed, so the figure does not depend on machine load.

    python benchmarks/pruning.py [--trials 16] [--people 60] [--pruner median] [--space search_spaces/quick.yaml]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from automl.data.dataset import DataSource  # noqa: E402
from automl.data.demo import write_demo_data  # noqa: E402
from automl.search.runner import SearchJob, count_trials, open_study, prepare, run_worker  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--people", type=int, default=60)
    parser.add_argument("--pruner", default="median")
    parser.add_argument("--space", type=Path, default=REPO / "search_spaces" / "quick.yaml")
    parser.add_argument("--task", default="age")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        data = write_demo_data(Path(scratch) / "demo", people=args.people, eval_people=0)
        results = {}
        for pruner in (args.pruner, "none"):
            job = SearchJob(
                source=DataSource(data), task=args.task, space_path=args.space, overrides=(f"pruner={pruner}",),
                home=Path(scratch) / pruner, storage_url=None, study_name=args.task, trials=args.trials, device="cpu",
            )  # fmt: skip
            space, study_data = prepare(job)
            started = time.perf_counter()
            run_worker(job, space, study_data)
            study, _ = open_study(job, space)
            block = space.settings.max_epochs + 1
            epochs = sum(
                sum(1 for step in t.intermediate_values if step % block != block - 1) for t in study.get_trials()
            )
            counts = count_trials(study)
            results[pruner] = (epochs, counts.best, counts.pruned, time.perf_counter() - started)
            print(
                f"pruner {pruner:>10}: {counts.finished} trials ({counts.pruned} pruned), {epochs} epochs trained, "
                f"best macro F1 {counts.best:.4f}, {results[pruner][3]:.0f} s",
                flush=True,
            )
        (pruned_epochs, pruned_best, _, _), (full_epochs, full_best, _, _) = results[args.pruner], results["none"]
        print(f"epoch compute saved by pruning: {1 - pruned_epochs / full_epochs:.1%}")
        print(f"best value difference (pruned - unpruned): {pruned_best - full_best:+.4f}")


if __name__ == "__main__":
    main()
