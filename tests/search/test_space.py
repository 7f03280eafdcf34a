"""Search-space files: the shipped ones validate and suggest valid parameters; every bad file says what is wrong."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from automl.errors import AutomlError
from automl.search.space import (
    SPACES_DIR,
    Categorical,
    Fixed,
    FloatRange,
    IntRange,
    SearchSpace,
    StudySettings,
    default_space_path,
    load_space,
    shipped_spaces,
)
from automl.train.losses import LOSSES
from automl.train.params import TrainParams

optuna.logging.set_verbosity(optuna.logging.WARNING)

SHIPPED = ("age", "all", "gender", "generic", "mask", "quick")
QUICK = SPACES_DIR / "quick.yaml"
DEFAULTS = TrainParams()


def study(seed: int = 0) -> optuna.Study:
    return optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed))


def write(tmp_path: Path, text: str, name: str = "bad-space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def check_trial(space: SearchSpace, trial: optuna.Trial, params: TrainParams) -> None:
    """Conditional parameters are suggested exactly when their condition holds; fixed ones are fixed."""
    values = params.to_dict()
    assert (params.epochs, params.image_size, params.seed) == (
        space.settings.max_epochs,
        space.settings.image_size,
        space.settings.seed,
    )
    for name, spec in space.params.items():
        active = spec.active(values)  # conditions name earlier parameters, whose final values these are
        if isinstance(spec, Fixed) or not active:
            assert name not in trial.params, name
            assert values[name] == (spec.value if active else getattr(DEFAULTS, name)), name
        else:
            assert name in trial.params, name
            assert spec.can_take(values[name]), (name, values[name])
    assert set(trial.params) <= {n for n, s in space.params.items() if not isinstance(s, Fixed)}


# --- the shipped files -------------------------------------------------------------------------------------------


def test_every_task_has_a_shipped_space() -> None:
    assert {p.stem for p in shipped_spaces()} >= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_space_suggests_valid_params(name: str) -> None:
    space = load_space(SPACES_DIR / f"{name}.yaml")
    assert space.path.name == f"{name}.yaml"
    assert isinstance(space.params["backbone"], Categorical)
    s = study()
    for _ in range(20):
        trial = s.ask()
        params = space.suggest(trial)
        assert isinstance(params, TrainParams)
        check_trial(space, trial, params)
        assert all(part in LOSSES for part in params.loss.split("+"))
        s.tell(trial, 0.0)
    fixed = space.fixed_params()
    assert fixed.backbone == space.params["backbone"].values[0]
    assert fixed.epochs == space.settings.max_epochs


@pytest.mark.parametrize("name", ["mask", "gender", "age", "all", "generic"])
def test_real_spaces_use_pretrained_224_and_five_folds(name: str) -> None:
    space = load_space(SPACES_DIR / f"{name}.yaml")
    assert space.settings.folds == 5 and space.settings.image_size == 224
    assert 10 <= space.settings.max_epochs <= 30
    assert space.fixed_params().pretrained is True


def test_quick_space_is_tiny() -> None:
    space = load_space(QUICK)
    assert space.settings == StudySettings(
        folds=3, max_epochs=3, image_size=32, seed=0, pruner="median", pruner_warmup_epochs=1
    )
    assert all(b.startswith("test_") for b in space.params["backbone"].values)
    assert space.fixed_params().pretrained is False


def test_quick_conditions() -> None:
    space = load_space(QUICK)
    s = study(seed=1)
    seen = set()
    for _ in range(20):
        trial = s.ask()
        params = space.suggest(trial)
        assert ("momentum" in trial.params) == (params.optimizer == "sgd")
        assert ("focal_gamma" in trial.params) == (params.loss == "focal")
        assert ("mix_prob" in trial.params) == (params.mix in ("mixup", "vcutmix"))
        if params.optimizer != "sgd":
            assert params.momentum == DEFAULTS.momentum
        seen.add(params.optimizer)
        s.tell(trial, 0.0)
    assert seen == {"adamw", "sgd"}


def test_age_space_encodes_tuples_and_none() -> None:
    space = load_space(SPACES_DIR / "age.yaml")
    borderline = space.params["age_drop_borderline"]
    assert isinstance(borderline, Categorical)
    assert borderline.values == (None, (57, 59), (58, 59))
    assert space.params["age_train_threshold"].values == (None, 58, 59)
    assert space.params["oversample_classes"] == Fixed((2,), when={"sampler": ("oversample",)})
    step_epochs = space.params["step_epochs"]
    assert isinstance(step_epochs, IntRange) and (step_epochs.low, step_epochs.high, step_epochs.step) == (4, 10, 2)
    assert isinstance(space.params["lr"], FloatRange) and space.params["lr"].log
    all_space = load_space(SPACES_DIR / "all.yaml")
    assert all_space.params["oversample_classes"].value == (2, 5, 8, 11, 14, 17)


def test_enqueued_params_are_respected() -> None:
    """A retried trial is enqueued with the failed trial's params; suggest must give exactly those back."""
    space = load_space(SPACES_DIR / "age.yaml")
    s = study()
    wanted = {
        "backbone": "convnext_nano",
        "loss": "focal+f1",
        "loss_weight": 0.6,
        "focal_gamma": 1.25,
        "optimizer": "sgd",
        "lr": 0.005,
        "momentum": 0.95,
        "schedule": "step",
        "step_epochs": 6,
        "sampler": "oversample",
        "age_train_threshold": "none",
        "age_drop_borderline": "57-59",
    }
    s.enqueue_trial(wanted)
    trial = s.ask()
    params = space.suggest(trial)
    assert {k: trial.params[k] for k in wanted} == wanted
    assert (params.backbone, params.loss, params.loss_weight, params.focal_gamma) == (
        "convnext_nano",
        "focal+f1",
        0.6,
        1.25,
    )
    assert (params.optimizer, params.lr, params.momentum, params.step_epochs) == ("sgd", 0.005, 0.95, 6)
    assert params.age_train_threshold is None and params.age_drop_borderline == (57, 59)
    assert params.oversample_classes == (2,)
    check_trial(space, trial, params)


