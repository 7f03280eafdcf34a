"""Search-space files: a YAML file of study settings and parameters -> one `TrainParams` per trial.

A file has two sections (read with `yaml.safe_load`; every key is checked before any training starts)::

    settings:                 # the study, not searched
      folds: 5                # >= 2; person-grouped folds, the same for every trial of a study
      max_epochs: 20          # >= 1; becomes TrainParams.epochs
      image_size: 224         # >= 8; becomes TrainParams.image_size, and the size of the image cache
      seed: 0                 # >= 0; becomes TrainParams.seed (the folds and the sampler use it too)
      pruner: median          # median | percentile | halving | hyperband | wilcoxon | none
      pruner_warmup_epochs: 2 # epochs before the first cut (median, percentile: in every fold)
      pruner_min_complete: 3  # no trial is pruned before this many trials completed (the export's ensemble)
    params:                   # any TrainParams field except epochs, image_size and seed (`automl params`)
      batch_size: 32                                   # a fixed value: a scalar, or a list for tuple fields
      backbone: {choices: [resnet18, convnext_nano]}   # categorical: YAML scalars
      lr: {low: 1.0e-5, high: 1.0e-2, log: true}       # float range; `step` optional (not with log)
      step_epochs: {low: 4, high: 10, step: 2}         # int range for int fields (low, high, step ints)
      momentum: {low: 0.85, high: 0.99, when: {optimizer: sgd}}         # only when optimizer == sgd
      focal_gamma: {low: 0.5, high: 3.0, when: {loss: [focal, focal+f1]}} # a value or a list of values
      oversample_classes: {value: [2], when: {sampler: oversample}}     # a fixed value with a condition

Parameters are suggested in file order. A `when` names parameters defined earlier in the file and the values
they must have (all must hold); a parameter whose condition fails is not suggested and keeps its TrainParams
default, which is also the value later conditions see. Whether a range is int or float follows the field's type.

Tuple-valued fields (Optuna's categorical choices must be scalars) are written as strings in `choices`:
`oversample_classes` as "2" or "2,5,8" (class codes; "none" for none), `age_drop_borderline` as "57-59"
(inclusive ages; "none" for none). Any optional field (`age_train_threshold`, `grad_clip`, `weights_file`, ...)
takes `none` (or YAML null) for None. Fixed values may also be lists: `oversample_classes: [2, 5]`.

`face_crop: {choices: [none, center, face, aligned]}` searches the face crop applied before the image cache (`crop` is
the augmentation's crop, a different thing). Each (face_crop, face_crop_margin, face_crop_threshold, face_crop_pick)
is its own set of cached images, so search those only with a few choices. `face_crop_box` pins the prior box; by
default it is learned once per study from the training images and stored in each trial's config, which the export
and `predict` reuse.

`--set KEY=VALUE` (repeatable) pins a setting or a parameter; VALUE is read as YAML (`lr=0.01`,
`backbone=resnet18`, `oversample_classes=[2]`, `pretrained=false`). A pinned parameter keeps its file's `when`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import timm
import yaml
from optuna.distributions import CategoricalChoiceType
from optuna.trial import BaseTrial

from automl.data.face_crop import FaceCrop
from automl.errors import AutomlError, DataError
from automl.registry import close_matches
from automl.search.pruning import PRUNERS
from automl.train.params import DEFAULTS, KINDS, RULES, Kind, TrainParams, allowed, check_value

#: The shipped search spaces: `search_spaces/` at the repository root. It is data, not part of the package: a
#: non-editable install does not carry it, so `default_space_path` also looks in `./search_spaces`.
SPACES_DIR = Path(__file__).resolve().parents[2] / "search_spaces"
GENERIC_SPACE = "generic"

TOP_KEYS = ("settings", "params")
SPEC_KEYS = ("value", "choices", "low", "high", "step", "log", "when")
_FORMS = {"value": {"value"}, "choices": {"choices"}, "range": {"low", "high", "step", "log"}}
#: TrainParams fields that a study fixes through its settings, not per trial.
SETTING_FIELDS = {"epochs": "max_epochs", "image_size": "image_size", "seed": "seed"}


@dataclass(frozen=True)
class StudySettings:
    """What a study fixes for all its trials."""

    folds: int = 5
    max_epochs: int = 10
    image_size: int = 64
    seed: int = 0
    pruner: str = "median"
    pruner_warmup_epochs: int = 2
    pruner_min_complete: int = 3


SETTINGS = tuple(f.name for f in fields(StudySettings))


# ---------------------------------------------------------------------------------------------------------------
# Parameter specs


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of a space; `when` maps earlier parameters to the values they must have (all must hold)."""

    when: dict[str, tuple[Any, ...]] = field(default_factory=dict, kw_only=True)

    def active(self, values: Mapping[str, Any]) -> bool:
        """Whether the condition holds for the values resolved so far."""
        return all(values[name] in allowed for name, allowed in self.when.items())

    def suggest(self, name: str, trial: BaseTrial) -> Any:
        """The TrainParams value of this parameter in `trial`."""
        raise NotImplementedError

    def first(self) -> Any:
        """The first choice, the low end, or the fixed value."""
        raise NotImplementedError

    def can_take(self, value: Any) -> bool:
        """Whether a trial can give this parameter `value` (a TrainParams value)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Fixed(ParamSpec):
    """A value every trial uses (not in `trial.params`)."""

    value: Any

    def suggest(self, name: str, trial: BaseTrial) -> Any:
        return self.value

    def first(self) -> Any:
        return self.value

    def can_take(self, value: Any) -> bool:
        return value == self.value


@dataclass(frozen=True)
class Categorical(ParamSpec):
    """`choices` as written in the file (what Optuna stores); `values` the TrainParams values, in the same order."""

    choices: tuple[CategoricalChoiceType, ...]
    values: tuple[Any, ...]

    def suggest(self, name: str, trial: BaseTrial) -> Any:
        return _trial_value(name, trial.suggest_categorical(name, self.choices))

    def first(self) -> Any:
        return self.values[0]

    def can_take(self, value: Any) -> bool:
        return value in self.values


@dataclass(frozen=True)
class IntRange(ParamSpec):
    low: int
    high: int
    step: int = 1
    log: bool = False

    def suggest(self, name: str, trial: BaseTrial) -> Any:
        return _trial_value(name, trial.suggest_int(name, self.low, self.high, step=self.step, log=self.log))

    def first(self) -> Any:
        return self.low

    def can_take(self, value: Any) -> bool:
        return isinstance(value, int) and self.low <= value <= self.high


@dataclass(frozen=True)
class FloatRange(ParamSpec):
    low: float
    high: float
    step: float | None = None
    log: bool = False

    def suggest(self, name: str, trial: BaseTrial) -> Any:
        return _trial_value(name, trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log))

    def first(self) -> Any:
        return self.low

    def can_take(self, value: Any) -> bool:
        return isinstance(value, int | float) and self.low <= value <= self.high


# ---------------------------------------------------------------------------------------------------------------
# The space


@dataclass(frozen=True)
class SearchSpace:
    """A validated search-space file (with its `--set` overrides applied)."""

    path: Path
    settings: StudySettings
    params: dict[str, ParamSpec]

    def suggest(self, trial: BaseTrial) -> TrainParams:
        """The trial's parameters: suggested in file order, conditional ones only when their condition holds."""
        return self._resolve(lambda name, spec: spec.suggest(name, trial))

    def fixed_params(self) -> TrainParams:
        """Defaults, fixed values, and the first choice / low end of the rest (for tests and `--dry-run`)."""
        return self._resolve(lambda name, spec: spec.first())

    def fixed_values(self, params: TrainParams) -> dict[str, Any]:
        """The space's fixed values (in the file or by --set) that apply to a trial with `params`."""
        values = params.to_dict()
        return {n: values[n] for n, spec in self.params.items() if isinstance(spec, Fixed) and spec.active(values)}

    def description(self) -> dict[str, str]:
        """Each parameter's spec in words, by name: two spaces with the same description draw the same trials."""
        return {name: _describe(spec) for name, spec in sorted(self.params.items())}

    def face_crops(self) -> list[FaceCrop]:
        """Every face crop a trial can draw (box None: the prior the study learns); none for a searched margin or
        threshold."""
        modes = _possible("face_crop", self.params) or ()
        margins = _possible("face_crop_margin", self.params) or ()
        boxes = _possible("face_crop_box", self.params) or ()
        thresholds = _possible("face_crop_threshold", self.params) or ()
        picks = _possible("face_crop_pick", self.params) or ()
        crops = [FaceCrop()] if "none" in modes else []
        crops += [
            FaceCrop(m, margin, box, threshold, pick)
            for m in modes
            if m != "none"
            for margin in margins
            for box in boxes
            for threshold in thresholds
            for pick in picks
        ]
        return list({crop.key(): crop for crop in crops}.values())  # modes that ignore threshold or pick: once

    def needs_face_detector(self) -> bool:
        """Whether a trial may run the face detector: a `face` or `aligned` crop, or a prior box to learn."""
        modes = _possible("face_crop", self.params) or ()
        boxes = _possible("face_crop_box", self.params) or (None,)
        return any(FaceCrop(mode, box=box).needs_detector for mode in modes for box in boxes)

    def pretrained_backbones(self) -> tuple[str, ...]:
        """The backbones whose pretrained weights a trial may load from the hub cache (none with a weights_file)."""
        if True not in (_possible("pretrained", self.params) or (True,)):
            return ()
        if None not in (_possible("weights_file", self.params) or (None,)):
            return ()
        return tuple(_possible("backbone", self.params) or ())

    def _resolve(self, pick: Callable[[str, ParamSpec], Any]) -> TrainParams:
        values = _settings_values(self.settings)
        for name, spec in self.params.items():
            if spec.active(values):
                values[name] = pick(name, spec)
        return TrainParams(**values)


