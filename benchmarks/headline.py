"""The headline: how long does `automl search --task age --trials 100` take on this machine, and its export?

Makes competition-size demo data (`automl demo-data --people 2700`: 18,900 training photos, timed), runs the shipped
age space (pretrained off: the compute is the same, and a GPU machine without internet cannot download weights) for
a fixed wall time with the chosen workers, and prints what it did and what a whole study would cost:

- trials complete / pruned / failed, fold-epochs trained, where the trials' time went (training epochs, validating,
  other);
- images per second trained, per backbone, against the same model fed from memory (the ceiling);
- GPU utilisation, sampled every second with `nvidia-smi` while the search runs;
- the projected wall time of a 100-trial study (fold-epochs a finished trial costs, at the seconds per fold-epoch
  seen) and of its export (the fold fits its plan trains, at the study's seconds per fold fit), the arithmetic shown.

    python benchmarks/headline.py [--people 2700] [--minutes 5] [--workers auto] [--work DIR]
    python benchmarks/headline.py --dry-run        # CPU, tiny: every step in a minute or two (the tests run it)
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from automl.export.plan import FIT_SHARE, search_fold_fits  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
#: The face detector's copy for tests and benchmarks (users download it); without it, no face crops are searched.
SHARED_YUNET = REPO.parent / "shared" / "models" / "face_detection_yunet_2026may.onnx"
AGE_SPACE = REPO / "search_spaces" / "age.yaml"
TARGET_TRIALS = 100
#: The dry run: a tiny age search on the CPU.
DRY = {
    "people": 12,
    "seconds": 40,
    "sets": ("image_size=32", "backbone=test_resnet", "max_epochs=2", "folds=2", "batch_size=16"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=2700)
    parser.add_argument("--minutes", type=float, default=5.0, help="wall time of the search")
    parser.add_argument("--workers", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="KEY=VALUE for the space")
    parser.add_argument("--work", type=Path, help="keep the data and the study here (default: a temporary folder)")
    parser.add_argument("--dry-run", action="store_true", help="tiny, on the CPU")
    args = parser.parse_args()
    people, seconds, overrides = args.people, args.minutes * 60, list(args.overrides)
    if args.dry_run:
        people, seconds, overrides, args.device = DRY["people"], DRY["seconds"], [*DRY["sets"], *overrides], "cpu"
    overrides = ["pretrained=false", *overrides]
    if "AUTOML_FACE_DETECTOR" not in os.environ and SHARED_YUNET.is_file():
        os.environ["AUTOML_FACE_DETECTOR"] = str(SHARED_YUNET)
    if "AUTOML_FACE_DETECTOR" not in os.environ:
        print(f"no face detector ({SHARED_YUNET} absent, AUTOML_FACE_DETECTOR unset): face_crop pinned to none")
        overrides.append("face_crop=none")

    work = args.work or Path(tempfile.mkdtemp(prefix="automl-headline-"))
    try:
        run(work, people, seconds, overrides, args.workers, args.device)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


def run(work: Path, people: int, seconds: float, overrides: list[str], workers: str, device: str) -> None:
    data, home = work / "demo", work / "home"
    started = time.monotonic()
    if not data.exists():
        automl("demo-data", data, "--people", people)
    print(f"demo data: {people} people, {7 * people} training photos, made in {time.monotonic() - started:.0f} s "
          f"on {os.cpu_count()} cores", flush=True)  # fmt: skip

    sets = [f"--set={o}" for o in overrides]
    search = ["search", "--task", "age", "--space", AGE_SPACE, "--data", data, "--home", home, "--trials",
              TARGET_TRIALS, "--workers", workers, "--device", device, "--timeout", seconds, *sets]  # fmt: skip
    started = time.monotonic()
    automl("cache", "--space", AGE_SPACE, "--data", data, "--home", home, *sets)
    print(f"image cache (every face crop of the space): {time.monotonic() - started:.0f} s", flush=True)

    sampler = GpuSampler()
    with sampler:
        process = subprocess.Popen(command(*search), cwd=REPO, stdout=subprocess.DEVNULL, start_new_session=True)
        try:
            # --timeout stops new trials; the running ones are interrupted at the window's end.
            process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGINT)
            process.wait(timeout=120)
    stopped = datetime.now()
    study = optuna.load_study(study_name="age", storage=f"sqlite:///{home / 'automl.db'}")
    report(study, stopped, sampler, overrides)
    ceilings(study, data, device)


def report(study: optuna.Study, stopped: datetime, sampler: GpuSampler, overrides: list[str]) -> None:
    trials = study.get_trials(deepcopy=False)
    if not trials:
        print("search: no trial started in the window; run longer")
        return
    wall = (stopped - min(t.datetime_start for t in trials)).total_seconds()  # from the first trial: start-up left out
    count = Counter(t.state for t in trials)
    epochs = int(study.user_attrs["settings"]["max_epochs"])
    folds = int(study.user_attrs["settings"]["folds"])
    fold_epochs = [sum(1 for step in t.intermediate_values if (step + 1) % (epochs + 1)) for t in trials]
    ended = (TrialState.COMPLETE, TrialState.PRUNED)
    finished = [n for t, n in zip(trials, fold_epochs, strict=True) if t.state in ended]
    print(f"\nsearch: {wall:.0f} s from the first trial's start, age space ({' '.join(overrides)}), {folds} folds "
          f"x up to {epochs} epochs")  # fmt: skip
    print(f"trials: {count[TrialState.COMPLETE]} complete, {count[TrialState.PRUNED]} pruned, "
          f"{count[TrialState.FAIL]} failed or cut at the end; {sum(fold_epochs)} fold-epochs trained")  # fmt: skip

    parts = ("training", "validating", "other")
    seconds = {key: sum(t.user_attrs.get("seconds", {}).get(key, 0.0) for t in trials) for key in parts}
    total = sum(seconds.values())
    if total > 0:
        shares = ", ".join(f"{key} {value / total:.1%}" for key, value in seconds.items())
        print(f"time shares of {total:.0f} s in trials: {shares}")

    by_backbone: dict[str, list[float]] = {}
    for trial in trials:
        backbone = str((trial.user_attrs.get("config") or {}).get("backbone"))
        by_backbone.setdefault(backbone, []).extend(trial.user_attrs.get("images_per_second", []))
    for backbone, rates in sorted(by_backbone.items()):
        if rates:
            print(f"  {backbone}: {np.mean(rates):.0f} images/s in training epochs ({len(rates)} folds)")

    utilisation = sampler.mean()
    if utilisation is None:
        print("GPU utilisation: no nvidia-smi (not a GPU machine)")
    else:
        print(f"GPU utilisation: {utilisation:.0f}% mean of {len(sampler.samples)} samples, 1 s apart")

    if not finished:
        print("projection: no trial finished in the window; run longer")
        return
    per_fold_epoch = wall / sum(fold_epochs)
    per_trial = float(np.mean(finished))
    hours = TARGET_TRIALS * per_trial * per_fold_epoch / 3600
    print(f"\nprojection of a {TARGET_TRIALS}-trial study: {TARGET_TRIALS} trials x {per_trial:.1f} fold-epochs per "
          f"finished trial x {per_fold_epoch:.2f} s per fold-epoch (wall, all workers) = {hours:.2f} h "
          "(goal: 2 h)")  # fmt: skip
    print("  (early trials are pruned less than a long study's later ones: fold-epochs per trial, and so the "
          "projection, lean high)")  # fmt: skip
    # The export's default plan trains at most FIT_SHARE of the search's fold fits (fewer when the search kept the
    # weights of the candidates it judges), each as long as a search fold.
    finished_trials = [t for t in trials if t.state in ended]
    fits_per_trial = search_fold_fits(finished_trials, epochs) / len(finished_trials)
    export_fits = int(FIT_SHARE * TARGET_TRIALS * fits_per_trial)
    per_fit = per_trial / fits_per_trial * per_fold_epoch
    print(f"projection of its export: at most {FIT_SHARE:.0%} x {TARGET_TRIALS} trials x {fits_per_trial:.1f} fold "
          f"fits per trial = {export_fits} fold fits x {per_fit:.0f} s = {export_fits * per_fit / 60:.1f} min, plus "
          "predicting the eval images (goal: 10 min)")  # fmt: skip


def ceilings(study: optuna.Study, data: Path, device: str, most: int = 3) -> None:
    """The most frequent backbones' training speed fed from memory, at the study's image size and batch size, by
    benchmarks/loader_efficiency.py (its "in memory" line: the ceiling of the images/s above)."""
    configs = [t.user_attrs["config"] for t in study.get_trials(deepcopy=False) if "config" in t.user_attrs]
    counts: dict[str, int] = {}
    for config in configs:
        counts[config["backbone"]] = counts.get(config["backbone"], 0) + 1
    backbones = sorted(counts, key=lambda name: -counts[name])[:most]
    if not backbones:
        return
    first = configs[0]
    measured = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "loader_efficiency.py"), "--data", str(data), "--backbone",
         ",".join(backbones), "--size", str(first["image_size"]), "--batch-size", str(first["batch_size"]),
         "--device", device, "--augment-device", "auto", "--steps", "10", "--rounds", "2"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    print(f"\nceiling (benchmarks/loader_efficiency.py, {first['image_size']} px, batch {first['batch_size']}):")
    print("\n".join(f"  {line}" for line in measured.splitlines() if line.strip()))


def automl(*args: object) -> None:
    subprocess.run(command(*args), cwd=REPO, check=True, stdout=subprocess.DEVNULL)


def command(*args: object) -> list[str]:
    return [sys.executable, "-m", "automl", *map(str, args)]


class GpuSampler:
    """`nvidia-smi`'s GPU utilisation, once a second, while active (nothing where there is no nvidia-smi)."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()

    def __enter__(self) -> GpuSampler:
        if shutil.which("nvidia-smi"):
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    def mean(self) -> float | None:
        return float(np.mean(self.samples)) if self.samples else None

    def _sample(self) -> None:
        query = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
        while not self._stop.wait(1.0):
            found = subprocess.run(query, capture_output=True, text=True).stdout.split()
            if found:
                self.samples.append(float(np.mean([float(v) for v in found])))


if __name__ == "__main__":
    main()