def test_fixed_params_take_first_choice_and_low_end() -> None:
    params = load_space(QUICK).fixed_params()
    assert (params.backbone, params.loss, params.optimizer, params.lr) == ("test_resnet", "ce", "adamw", 1e-4)
    assert params.label_smoothing == 0.0  # active: loss ce
    assert params.momentum == DEFAULTS.momentum  # inactive: optimizer adamw
    assert (params.epochs, params.image_size, params.batch_size) == (3, 32, 32)


def test_default_space_path() -> None:
    assert default_space_path("age") == SPACES_DIR / "age.yaml"
    assert default_space_path("mask") == SPACES_DIR / "mask.yaml"
    assert default_space_path("some_csv_column") == SPACES_DIR / "generic.yaml"


# --- overrides -----------------------------------------------------------------------------------------------------


def test_overrides_pin_params_and_settings() -> None:
    overrides = [
        "lr=0.01",
        "backbone=test_vit",
        "folds=4",
        "max_epochs=2",
        "pruner=none",
        "oversample_classes=[2]",
        "weight_decay=1e-3",  # YAML reads 1e-3 as a string; numbers in strings are accepted
        "momentum=0.95",  # keeps its condition: only for sgd
    ]
    space = load_space(QUICK, overrides)
    assert (space.settings.folds, space.settings.max_epochs, space.settings.pruner) == (4, 2, "none")
    s = study()
    for _ in range(10):
        trial = s.ask()
        params = space.suggest(trial)
        assert not {"lr", "backbone", "momentum", "oversample_classes"} & set(trial.params)
        assert (params.lr, params.backbone, params.weight_decay, params.epochs) == (0.01, "test_vit", 1e-3, 2)
        assert params.oversample_classes == (2,)
        assert params.momentum == (0.95 if params.optimizer == "sgd" else DEFAULTS.momentum)
        check_trial(space, trial, params)
        s.tell(trial, 0.0)


def test_overrides_pinning_a_condition_and_null() -> None:
    space = load_space(QUICK, ["optimizer=sgd", "pretrained=false", "weights_file=", "image_size=48"])
    s = study()
    trial = s.ask()
    params = space.suggest(trial)
    assert "optimizer" not in trial.params and "momentum" in trial.params
    assert params.optimizer == "sgd" and params.weights_file is None and params.image_size == 48
    space = load_space(QUICK, ["optimizer=adamw"])  # momentum's condition can no longer hold: not an error
    trial = s.ask()
    assert "momentum" not in trial.params and space.suggest(trial).momentum == DEFAULTS.momentum


# --- bad files -----------------------------------------------------------------------------------------------------

REGISTRY_CASES = [
    ("params: {backbone: {choices: [resnet18, resnet181]}}", ["params.backbone.choices[1]", "resnet181", "resnet18"]),
    ("params: {loss: {choices: [ce, focal+dice]}}", ["params.loss.choices[1]", "focal+dice", "ce, f1, focal"]),
    ("params: {loss: ce+f1+focal}", ["params.loss", "ce+f1+focal", "two joined by '+'"]),
    ("params: {optimizer: adamx}", ["params.optimizer", "adamx", "sgd, adam, adamw, adamp"]),
    ("params: {schedule: {choices: [cosine, linear]}}", ["params.schedule.choices[1]", "cosine, step, onecycle"]),
    ("params: {sampler: balanced}", ["params.sampler", "balanced", "none, weighted, oversample"]),
    ("params: {crop: centre}", ["params.crop", "centre", "random_resized, center_weighted, none"]),
    ("params: {mix: {choices: [cutmix, hcutmix]}}", ["params.mix.choices[1]", "none, mixup, cutmix, vcutmix"]),
    ("params: {focal_alpha: inverse}", ["params.focal_alpha", "balanced, none"]),
    ("settings: {pruner: asha}", ["settings.pruner", "asha", "median, percentile, hyperband, halving, wilcoxon, none"]),
]

