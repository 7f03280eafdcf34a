"""The export folder: self-contained, and read with json, csv and safetensors only (never unpickling).

```
EXPORT/export.json                    task, classes, image size, normalisation, members, ensemble, TTA, figures
EXPORT/model_card.md                  the same for people
EXPORT/members/<name>/config.json     the member's resolved training parameters (mean and std included)
EXPORT/members/<name>/fold<k>.safetensors, fold<k>.json    one model per fold (mode folds), with its seed
EXPORT/members/<name>/repeat<r>-fold<k>.safetensors, .json  the same on cross-validation split r (--cv-repeats)
EXPORT/members/<name>/full.safetensors, full.json          one model on all training data (mode full)
EXPORT/predictions.csv                the eval images: image_id, class, one probability column per class
EXPORT/oof_probabilities.csv          the ensemble's out-of-fold probabilities on the training images, true class, fold
EXPORT/submission.csv                 competition layout: ImageID,ans in eval/info.csv order
```
Each model file and its json are written atomically, the json last: a model whose json exists is finished, so an
interrupted export resumes from there.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save
from torch import nn

from automl.atomic import atomic_path
from automl.errors import AutomlError
from automl.train.heads import HeadedModel, create_model
from automl.train.params import TrainParams

EXPORT_FILE = "export.json"
MEMBERS_DIR = "members"
CARD_FILE = "model_card.md"
PREDICTIONS_FILE = "predictions.csv"
OOF_FILE = "oof_probabilities.csv"
SUBMISSION_FILE = "submission.csv"
FULL_MODEL = "full"  # the model file's stem in mode full
FORMAT_VERSION = 3
#: Format 1 saved plain timm models (the classifier inside the backbone); they load into today's head.
#: Format 3 added the decision rule (class_weights) and the honest figures.
READABLE_VERSIONS = (1, 2, FORMAT_VERSION)


def write_json(path: Path, value: Any) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(value, indent=2, default=_plain) + "\n", encoding="utf-8")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AutomlError(f"{path} does not exist") from None
    except (OSError, ValueError) as error:
        raise AutomlError(f"cannot read {path}: {error}") from None


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    """Weights as safetensors (cloned: safetensors refuses tensors that share memory)."""
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    # Bytes written by us, not safetensors' save_file: its files are readable by their owner only.
    with atomic_path(path) as temporary:
        temporary.write_bytes(save(tensors, metadata={"format": "pt"}))


def model_params(config: dict[str, Any]) -> TrainParams:
    """A member's parameters for inference: no pretrained weights to look up, the export's weights replace them."""
    return replace(TrainParams.from_dict(config), pretrained=False, weights_file=None)


def load_model(path: Path, params: TrainParams, num_classes: int) -> HeadedModel:
    """Build the backbone and head from resolved parameters and fill them from a safetensors file (no pickle)."""
    if not path.is_file():
        raise AutomlError(f"model file {path} is missing; export again (automl export-best) to rebuild it")
    try:
        model = create_model(params, num_classes)
        state = load_file(str(path))
        if not any(key.startswith("head.") for key in state):
            state = _from_plain_timm(state, model.backbone)
        model.load_state_dict(state)
    except Exception as error:  # a damaged file or a mismatched config: both mean the export is unusable
        raise AutomlError(f"cannot load {path} into {params.backbone}: {error}") from None
    return model.eval()


def _from_plain_timm(state: dict[str, torch.Tensor], backbone: nn.Module) -> dict[str, torch.Tensor]:
    """A format-1 state dict (a timm model with its classifier) as backbone + classifier head."""
    prefix = backbone.pretrained_cfg.get("classifier", "fc") + "."
    renamed = {}
    for key, value in state.items():
        new = f"head.layers.output.{key.removeprefix(prefix)}" if key.startswith(prefix) else f"backbone.{key}"
        renamed[new] = value
    return renamed


@dataclass
class MemberInfo:
    """One member as the export folder records it."""

    name: str
    trial: int
    study_value: float
    oof_f1: float
    config: dict[str, Any]
    models: list[str]  # file names under the member's folder
    seeds: list[int]
    best_epochs: list[int]

    @property
    def params(self) -> TrainParams:
        return model_params(self.config)


def _known(record: type, raw: dict[str, Any]) -> dict[str, Any]:
    """`raw` without the keys `record` has no field for. Reading only: older formats wrote figures that are no longer
    kept, and an export must still load for prediction; what is written is always every field."""
    names = {f.name for f in fields(record)}
    return {key: value for key, value in raw.items() if key in names}


@dataclass(kw_only=True)  # keyword-only: the fields keep export.json's order, optional ones among required ones
class EnsembleInfo:
    """How the export's ensemble was chosen, how it votes and its two figures. Formats 1 and 2 have only the vote
    and a selection F1: the other fields keep their defaults."""

    selection: str | None = None  # best_trial, top_k_vote or greedy
    decision_rule: bool | None = None  # whether the chosen variant uses the decision rule (class_weights)
    method: str  # the vote
    members: list[int]  # indexes into ExportInfo.members of the members that vote
    weights: list[float]  # one per voting member, summing to 1
    selection_f1: float | None = None  # chosen and scored on the same out-of-fold predictions: optimistic
    honest_f1: float | None = None  # cross-fitted; None: an export from before the honest figure
    library: int | None = None  # how many candidate trials were judged
    cv_repeats: int = 1  # cross-validation splits behind the figures
    candidates: dict[str, dict[str, float]] = field(default_factory=dict)  # each variant: its selection_f1, honest_f1

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> EnsembleInfo:
        known = _known(cls, raw)
        if "honest_f1" not in raw:  # formats 1 and 2: their oof_f1 was a selection F1; their candidates, plain F1s
            known.pop("candidates", None)
            known["selection_f1"] = raw.get("oof_f1")
        return cls(**known)


@dataclass(kw_only=True)
class TtaInfo:
    """The export's test-time augmentation: the chosen views and each tried combination's selection F1."""

    views: list[str]
    selection_f1: dict[str, float] = field(default_factory=dict)  # "plain+flip": F1; formats 1 and 2: none kept
    note: str = ""

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TtaInfo:
        return cls(**_known(cls, raw))


@dataclass(kw_only=True)
class DataInfo:
    """The data the export was made from."""

    path: str
    fingerprint: str  # the study's data fingerprint: the report checks an export against its study with it
    folds: int
    seed: int
    storage: str  # the study's storage URL, password redacted
    train_images: int
    eval_images: int

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DataInfo:
        return cls(**_known(cls, raw))


@dataclass
class ExportInfo:
    """The content of export.json."""

    task: str
    classes: list[str]
    study: str
    mode: str
    image_size: int
    mean: list[float] | None  # None: members differ, each config.json has its own
    std: list[float] | None
    members: list[MemberInfo]
    ensemble: EnsembleInfo
    tta: TtaInfo
    data: DataInfo
    version: int = FORMAT_VERSION
    class_weights: list[float] | None = None  # the decision rule: argmax(p * w); None: plain argmax

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def write_export_info(directory: Path, info: ExportInfo) -> None:
    write_json(directory / EXPORT_FILE, info.to_dict())


def read_export(directory: Path) -> ExportInfo:
    """The export folder's description; an AutomlError when it is missing or not an export."""
    if not directory.is_dir():
        raise AutomlError(f"export folder {directory} does not exist; make one with automl export-best --task TASK")
    path = directory / EXPORT_FILE
    if not path.is_file():
        raise AutomlError(f"{directory} is not an export folder (no {EXPORT_FILE}); point --export at one")
    raw = read_json(path)
    try:
        version = raw.get("version")
        if version not in READABLE_VERSIONS:
            raise AutomlError(
                f"{path}: export format {version}, this automl reads {', '.join(map(str, READABLE_VERSIONS))}; "
                "export again"
            )
        members = [MemberInfo(**m) for m in raw.pop("members")]
        ensemble = EnsembleInfo.from_dict(raw.pop("ensemble"))
        tta, data = TtaInfo.from_dict(raw.pop("tta")), DataInfo.from_dict(raw.pop("data"))
        return ExportInfo(**raw, members=members, ensemble=ensemble, tta=tta, data=data)
    except KeyError as error:  # a whole section missing
        raise AutomlError(f"{path} is damaged: no {error}; export again") from None
    except (TypeError, AttributeError) as error:  # a field missing, or a section that is not a mapping
        raise AutomlError(f"{path} is damaged: {error}; export again") from None


def member_dir(directory: Path, name: str) -> Path:
    return directory / MEMBERS_DIR / name
