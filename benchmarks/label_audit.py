"""Does the label audit find planted mislabelled people? Demo data with a known share of people given one wrong
label of the audited task, a small search, then `automl audit`'s ranking of the people.

Prints the planted people, the search's best out-of-fold macro F1 (on the given, noisy labels: the labels are all
the search knows), and the precision and recall of the audit's top-k people at k = the number planted, plus those
of everything it flagged. The defaults take about 6 minutes on 2 idle CPU cores.

    python benchmarks/label_audit.py [--task mask] [--people 200] [--noise 0.05] [--trials 1] [--keep DIR]
                                     [--set KEY=VALUE]...
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# face_crop=face detects with YuNet: the shared copy, as `--face-detector` would give it (users download it).
SHARED_YUNET = Path(__file__).resolve().parents[2] / "shared" / "models" / "face_detection_yunet_2026may.onnx"
os.environ.setdefault("AUTOML_FACE_DETECTOR", str(SHARED_YUNET))

from automl.data.dataset import DataSource  # noqa: E402
from automl.data.demo import write_demo_data  # noqa: E402
from automl.data.label_noise import NOISE_FILE, read_label_noise  # noqa: E402
from automl.report.audit import precision_recall_at_k  # noqa: E402
from automl.report.audit_run import run_audit  # noqa: E402
from automl.report.inputs import StudyRef  # noqa: E402
from automl.search.runner import (  # noqa: E402
    SearchJob,
    check_study_matches,
    count_trials,
    open_study,
    prepare,
    run_worker,
)

REPO = Path(__file__).resolve().parents[1]
# A fixed small configuration: a ResNet-18 from scratch on the detected face at 48 px, class-balanced sampling
# (incorrect and not_wear are 1/7 of the photos each), 3 person-grouped folds so that every image gets an out-of-fold
# prediction from models that never saw its person. At 32 px on the whole photo (resnet10t, 2 folds, 10 epochs) the
# models reach only ~0.63 macro F1 and their own mistakes drown the planted ones.
FIXED = (
    "folds=3", "max_epochs=15", "patience=15", "image_size=48", "face_crop=face", "backbone=resnet18", "loss=ce",
    "label_smoothing=0.0", "optimizer=adamw", "lr=0.001", "sampler=weighted", "sampler_power=1.0", "hflip=0.5",
    "mix=none",
)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="mask", choices=("mask", "gender", "age"))
    parser.add_argument("--people", type=int, default=200)
    parser.add_argument("--noise", type=float, default=0.05)
    parser.add_argument("--trials", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="work in this new folder and keep it (data, study, audit)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="KEY=VALUE over the fixed config")
    args = parser.parse_args()

    started = time.perf_counter()
    with contextlib.nullcontext(args.keep) if args.keep else tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        data = write_demo_data(
            root / "demo", people=args.people, seed=args.seed, eval_people=0, label_noise=args.noise,
            noise_fields=(args.task,),
        )  # fmt: skip
        planted = set(read_label_noise(data / NOISE_FILE)["person"])
        print(f"{args.people} people, {len(planted)} planted with a wrong {args.task} label", flush=True)

        job = SearchJob(
            source=DataSource(data), task=args.task, space_path=REPO / "search_spaces" / "quick.yaml",
            overrides=(*FIXED, *args.overrides), home=root / "home", storage_url=None, study_name=args.task,
            trials=args.trials, device="cpu",
        )  # fmt: skip
        space, study_data = prepare(job)
        study = open_study(job, space)[0]
        check_study_matches(study, job, space, study_data)  # records the settings the audit checks, as search does
        run_worker(job, space, study_data)
        counts = count_trials(study)
        print(
            f"search: {counts.complete} complete trial(s), best out-of-fold macro F1 {counts.best:.4f} "
            f"(given labels), {time.perf_counter() - started:.0f} s",
            flush=True,
        )

        ref = StudyRef(source=DataSource(data), task=args.task, home=job.home)
        result = run_audit(ref, trials=args.trials)
        ranked = list(result.people["person"])
        k = len(planted)
        precision, recall = precision_recall_at_k(ranked, planted, k)
        flagged = set(result.people.loc[result.people["flagged"], "person"])
        hits = len(flagged & planted)
        print(f"audit from {result.source}")
        print(f"top {k} people: {', '.join(ranked[:k])}")
        print(f"planted:        {', '.join(sorted(planted))}")
        print(
            f"flagged: {len(flagged)} people, {hits} of them planted "
            f"(precision {hits / max(len(flagged), 1):.2f}, recall {hits / max(k, 1):.2f})"
        )
        print(
            f"label_audit precision@{k} {precision:.2f} recall@{k} {recall:.2f} ({time.perf_counter() - started:.0f} s)"
        )


if __name__ == "__main__":
    main()