KEY_CASES = [
    ("setings: {folds: 3}", ["setings", "did you mean settings", "allowed: settings, params"]),
    ("- lr\n- loss\n", ["must be a mapping", "settings, params"]),
    ("settings: {fold: 3}", ["settings.fold", "did you mean folds", "max_epochs"]),
    ("params: {momentun: 0.9}", ["params.momentun", "did you mean momentum", "known:"]),
    ("params: {epochs: 5}", ["params.epochs", "settings.max_epochs"]),
    ("params: {lr: {low: 0.1, hgih: 1.0}}", ["params.lr", "'hgih'", "did you mean high", "allowed: value, choices"]),
    ("params: {optimizer: sgd, lr: {when: {optimizer: sgd}}}", ["params.lr", "exactly one of", "choices"]),
    ("params: {lr: {value: 0.1, low: 0.01, high: 1.0}}", ["params.lr", "exactly one of"]),
    ("params: {lr: {low: 0.01}}", ["params.lr", "needs both low and high", "missing high"]),
    ("params: {lr: {choices: []}}", ["params.lr.choices", "non-empty list"]),
    ("params: {lr: {choices: [0.1, 0.1]}}", ["params.lr.choices", "repeated"]),
    ("params: {pretrained: maybe}", ["params.pretrained", "'maybe'", "true or false"]),
    ("params: {batch_size: [32]}", ["params.batch_size", "a whole number"]),
    ("params: {lr: fast}", ["params.lr", "'fast'", "a number > 0"]),
    ("params: {oversample_classes: {choices: [[2], [2, 5]]}}", ["params.oversample_classes.choices[0]", '"2,5"']),
    ("params: {oversample_classes: [-1]}", ["params.oversample_classes", "class codes >= 0"]),
    ("params: {age_drop_borderline: 59-57}", ["params.age_drop_borderline", "low age first", '"57-59"']),
    ("params: {age_drop_borderline: [57, 58, 59]}", ["params.age_drop_borderline", "inclusive age range"]),
    ("params: {sampler: oversample}", ["params.sampler", "oversample_classes"]),
    (
        "settings: {image_size: 64}\nparams: {backbone: {choices: [resnet18, swin_tiny_patch4_window7_224]}}",
        ["params.backbone", "swin_tiny_patch4_window7_224", "image_size 224"],
    ),
]

RANGE_CASES = (
    [
        ("params: {lr: {low: 0.1, high: 0.01}}", ["params.lr", "low 0.1 must be < high 0.01"]),
        ("params: {lr: {low: 0.1, high: 0.1}}", ["params.lr", "must be < high"]),
        ("params: {weight_decay: {low: 0.0, high: 0.1, log: true}}", ["params.weight_decay", "log needs low > 0"]),
        ("params: {lr: {low: 0.1, high: 0.5, step: 0}}", ["params.lr.step", "must be > 0"]),
        ("params: {lr: {low: 0.1, high: 0.5, step: 0.1, log: true}}", ["params.lr", "step and log"]),
        ("params: {lr: {low: 0.1, high: 0.5, log: often}}", ["params.lr.log", "true or false"]),
        ("params: {batch_size: {low: 16.5, high: 64}}", ["params.batch_size.low", "not a whole number", ">= 1"]),
        ("params: {step_epochs: {low: 2, high: 9, step: 2}}", ["params.step_epochs", "multiple of step 2"]),
        ("params: {loss: {low: 1, high: 2}}", ["params.loss", "use choices", "ce, f1, focal"]),
        ("params: {lr: {low: -0.1, high: 0.1}}", ["params.lr.low", "> 0"]),
        ("params: {mix_prob: {low: 0.5, high: 1.2}}", ["params.mix_prob.high", "within [0, 1]"]),
        ("params: {label_smoothing: {choices: [0.0, 1.0]}}", ["params.label_smoothing.choices[1]", "within [0, 1)"]),
        ("settings: {folds: 1}", ["settings.folds", ">= 2"]),
        ("settings: {folds: '3'}", ["settings.folds", "whole number >= 2"]),
        ("settings: {max_epochs: 0}", ["settings.max_epochs", ">= 1"]),
        ("settings: {image_size: 4}", ["settings.image_size", ">= 8"]),
        ("settings: {pruner_warmup_epochs: -1}", ["settings.pruner_warmup_epochs", ">= 0"]),
        ("settings: {pruner_min_complete: -1}", ["settings.pruner_min_complete", ">= 0"]),
    ]
    + [
        (f"params: {{{name}: {{choices: [0.0, {value}]}}}}", [f"params.{name}.choices[1]", "within [0, 1]"])
        for name, value in [("hflip", 1.5), ("clahe", -0.1), ("cutout", 2), ("affine", 1.01), ("perspective", -1)]
    ]
    + [("params: {gauss_noise: 1.5}", ["params.gauss_noise", "within [0, 1]"])]
)

