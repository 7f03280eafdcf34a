"""Export: retraining the best trials, ensembling, TTA, the self-contained export folder and submission files."""