def load_space(path: Path, overrides: Sequence[str] = ()) -> SearchSpace:
    """Read and validate a search-space file, then pin the `--set KEY=VALUE` overrides.

    Raises one AutomlError listing every problem, each naming the key and the allowed values.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        shipped = ", ".join(str(p) for p in shipped_spaces()) or "none found"
        raise AutomlError(f"search space file {path} does not exist; shipped spaces: {shipped}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise AutomlError(f"cannot read search space file {path}: {error}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where, shown = "", ""
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
            lines = text.splitlines()
            shown = f"\n  {mark.line + 1} | {lines[mark.line]}" if mark.line < len(lines) else ""
        reason = getattr(error, "problem", None) or str(error)
        raise AutomlError(f"search space file {path} is not valid YAML{where}: {reason}{shown}") from None

    problems: list[str] = []
    settings, params = _parse_document(document, problems)
    settings, params = _apply_overrides(settings, params, overrides, problems)
    if not problems:
        _check_combinations(settings, params, problems)
    if problems:
        raise DataError(f"search space {path} has {len(problems)} problem(s):", problems)
    return SearchSpace(path=path, settings=settings, params=params)


def default_space_path(task: str) -> Path:
    """`search_spaces/<task>.yaml` if it exists, else `search_spaces/generic.yaml`.

    Looks in the repository's `search_spaces/` (next to the `automl` package of a source checkout or editable
    install), then in `./search_spaces` (a non-editable install: copy the folder there, or pass `--space`).
    """
    for folder in (SPACES_DIR, Path.cwd() / "search_spaces"):
        for name in (task, GENERIC_SPACE):
            candidate = folder / f"{name}.yaml"
            if candidate.is_file():
                return candidate
    raise AutomlError(
        f"no search space for task {task!r}: neither {SPACES_DIR} nor ./search_spaces has {task}.yaml or "
        f"{GENERIC_SPACE}.yaml (a non-editable install does not include search_spaces/); pass --space FILE"
    )


def shipped_spaces() -> list[Path]:
    """The search-space files in the repository's `search_spaces/`."""
    return sorted(SPACES_DIR.glob("*.yaml")) if SPACES_DIR.is_dir() else []