WHEN_CASES = [
    (
        "params: {momentum: {low: 0.8, high: 0.9, when: {optimiser: sgd}}}",
        ["params.momentum.when.optimiser", "defined earlier", "did you mean optimizer"],
    ),
    (
        "params: {momentum: {low: 0.8, high: 0.9, when: {optimizer: sgd}}, optimizer: {choices: [sgd, adamw]}}",
        ["params.momentum.when.optimizer", "defined earlier", "defined before momentum: none"],
    ),
    (
        "params: {optimizer: {choices: [adamw, adamp]}, momentum: {low: 0.8, high: 0.9, when: {optimizer: sgd}}}",
        ["params.momentum.when.optimizer", "never takes 'sgd'", "adamw, adamp"],
    ),
    (
        "params: {optimizer: {choices: [adamw, sgd]}, momentum: {low: 0.8, high: 0.9, when: {optimizer: [sgd, sgdd]}}}",
        ["params.momentum.when.optimizer", "'sgdd'", "sgd, adam, adamw, adamp"],
    ),
    (
        "params: {loss: focal, focal_gamma: {low: 1.0, high: 2.0, when: {loss: ce}}}",
        ["params.focal_gamma.when.loss", "never takes 'ce'", "'focal'"],
    ),
    ("params: {optimizer: sgd, momentum: {value: 0.9, when: sgd}}", ["params.momentum.when", "e.g. {loss: focal}"]),
]


@pytest.mark.parametrize(("text", "expected"), REGISTRY_CASES + KEY_CASES + RANGE_CASES + WHEN_CASES)
def test_bad_file_names_file_key_and_allowed_values(tmp_path: Path, text: str, expected: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(AutomlError) as raised:
        load_space(path)
    message = str(raised.value)
    assert str(path) in message
    for part in expected:
        assert part in message, f"{part!r} not in:\n{message}"


def test_every_problem_is_reported_together(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "settings: {folds: 1, max_epochs: 0}\n"
        "params:\n"
        "  optimizer: adamx\n"
        "  lr: {low: 0.1, high: 0.01}\n"
        "  hflip: 2\n"
        "  momentun: 0.9\n",
    )
    with pytest.raises(AutomlError) as raised:
        load_space(path)
    message = str(raised.value)
    assert "6 problem(s)" in message
    for key in ("settings.folds", "settings.max_epochs", "params.optimizer", "params.lr", "params.hflip", "momentun"):
        assert key in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AutomlError, match="does not exist") as raised:
        load_space(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(raised.value) and "quick.yaml" in str(raised.value)


def test_invalid_yaml_gives_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "settings:\n  folds: 3\nparams:\n  lr: {low: 0.1, high: 1.0\n  loss: ce\n")
    with pytest.raises(AutomlError, match="not valid YAML") as raised:
        load_space(path)
    assert str(path) in str(raised.value) and "line 5" in str(raised.value)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("lr", ["--set lr", "KEY=VALUE"]),
        ("=0.1", ["--set =0.1", "KEY=VALUE"]),
        ("lrr=0.1", ["unknown key 'lrr'", "did you mean lr", "settings: folds"]),
        ("lr=fast", ["--set lr=fast", "a number > 0"]),
        ("folds=one", ["--set folds=one", "whole number >= 2"]),
        ("backbone=resnet1800", ["--set backbone=resnet1800", "resnet1800"]),
        ("optimizer=adamx", ["--set optimizer=adamx", "sgd, adam, adamw, adamp"]),
        ("epochs=5", ["--set epochs=5", "max_epochs"]),
        ("lr={low: 0.001, high: 0.1}", ["--set lr=", "not a spec"]),
        ("hflip=[0.5]", ["--set hflip=[0.5]", "within [0, 1]"]),
        ("sampler=oversample", ["oversample_classes"]),
        ("augment_device=tpu", ["--set augment_device=tpu", "cpu, gpu"]),
    ],
)
def test_bad_override(override: str, expected: list[str]) -> None:
    with pytest.raises(AutomlError) as raised:
        load_space(QUICK, [override])
    message = str(raised.value)
    assert str(QUICK) in message
    for part in expected:
        assert part in message, f"{part!r} not in:\n{message}"
