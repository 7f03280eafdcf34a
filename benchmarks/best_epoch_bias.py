"""How optimistic is a trial's out-of-fold F1 because each fold keeps its best epoch, chosen on its own labels?

The search stops each fold at the epoch whose validation macro F1 is best, judged on the very rows it then scores.
Here each fold's epoch is instead chosen on the other folds (the epoch where their mean validation F1 is best) and
scored on the fold: the difference between the two, per fold and averaged over every complete trial of a study,
is the selection bias of the best epoch (what the export's honest figure does not cross-fit).

    python benchmarks/best_epoch_bias.py --home STUDIES_HOME [--study mask] [--home ANOTHER ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from automl.search.artifacts import TRIAL_CURVES_FILE, find_artifact
from automl.search.ranking import best_trials
from automl.search.storage import default_storage_url


def fold_bias(curves: pd.DataFrame) -> list[float]:
    """Per fold: F1 at its own best epoch minus F1 at the epoch the other folds' mean curve picks (or its last
    epoch, when it stopped before that one)."""
    table = curves.pivot_table(index="epoch", columns="fold", values="val_f1")
    gaps = []
    for fold in table.columns:
        own = table[fold].dropna()
        others = table.drop(columns=fold).mean(axis=1, skipna=True).dropna()
        if own.empty or others.empty:
            continue
        chosen = min(int(others.idxmax()), int(own.index.max()))
        gaps.append(float(own.max() - own.loc[chosen]))
    return gaps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, action="append", required=True)
    parser.add_argument("--study", default="mask")
    args = parser.parse_args()
    for home in args.home:
        study = optuna.load_study(study_name=args.study, storage=default_storage_url(home))
        per_trial = []
        for trial in best_trials(study):
            path = find_artifact(home, trial, TRIAL_CURVES_FILE)
            if path is not None:
                per_trial.append(np.mean(fold_bias(pd.read_csv(path))))
        if not per_trial:
            print(f"{home}: no complete trial with curves")
            continue
        print(f"{home} ({args.study}): {len(per_trial)} complete trials; fold F1 at the own best epoch minus at the "
              f"epoch the other folds pick: mean {np.mean(per_trial):+.4f}, median {np.median(per_trial):+.4f}, "
              f"max {np.max(per_trial):+.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