# ---------------------------------------------------------------------------------------------------------------
# Values: YAML and `--set` text as TrainParams values (the schema, automl/train/params.py, says what is allowed)


class _Invalid(ValueError):
    """A bad value; the message says what is allowed."""


SEARCHABLE = tuple(name for name in KINDS if name not in SETTING_FIELDS)


def _is_none(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", ""))


def _number(value: Any, base: type) -> int | float:
    """`value` as an int (base int) or a float; numeric strings too, since YAML reads `1e-4` as a string."""
    if isinstance(value, bool):
        raise _Invalid("")
    if base is int:
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            return int(value)
        raise _Invalid("")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise _Invalid("") from None
    else:
        raise _Invalid("")
    if not math.isfinite(number):
        raise _Invalid("")
    return number


def _tuple(value: Any, kind: Kind) -> tuple[Any, ...]:
    if isinstance(value, str):
        parts = [p for p in value.replace(" ", "").split(",") if p]
        if kind.length == 2 and len(parts) == 1:
            parts = parts[0].split("-")
    elif isinstance(value, list | tuple):
        parts = list(value)
    else:
        parts = [value]
    items = tuple(_number(part, kind.item or float) for part in parts)
    if kind.length is not None and len(items) != kind.length:
        raise _Invalid("")
    return items


def _convert(name: str, value: Any) -> Any:
    """`value` (from a file, `--set` or Optuna) as the TrainParams value of field `name`; `_Invalid` if wrong."""
    kind = KINDS[name]
    if _is_none(value) and (kind.optional or kind.base is tuple):
        if kind.optional:
            return None
        return ()
    try:
        if kind.base is bool:
            if not isinstance(value, bool):
                raise _Invalid("")
            return value
        if kind.base is str:
            if not isinstance(value, str):
                raise _Invalid("")
            converted: Any = value.strip()
        elif kind.base is tuple:
            converted = _tuple(value, kind)
        else:
            converted = _number(value, kind.base)
    except _Invalid:
        raise _Invalid(f"{value!r} is not {allowed(name)}") from None
    try:
        check_value(name, converted)
    except ValueError as error:
        raise _Invalid(str(error)) from None
    return converted


def _trial_value(name: str, raw: Any) -> Any:
    try:
        return _convert(name, raw)
    except _Invalid as error:
        raise AutomlError(f"trial parameter {name}: {error}") from None


def _settings_values(settings: StudySettings) -> dict[str, Any]:
    return {**DEFAULTS, "epochs": settings.max_epochs, "image_size": settings.image_size, "seed": settings.seed}


# ---------------------------------------------------------------------------------------------------------------
# Parsing a file


def _close(name: Any, known: Sequence[str]) -> str:
    close = close_matches(name, known)
    return f"did you mean {', '.join(close)}? " if close else ""


def _parse_document(document: Any, problems: list[str]) -> tuple[StudySettings, dict[str, ParamSpec]]:
    if document is None:
        document = {}
    if not isinstance(document, dict):
        problems.append(f"the file must be a mapping with the keys {', '.join(TOP_KEYS)}")
        return StudySettings(), {}
    for key in document:
        if key not in TOP_KEYS:
            problems.append(f"unknown top-level key {key!r}; {_close(key, TOP_KEYS)}allowed: {', '.join(TOP_KEYS)}")
    settings = _parse_settings(document.get("settings") or {}, problems)
    raw_params = document.get("params") or {}
    params: dict[str, ParamSpec] = {}
    if not isinstance(raw_params, dict):
        problems.append("params: must be a mapping of parameter names to specs")
        return settings, params
    for name, raw in raw_params.items():
        where = f"params.{name}"
        if name in SETTING_FIELDS:
            problems.append(f"{where}: is a study setting, not a parameter; set settings.{SETTING_FIELDS[name]}")
        elif name not in KINDS:
            problems.append(
                f"{where}: unknown parameter; {_close(name, SEARCHABLE)}known: {', '.join(sorted(SEARCHABLE))}"
            )
        else:
            spec = _parse_spec(name, raw, params, problems)
            if spec is not None:
                params[name] = spec
    return settings, params


def _parse_settings(raw: Any, problems: list[str]) -> StudySettings:
    if not isinstance(raw, dict):
        problems.append(f"settings: must be a mapping with the keys {', '.join(SETTINGS)}")
        return StudySettings()
    values: dict[str, Any] = {}
    for key, value in raw.items():
        where = f"settings.{key}"
        if key not in SETTINGS:
            problems.append(f"{where}: unknown setting; {_close(key, SETTINGS)}allowed: {', '.join(SETTINGS)}")
            continue
        try:
            values[key] = _check_setting(key, value)
        except _Invalid as error:
            problems.append(f"{where}: {error}")
    return StudySettings(**values)


#: The least value of each whole-number setting; those that become TrainParams fields take it from the schema.
_SETTING_MINIMUM = {
    "folds": 2,
    "pruner_warmup_epochs": 0,
    "pruner_min_complete": 0,
    **{setting: RULES[name].bound.low for name, setting in SETTING_FIELDS.items()},  # type: ignore[union-attr]
}


def _check_setting(key: str, value: Any) -> Any:
    if key == "pruner":
        if value is False or _is_none(value):  # YAML reads a bare `none`-like `off`/`no` as false
            value = "none"
        if value not in PRUNERS:
            raise _Invalid(f"{value!r} is not one of: {', '.join(PRUNERS.names())}")
        return value
    minimum = _SETTING_MINIMUM[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _Invalid(f"{value!r} is not a whole number >= {minimum}")
    return value


def _parse_spec(name: str, raw: Any, earlier: Mapping[str, ParamSpec], problems: list[str]) -> ParamSpec | None:
    """One parameter's spec, or None after adding its problems."""
    where = f"params.{name}"
    count = len(problems)
    if not isinstance(raw, dict):
        raw = {"value": raw}
    for key in raw:
        if key not in SPEC_KEYS:
            problems.append(
                f"{where}: unknown key {key!r} in a parameter spec; {_close(key, SPEC_KEYS)}"
                f"allowed: {', '.join(SPEC_KEYS)}"
            )
    when = _parse_when(name, raw.get("when"), earlier, problems) if "when" in raw else {}
    forms = [form for form, keys in _FORMS.items() if keys & set(raw)]
    spec: ParamSpec | None = None
    if len(forms) != 1:
        problems.append(
            f"{where}: a spec is exactly one of a fixed value (`{name}: X` or {{value: X}}), "
            f"{{choices: [...]}}, or {{low: A, high: B}} (optional step or log); got keys "
            f"{', '.join(map(str, raw)) or 'none'}"
        )
    elif forms == ["value"]:
        try:
            spec = Fixed(_convert(name, raw["value"]), when=when)
        except _Invalid as error:
            problems.append(f"{where}: {error}")
    elif forms == ["choices"]:
        spec = _parse_choices(name, raw["choices"], when, problems)
    else:
        spec = _parse_range(name, raw, when, problems)
    return spec if len(problems) == count else None


def _parse_choices(name: str, raw: Any, when: dict[str, tuple[Any, ...]], problems: list[str]) -> ParamSpec | None:
    where = f"params.{name}.choices"
    takes = allowed(name)
    if not isinstance(raw, list) or not raw:
        problems.append(f"{where}: must be a non-empty list of values, each {takes}")
        return None
    values = []
    for n, choice in enumerate(raw):
        if choice is not None and not isinstance(choice, str | int | float | bool):
            problems.append(
                f"{where}[{n}]: {choice!r}: a choice must be a YAML scalar (Optuna stores it); "
                f'write a list as a string, e.g. "2,5" or "57-59"; allowed: {takes}'
            )
            continue
        try:
            values.append(_convert(name, choice))
        except _Invalid as error:
            problems.append(f"{where}[{n}]: {error}")
    if len(set(map(repr, raw))) != len(raw):
        problems.append(f"{where}: repeated choices in {raw!r}")
    if len(values) != len(raw):
        return None
    return Categorical(choices=tuple(raw), values=tuple(values), when=when)


def _parse_range(
    name: str, raw: dict[str, Any], when: dict[str, tuple[Any, ...]], problems: list[str]
) -> ParamSpec | None:
    where = f"params.{name}"
    kind = KINDS[name]
    if kind.base not in (int, float):
        problems.append(f"{where}: low/high need a numeric parameter; {name} is {allowed(name)}: use choices")
        return None
    missing = [key for key in ("low", "high") if key not in raw]
    if missing:
        problems.append(f"{where}: a range needs both low and high; missing {', '.join(missing)}")
        return None
    numbers: dict[str, Any] = {}
    numeric = "a whole number" if kind.base is int else "a number"
    for key in ("low", "high", "step"):
        if key in raw and raw[key] is not None:
            try:
                numbers[key] = _number(raw[key], kind.base)
            except _Invalid:
                problems.append(f"{where}.{key}: {raw[key]!r} is not {numeric} ({name} is {allowed(name)})")
    log = raw.get("log", False)
    if not isinstance(log, bool):
        problems.append(f"{where}.log: {log!r} is not true or false")
    if len(numbers) < 2 or not isinstance(log, bool):
        return None
    low, high, step = numbers["low"], numbers["high"], numbers.get("step")
    count = len(problems)
    bound = RULES[name].bound
    for key, value in (("low", low), ("high", high)):
        if bound is not None and not bound.contains(value):
            problems.append(f"{where}.{key}: {value!r} is not {allowed(name)}")
    if not low < high:
        problems.append(f"{where}: low {low!r} must be < high {high!r} (for one value write `{name}: {low!r}`)")
    if log and low <= 0:
        problems.append(f"{where}: log needs low > 0, got low {low!r}")
    if step is not None:
        if log:
            problems.append(f"{where}: step and log cannot be combined")
        if step <= 0:
            problems.append(f"{where}.step: must be > 0, got {step!r}")
        elif low < high:
            span = (high - low) / step
            if abs(span - round(span)) > 1e-9 * max(1.0, abs(span)):
                problems.append(f"{where}: high - low ({high - low:g}) must be a multiple of step {step!r}")
    if len(problems) != count:
        return None
    if kind.base is int:
        return IntRange(low=low, high=high, step=step or 1, log=log, when=when)
    return FloatRange(low=low, high=high, step=step, log=log, when=when)


def _parse_when(
    name: str, raw: Any, earlier: Mapping[str, ParamSpec], problems: list[str]
) -> dict[str, tuple[Any, ...]]:
    where = f"params.{name}.when"
    if not isinstance(raw, dict) or not raw:
        problems.append(f"{where}: must map earlier parameters to a value or a list of values, e.g. {{loss: focal}}")
        return {}
    when: dict[str, tuple[Any, ...]] = {}
    for key, wanted in raw.items():
        if key not in earlier:
            defined = ", ".join(earlier) or "none"
            hint = _close(key, [*earlier, *KINDS]) if key not in KINDS else ""
            problems.append(
                f"{where}.{key}: a condition must name a parameter defined earlier in the file; {hint}"
                f"defined before {name}: {defined}"
            )
            continue
        spec = earlier[key]
        options = wanted if isinstance(wanted, list) else [wanted]
        values = []
        for option in options:
            try:
                value = _convert(key, option)
            except _Invalid as error:
                problems.append(f"{where}.{key}: {error}")
                continue
            if not spec.can_take(value) and not (spec.when and value == DEFAULTS[key]):
                problems.append(f"{where}.{key}: {key} never takes {option!r}; it takes {_takes(spec)}")
            values.append(value)
        when[key] = tuple(values)
    return when


def _describe(spec: ParamSpec) -> str:
    if isinstance(spec, Fixed):
        text = f"= {spec.value!r}"
    elif isinstance(spec, Categorical):
        text = f"choices [{_takes(spec)}]"
    else:
        assert isinstance(spec, IntRange | FloatRange)
        text = f"[{spec.low}, {spec.high}]" + (" log" if spec.log else "") + (f" step {spec.step}" if spec.step else "")
    conditions = ", ".join(f"{k} in [{', '.join(map(str, v))}]" for k, v in spec.when.items())
    return f"{text} when {conditions}" if conditions else text


def _takes(spec: ParamSpec) -> str:
    if isinstance(spec, Categorical):
        return ", ".join(map(str, spec.choices))
    if isinstance(spec, Fixed):
        return repr(spec.value)
    assert isinstance(spec, IntRange | FloatRange)
    return f"values within [{spec.low}, {spec.high}]"


# ---------------------------------------------------------------------------------------------------------------
# Overrides and checks across parameters


def _apply_overrides(
    settings: StudySettings, params: dict[str, ParamSpec], overrides: Sequence[str], problems: list[str]
) -> tuple[StudySettings, dict[str, ParamSpec]]:
    params = dict(params)
    for item in overrides:
        where = f"--set {item}"
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"{where}: expected KEY=VALUE, e.g. --set lr=0.01 or --set folds=3")
            continue
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text  # e.g. a path with ': ' in it
        if isinstance(value, dict):
            problems.append(f"{where}: --set pins one value (a scalar or a list), not a spec")
        elif key in SETTINGS:
            try:
                settings = replace(settings, **{key: _check_setting(key, value)})
            except _Invalid as error:
                problems.append(f"{where}: {key}: {error}")
        elif key in SETTING_FIELDS:
            problems.append(f"{where}: {key} is a study setting; use --set {SETTING_FIELDS[key]}=...")
        elif key in KINDS:
            try:
                pinned = _convert(key, value)
            except _Invalid as error:
                problems.append(f"{where}: {key}: {error}")
                continue
            old = params.get(key)
            params[key] = Fixed(pinned, when=old.when if old is not None else {})
        else:
            known = (*SETTINGS, *SEARCHABLE)
            problems.append(
                f"{where}: unknown key {key!r}; {_close(key, known)}settings: {', '.join(SETTINGS)}; "
                f"parameters: {', '.join(sorted(SEARCHABLE))}"
            )
    return settings, params


def _possible(name: str, params: Mapping[str, ParamSpec]) -> tuple[Any, ...] | None:
    """The values field `name` can have in a trial, or None for a range."""
    spec = params.get(name)
    if spec is None:
        return (DEFAULTS[name],)
    if isinstance(spec, Fixed):
        values: tuple[Any, ...] = (spec.value,)
    elif isinstance(spec, Categorical):
        values = spec.values
    else:
        return None
    return values + ((DEFAULTS[name],) if spec.when else ())


def _check_combinations(settings: StudySettings, params: Mapping[str, ParamSpec], problems: list[str]) -> None:
    for backbone in _possible("backbone", params) or ():
        config = timm.models.get_pretrained_cfg(backbone)
        # timm's test_* models take any size; other fixed-size models (swin, most ViTs) only their own.
        if config is not None and config.fixed_input_size and not backbone.startswith("test_"):
            size = config.input_size[-1]
            if size != settings.image_size:
                problems.append(
                    f"params.backbone: {backbone} needs settings.image_size {size}, not {settings.image_size} "
                    f"(a fixed input size); drop it from the choices or set image_size: {size}"
                )
    samplers = _possible("sampler", params) or ()
    classes = params.get("oversample_classes")
    if "oversample" in samplers and (classes is None or (isinstance(classes, Fixed) and not classes.value)):
        problems.append(
            "params.sampler: 'oversample' needs params.oversample_classes, the class codes to repeat "
            "(e.g. [2] for age >= 60)"
        )
