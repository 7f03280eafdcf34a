"""The export's model card (MODEL_CARD.md): what was exported, its two figures and what they mean, the members."""

from __future__ import annotations

from automl.data.face_crop import FaceCrop
from automl.export.bundle import ExportInfo
from automl.train.heads import describe_head

FIGURES_NOTE = (
    "Two figures, both macro F1 of out-of-fold predictions on the true labels. **Selection F1**: the choices (members, "
    "vote, TTA views, decision rule) made and scored on the same predictions: optimistic. **Honest F1**: every "
    "choice made on the other folds and applied to each fold in turn (cross-fitted): what to expect on new people. "
    "With cross-validation repeats (--cv-repeats N, default 2) each out-of-fold prediction is the "
    "mean of that many models that never saw the image; a new image gets the mean of the member's models of every "
    "split."
)


def model_card(info: ExportInfo) -> str:
    e, t = info.ensemble, info.tta
    lines = [
        f"# Export of study `{info.study}` (task `{info.task}`)",
        "",
        f"- classes: {', '.join(info.classes)}",
        f"- mode: {info.mode} ({describe_mode(info)})",
        f"- image size: {info.image_size} px (each member's face crop, then the shorter side resized and the "
        f"centred square); normalisation mean {info.mean}, std {info.std}",
        f"- data: {info.data.path} ({info.data.train_images} training images, {info.data.folds} folds "
        f"grouped by person, seed {info.data.seed}; {info.data.eval_images} eval images, only predicted)",
        "",
        "## Macro F1",
        "",
        f"- **honest F1 {e.honest_f1:.4f}** (cross-fitted); selection F1 {e.selection_f1:.4f}",
        f"- out-of-fold predictions: {describe_repeats(e.cv_repeats)}",
        "",
        FIGURES_NOTE,
        "",
        "## Ensemble",
        "",
        f"- chosen: **{e.selection}** over {e.library} complete trial(s), vote {e.method} of members "
        f"{[info.members[i].name for i in e.members]}, weights {[round(w, 4) for w in e.weights]}",
        f"- decision rule: {describe_rule(info)}",
        f"- TTA views: {' + '.join(t.views)}; tried (selection F1): "
        + (", ".join(f"{k} {v:.4f}" for k, v in t.selection_f1.items()) or "none"),
        *([f"- {t.note}"] if t.note else []),
        "",
        "| candidate | selection F1 | honest F1 |",
        "|---|---|---|",
        *(f"| {k} | {v['selection_f1']:.4f} | {v['honest_f1']:.4f} |" for k, v in e.candidates.items()),
        "",
        "## Members (selection F1: out-of-fold macro F1 of each trial, which the trials were picked by)",
        "",
        "| member | trial | backbone | head | face crop | study F1 (selection) | retrained OOF F1 (selection) | seeds "
        "| best epochs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in info.members:
        lines.append(
            f"| {m.name} | {m.trial} | {m.config['backbone']} | {describe_head(m.params)} | "
            f"{describe_crop(m.params.image_crop)} | {m.study_value:.4f} | {m.oof_f1:.4f} | "
            f"{', '.join(map(str, m.seeds))} | {', '.join(map(str, m.best_epochs))} |"
        )
    lines += [
        "",
        "Use: `automl predict --export THIS_FOLDER IMAGE_OR_FOLDER...`: it crops each image with each member's face "
        "crop, as in training, and applies the same TTA, vote and decision rule. Weights are safetensors; each "
        "member's `config.json` is its full training configuration.",
        "",
    ]
    return "\n".join(lines)


def describe_mode(info: ExportInfo) -> str:
    if info.mode != "folds":
        return "one model on all training data"
    repeats = max(len(m.models) for m in info.members) // max(info.data.folds, 1)
    if repeats <= 1:
        return "one model per fold"
    return f"one model per fold of each of {repeats} cross-validation splits, all averaged for a new image"


def describe_repeats(repeats: int) -> str:
    if repeats <= 1:
        return "one model per image (the study's folds)"
    return f"the mean of {repeats} models per image, one per person-grouped cross-validation split, none trained on it"


def describe_rule(info: ExportInfo) -> str:
    if info.class_weights is None:
        return "none (argmax of the probabilities)"
    weights = ", ".join(f"{c} {w:.3g}" for c, w in zip(info.classes, info.class_weights, strict=True))
    return f"argmax of probability x class weight ({weights})"


def describe_crop(crop: FaceCrop) -> str:
    if crop.mode == "none":
        return "none"
    return f"{crop.mode} (margin {crop.margin:g}, prior box {list(crop.prior)})"
