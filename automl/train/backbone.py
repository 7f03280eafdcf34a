"""Backbones: any `timm.list_models()` name with the task's number of classes.

Pretrained weights come only from disk (a file the user names, or the local Hugging Face / torch hub cache):
a training run never waits on the network, and missing weights are a clear error, not a hang. A process reads each
file once and keeps its tensors: every later fold of the worker builds its backbone from them.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from automl.errors import AutomlError
from automl.registry import close_matches
from automl.train.params import TrainParams
from automl.train.weights import cached_weights, weights_problem, weights_source


def check_backbone_name(name: str) -> None:
    """An AutomlError with close matches when timm has no such model."""
    if not timm.is_model(name):
        close = close_matches(name, timm.list_models(), n=5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models()"
        raise AutomlError(f"unknown backbone {name!r}{hint}")


def create_backbone(params: TrainParams, num_classes: int) -> nn.Module:
    check_backbone_name(params.backbone)
    kwargs = {"num_classes": num_classes, "drop_rate": params.drop_rate}
    if not params.pretrained:
        return timm.create_model(params.backbone, pretrained=False, **kwargs)
    weights = _local_weights(params)
    try:
        config = timm.models.get_pretrained_cfg(params.backbone)
        if config is not None and config.custom_load:  # a model's own loader (.npz checkpoints): from the file
            source = {"file": str(weights)}
        else:  # timm drops the 1000-class head when num_classes differs (from a copy of the dict: it pops the head)
            source = {"state_dict": dict(_read_weights(weights))}
        return timm.create_model(params.backbone, pretrained=True, pretrained_cfg_overlay=source, **kwargs)
    except (pickle.UnpicklingError, RuntimeError, ValueError, OSError) as error:
        if isinstance(error, pickle.UnpicklingError) or "weights_only" in str(error):
            # PyTorch's weights-only loader met more than tensors; its advice to turn that off is not ours.
            raise AutomlError(
                f"{weights} is not a plain weights file: loading it would run pickled code, which automl never "
                "does. Use a .safetensors file (or a checkpoint of tensors only)"
            ) from None
        raise AutomlError(f"cannot load pretrained weights {weights} into {params.backbone}: {error}") from None


#: Weights files read by this process: (path, modification time) -> tensors.
_READ: dict[tuple[str, int], dict[str, torch.Tensor]] = {}


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The file's tensors, read once per process (timm's loader: safetensors, or torch.load without unpickling code)."""
    key = (str(path.resolve()), path.stat().st_mtime_ns)
    if key not in _READ:
        _READ[key] = timm.models.load_state_dict(str(path))
    return _READ[key]


def feature_width(backbone: nn.Module) -> int:
    """The width of a classifier-less timm model's output: its pre-logits layer's (mobilenetv3) or its features'."""
    return int(getattr(backbone, "head_hidden_size", None) or backbone.num_features)


def normalisation(model: nn.Module, params: TrainParams) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std: the parameters', else the pretrained backbone's own, else ImageNet's."""
    config = getattr(model, "pretrained_cfg", {}) if params.pretrained else {}
    mean = params.mean or tuple(config.get("mean", IMAGENET_DEFAULT_MEAN))
    std = params.std or tuple(config.get("std", IMAGENET_DEFAULT_STD))
    return tuple(mean), tuple(std)


def _local_weights(params: TrainParams) -> Path:
    if params.weights_file:
        path = Path(params.weights_file).expanduser()
        if not path.is_file():
            raise AutomlError(f"weights_file {path} does not exist")
        return path
    found = cached_weights(weights_source(params.backbone))
    if found is None:
        raise AutomlError(
            f"pretrained weights for {params.backbone} are not on this machine (automl search and export-best "
            f"fetch them before the first trial; `automl weights {params.backbone}` fetches them by hand), or pass "
            "a file with --set weights_file=/path/to/weights.safetensors, or train from scratch with --set "
            "pretrained=false"
        )
    problem = weights_problem(found)
    if problem is not None:
        raise AutomlError(
            f"the cached weights of {params.backbone} ({found}) are damaged: {problem}; "
            f"`automl weights {params.backbone}` downloads them again"
        )
    return found
