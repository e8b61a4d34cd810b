"""HpoConfig and its parts: valid inputs load, every invalid input names its field."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from hpoq.config.base import MAX_NAME_LENGTH, SAFE_NAME_PATTERN, RunMode, check_safe_name
from hpoq.config.hpo import (
    BUILTIN_OBJECTIVE,
    MAX_TRIALS,
    BackboneConfig,
    CategoricalParam,
    CheckpointConfig,
    FloatParam,
    HpoConfig,
    IntParam,
    LogParam,
    TinyArchitecture,
)
from hpoq.config.loader import load_model
from hpoq.core.variants import base_study_name, parse_variant
from hpoq.errors import InputError, UnsafeNameError

REPO = Path(__file__).resolve().parents[2]


def hpo_dict(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "backbones": [{"name": "tiny", "architecture": {}}],
        "n_trials": 3,
        "search_space": {"lr": {"type": "log", "low": 1e-5, "high": 1e-3}},
    }
    data.update(copy.deepcopy(overrides))
    return data


def locs(exc: pytest.ExceptionInfo[ValidationError]) -> list[tuple[Any, ...]]:
    return [tuple(e["loc"]) for e in exc.value.errors()]


def fails_at(data: dict[str, Any], prefix: tuple[Any, ...]) -> ValidationError:
    with pytest.raises(ValidationError) as exc:
        HpoConfig.model_validate(data)
    assert any(loc[: len(prefix)] == prefix for loc in locs(exc)), locs(exc)
    return exc.value


def validate_or_errors(data: dict[str, Any]) -> tuple[HpoConfig | None, list[Any]]:
    try:
        return HpoConfig.model_validate(data), []
    except ValidationError as exc:
        return None, list(exc.errors())


# --- valid ------------------------------------------------------------------------------


def test_minimal_config_gets_documented_defaults() -> None:
    cfg = HpoConfig.model_validate(hpo_dict())
    assert cfg.backbones[0].name == "tiny"
    assert cfg.backbones[0].architecture == TinyArchitecture()
    assert cfg.n_trials == 3
    assert cfg.run.mode is None
    assert cfg.sampler.type == "tpe"
    assert cfg.sampler.seed == 42
    assert cfg.pruner.type == "median"
    assert cfg.objective.direction == "maximize"
    assert cfg.checkpoint.study_name == "hpo_{backbone}"
    assert cfg.checkpoint.storage_path == "{study_name}/study.journal"
    assert cfg.checkpoint.auto_resume is True
    assert cfg.stale_trial_grace_seconds == 3600


@pytest.mark.parametrize("name", ["prod", "smoke"])
def test_shipped_hpo_files_load(name: str) -> None:
    path = REPO / "config" / "hpo" / f"{name}.yaml"
    cfg = load_model(path, HpoConfig)
    assert cfg.backbones
    assert cfg.n_trials >= 1
    assert cfg.run.mode is RunMode.REUSE_IF_EXISTS
    # Every configured backbone gives a usable study name.
    for backbone in cfg.backbones:
        base_study_name(cfg.checkpoint.study_name, backbone.name)


def test_every_search_param_type_is_accepted() -> None:
    space = {
        "a": {"type": "float", "low": 0.0, "high": 1.0},
        "b": {"type": "float", "low": 1e-5, "high": 1.0, "log": True},
        "c": {"type": "float", "low": 0.0, "high": 1.0, "step": 0.1},
        "d": {"type": "log", "low": 1e-5, "high": 1e-1},
        "e": {"type": "int", "low": 1, "high": 8},
        "f": {"type": "int", "low": 1, "high": 64, "log": True},
        "g": {"type": "int", "low": 0, "high": 10, "step": 2},
        "h": {"type": "categorical", "choices": [16, "x", 0.5, True]},
    }
    cfg = HpoConfig.model_validate(hpo_dict(search_space=space))
    assert isinstance(cfg.search_space["a"], FloatParam)
    assert isinstance(cfg.search_space["d"], LogParam)
    assert isinstance(cfg.search_space["e"], IntParam)
    assert isinstance(cfg.search_space["h"], CategoricalParam)
    assert cfg.search_space["h"].choices == [16, "x", 0.5, True]
    assert type(cfg.search_space["h"].choices[3]) is bool


@pytest.mark.parametrize(
    "name", ["a", "0", "bert", "bert-base", "deberta_v3", "x1-y_2", "a" * MAX_NAME_LENGTH]
)
def test_safe_backbone_names_are_accepted(name: str) -> None:
    data = hpo_dict(
        backbones=[{"name": name, "model": "m"}], checkpoint={"study_name": "{backbone}"}
    )
    cfg = HpoConfig.model_validate(data)
    assert cfg.backbones[0].name == name


def test_backbone_lookup() -> None:
    cfg = HpoConfig.model_validate(
        hpo_dict(backbones=[{"name": "a", "model": "x"}, {"name": "b", "model": "y"}])
    )
    assert cfg.backbone("b").model == "y"
    with pytest.raises(InputError, match=r"unknown backbone 'c'; configured: a, b"):
        cfg.backbone("c")


def test_config_is_frozen() -> None:
    cfg = HpoConfig.model_validate(hpo_dict())
    with pytest.raises(ValidationError):
        cfg.n_trials = 5  # type: ignore[misc]


# --- backbone names ------------------------------------------------------------------------

BAD_NAMES = [
    pytest.param("../x", id="traversal"),
    pytest.param("..", id="dotdot"),
    pytest.param(".", id="dot"),
    pytest.param("a/b", id="slash"),
    pytest.param("a\\b", id="backslash"),
    pytest.param("a b", id="space"),
    pytest.param(" a", id="leading-space"),
    pytest.param("a\n", id="trailing-newline"),
    pytest.param("'a'", id="single-quotes"),
    pytest.param('"a"', id="double-quotes"),
    pytest.param("a:b", id="colon"),
    pytest.param("a.b", id="dot-inside"),
    pytest.param("Bert", id="upper-case"),
    pytest.param("BERT", id="all-upper"),
    pytest.param("b\u0435rt", id="cyrillic-ie"),
    pytest.param("\u0430", id="cyrillic-a"),
    pytest.param("\uff42ert", id="fullwidth-b"),
    pytest.param("bert\u200b", id="zero-width-space"),
    pytest.param("", id="empty"),
    pytest.param("-x", id="leading-dash"),
    pytest.param("_x", id="leading-underscore"),
    pytest.param("a\x00", id="nul"),
    pytest.param("a" * (MAX_NAME_LENGTH + 1), id="too-long"),
    pytest.param("{backbone}", id="braces"),
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_unsafe_backbone_names_are_rejected(name: str) -> None:
    err = fails_at(hpo_dict(backbones=[{"name": name, "model": "m"}]), ("backbones", 0, "name"))
    assert "name" in str(err)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_check_safe_name_rejects(name: str) -> None:
    with pytest.raises(ValueError, match=r"empty|safe name|at most"):
        check_safe_name(name)


def test_safe_name_pattern_is_ascii_lower_case() -> None:
    assert SAFE_NAME_PATTERN == r"^[a-z0-9][a-z0-9_-]*$"


@pytest.mark.parametrize("name", [5, None, ["a"], {"a": 1}])
def test_backbone_name_of_wrong_type(name: object) -> None:
    fails_at(hpo_dict(backbones=[{"name": name, "model": "m"}]), ("backbones", 0, "name"))


def test_duplicate_backbones_are_rejected_and_named() -> None:
    data = hpo_dict(
        backbones=[
            {"name": "a", "model": "x"},
            {"name": "b", "model": "y"},
            {"name": "a", "architecture": {}},
        ]
    )
    err = fails_at(data, ("backbones",))
    assert "repeated: a" in str(err)


def test_backbones_must_not_be_empty() -> None:
    fails_at(hpo_dict(backbones=[]), ("backbones",))


def test_backbones_must_be_a_list() -> None:
    fails_at(hpo_dict(backbones={"name": "a", "model": "m"}), ("backbones",))


@pytest.mark.parametrize(
    "backbone",
    [
        pytest.param({"name": "a"}, id="no-source"),
        pytest.param({"name": "a", "model": "m", "architecture": {}}, id="both-sources"),
        pytest.param({"name": "a", "model": "  "}, id="blank-model"),
        pytest.param({"name": "a", "model": ""}, id="empty-model"),
    ],
)
def test_backbone_needs_exactly_one_source(backbone: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="model"):
        BackboneConfig.model_validate(backbone)
    fails_at(hpo_dict(backbones=[backbone]), ("backbones", 0))


@pytest.mark.parametrize(
    ("arch", "field"),
    [
        ({"hidden_size": 64, "num_heads": 3}, None),
        ({"model_type": "gpt2"}, "model_type"),
        ({"hidden_size": 4}, "hidden_size"),
        ({"num_layers": 0}, "num_layers"),
        ({"num_layers": 49}, "num_layers"),
        ({"hidden_size": "big"}, "hidden_size"),
        ({"vocab": 10}, "vocab"),
    ],
)
def test_bad_tiny_architecture(arch: dict[str, Any], field: str | None) -> None:
    prefix: tuple[Any, ...] = ("backbones", 0, "architecture")
    err = fails_at(hpo_dict(backbones=[{"name": "a", "architecture": arch}]), prefix)
    if field:
        assert any(e["loc"][-1] == field for e in err.errors())
    else:
        assert "multiple of num_heads" in str(err)


# --- unknown keys, wrong types, enums ----------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "loc"),
    [
        ({"n_trial": 3}, ("n_trial",)),
        ({"backbones": [{"name": "a", "model": "m", "modle": "x"}]}, ("backbones", 0, "modle")),
        ({"sampler": {"type": "tpe", "sed": 1}}, ("sampler", "sed")),
        ({"pruner": {"kind": "median"}}, ("pruner", "kind")),
        ({"run": {"mode": "force_new", "when": 1}}, ("run", "when")),
        ({"checkpoint": {"studyname": "x_{backbone}"}}, ("checkpoint", "studyname")),
        (
            {"search_space": {"lr": {"type": "float", "low": 0, "high": 1, "lg": True}}},
            ("search_space", "lr", "float", "lg"),
        ),
    ],
)
def test_unknown_keys_are_rejected(overrides: dict[str, Any], loc: tuple[Any, ...]) -> None:
    err = fails_at(hpo_dict(**overrides), loc)
    assert any(e["type"] == "extra_forbidden" for e in err.errors())


@pytest.mark.parametrize(
    ("overrides", "loc"),
    [
        ({"sampler": {"type": "grid"}}, ("sampler", "type")),
        ({"pruner": {"type": "hyperband"}}, ("pruner", "type")),
        ({"objective": {"direction": "up"}}, ("objective", "direction")),
        ({"objective": {"direction": "MAXIMIZE"}}, ("objective", "direction")),
        ({"trainer": {"precision": "fp16"}}, ("trainer", "precision")),
        ({"trainer": {"device": "tpu"}}, ("trainer", "device")),
        ({"run": {"mode": "reuse"}}, ("run", "mode")),
        ({"run": {"mode": "FORCE_NEW"}}, ("run", "mode")),
        ({"search_space": {"x": {"type": "uniform", "low": 0, "high": 1}}}, ("search_space", "x")),
        ({"search_space": {"x": {"low": 0, "high": 1}}}, ("search_space", "x")),
    ],
)
def test_bad_enum_values_are_rejected(overrides: dict[str, Any], loc: tuple[Any, ...]) -> None:
    fails_at(hpo_dict(**overrides), loc)


@pytest.mark.parametrize("mode", list(RunMode))
def test_every_run_mode_is_accepted(mode: RunMode) -> None:
    cfg = HpoConfig.model_validate(hpo_dict(run={"mode": mode.value}))
    assert cfg.run.mode is mode


@pytest.mark.parametrize(
    "n_trials",
    [
        pytest.param(0, id="zero"),
        pytest.param(-1, id="negative"),
        pytest.param(MAX_TRIALS + 1, id="above-max"),
        pytest.param(10**18, id="huge"),
        pytest.param(10**100, id="enormous"),
        pytest.param(2.5, id="fraction"),
        pytest.param("many", id="string"),
        pytest.param(None, id="null"),
        pytest.param([3], id="list"),
        pytest.param(True, id="bool"),  # YAML `n_trials: yes` must not mean 1 trial
    ],
)
def test_bad_n_trials(n_trials: object) -> None:
    fails_at(hpo_dict(n_trials=n_trials), ("n_trials",))


@pytest.mark.parametrize("n_trials", [1, 30, MAX_TRIALS])
def test_good_n_trials(n_trials: int) -> None:
    assert HpoConfig.model_validate(hpo_dict(n_trials=n_trials)).n_trials == n_trials


def test_n_trials_is_required() -> None:
    data = hpo_dict()
    del data["n_trials"]
    with pytest.raises(ValidationError) as exc:
        HpoConfig.model_validate(data)
    assert exc.value.errors()[0]["type"] == "missing"


def test_stale_grace_has_a_floor() -> None:
    fails_at(hpo_dict(stale_trial_grace_seconds=1), ("stale_trial_grace_seconds",))


# --- search space -----------------------------------------------------------------------


def test_empty_search_space_is_rejected() -> None:
    fails_at(hpo_dict(search_space={}), ("search_space",))


def test_search_space_must_be_a_mapping() -> None:
    fails_at(hpo_dict(search_space=[{"type": "float", "low": 0, "high": 1}]), ("search_space",))


@pytest.mark.parametrize("name", ["learning-rate", "1lr", "", "a b", "lr.x"])
def test_parameter_names_must_be_identifiers(name: str) -> None:
    err = fails_at(
        hpo_dict(search_space={name: {"type": "float", "low": 0, "high": 1}}), ("search_space",)
    )
    assert "Python identifier" in str(err)


@pytest.mark.parametrize(
    "param",
    [
        pytest.param({"type": "float", "low": 2.0, "high": 1.0}, id="float-reversed"),
        pytest.param({"type": "int", "low": 5, "high": 1}, id="int-reversed"),
        pytest.param({"type": "log", "low": 1e-1, "high": 1e-3}, id="log-reversed"),
    ],
)
def test_low_must_not_be_above_high(param: dict[str, Any]) -> None:
    err = fails_at(hpo_dict(search_space={"p": param}), ("search_space", "p"))
    assert "must not be above 'high'" in str(err)


@pytest.mark.parametrize(
    ("param", "pinned"),
    [
        pytest.param({"type": "float", "low": 0.1, "high": 0.1}, 0.1, id="float"),
        pytest.param({"type": "float", "low": 0.5, "high": 0.5, "step": 0.1}, 0.5, id="float-step"),
        pytest.param({"type": "float", "low": 1e-3, "high": 1e-3, "log": True}, 1e-3, id="f-log"),
        pytest.param({"type": "log", "low": 1e-3, "high": 1e-3}, 1e-3, id="log"),
        pytest.param({"type": "int", "low": 3, "high": 3}, 3, id="int"),
        pytest.param({"type": "int", "low": 4, "high": 4, "step": 2}, 4, id="int-step"),
        pytest.param({"type": "int", "low": 8, "high": 8, "log": True}, 8, id="int-log"),
    ],
)
def test_low_equal_to_high_pins_the_value(param: dict[str, Any], pinned: float) -> None:
    """Optuna accepts low == high and samples that value every time."""
    import optuna

    from hpoq.core.objective import suggest_params

    config = HpoConfig.model_validate(hpo_dict(search_space={"p": param}))
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=1))
    for _ in range(3):
        trial = study.ask()
        assert suggest_params(trial, config.search_space) == {"p": pinned}
        study.tell(trial, 1.0)


@pytest.mark.parametrize(
    "param",
    [
        pytest.param({"type": "log", "low": 0.0, "high": 1.0}, id="log-zero"),
        pytest.param({"type": "log", "low": -1.0, "high": 1.0}, id="log-negative"),
        pytest.param({"type": "float", "low": 0.0, "high": 1.0, "log": True}, id="float-log-zero"),
        pytest.param({"type": "float", "low": -2.0, "high": 1.0, "log": True}, id="float-log-neg"),
        pytest.param({"type": "int", "low": 0, "high": 8, "log": True}, id="int-log-zero"),
        pytest.param({"type": "int", "low": -4, "high": 8, "log": True}, id="int-log-neg"),
    ],
)
def test_log_scale_needs_positive_low(param: dict[str, Any]) -> None:
    err = fails_at(hpo_dict(search_space={"p": param}), ("search_space", "p"))
    assert "positive on a log scale" in str(err)


@pytest.mark.parametrize(
    "param",
    [
        pytest.param({"type": "float", "low": 0, "high": 1, "step": 0}, id="float-step-zero"),
        pytest.param({"type": "float", "low": 0, "high": 1, "step": -0.1}, id="float-step-neg"),
        pytest.param(
            {"type": "float", "low": 1e-3, "high": 1, "log": True, "step": 0.1}, id="float-log-step"
        ),
        pytest.param({"type": "int", "low": 0, "high": 8, "step": 0}, id="int-step-zero"),
        pytest.param({"type": "int", "low": 0, "high": 8, "step": 1.5}, id="int-step-fraction"),
        # Optuna refuses step != 1 on a log-scale int: the config must refuse it first.
        pytest.param(
            {"type": "int", "low": 1, "high": 64, "log": True, "step": 2}, id="int-log-step"
        ),
        pytest.param({"type": "int", "low": 0.5, "high": 8}, id="int-fraction-low"),
        pytest.param({"type": "float", "low": "a", "high": 1}, id="float-low-string"),
        pytest.param({"type": "float", "low": 0}, id="missing-high"),
        pytest.param({"type": "categorical", "choices": []}, id="no-choices"),
        pytest.param({"type": "categorical"}, id="missing-choices"),
        pytest.param({"type": "categorical", "choices": [[1, 2]]}, id="nested-choice"),
        pytest.param({"type": "categorical", "choices": "ab"}, id="choices-string"),
    ],
)
def test_bad_search_params(param: dict[str, Any]) -> None:
    fails_at(hpo_dict(search_space={"p": param}), ("search_space", "p"))


@pytest.mark.parametrize(
    "param",
    [
        pytest.param({"type": "float", "low": -math.inf, "high": 1.0}, id="float-low-minus-inf"),
        pytest.param({"type": "float", "low": 0.0, "high": math.inf}, id="float-high-inf"),
        pytest.param({"type": "float", "low": math.nan, "high": 1.0}, id="float-low-nan"),
        pytest.param({"type": "log", "low": 1e-5, "high": math.inf}, id="log-high-inf"),
        pytest.param(
            {"type": "float", "low": 1e-3, "high": math.inf, "log": True}, id="float-log-inf"
        ),
    ],
)
def test_non_finite_bounds_are_rejected(param: dict[str, Any]) -> None:
    # YAML spells these `.inf` / `.nan`; a sampler cannot draw from an unbounded range.
    fails_at(hpo_dict(search_space={"p": param}), ("search_space", "p"))


# --- objective and checkpoint -----------------------------------------------------------


@pytest.mark.parametrize(
    "function", ["objective", "pkg.mod.fn", "pkg.mod:", ":fn", "pkg mod:fn", "pkg/mod:fn", ""]
)
def test_objective_function_must_be_a_dotted_path(function: str) -> None:
    fails_at(hpo_dict(objective={"function": function}), ("objective", "function"))


def test_objective_function_accepts_module_colon_function() -> None:
    cfg = HpoConfig.model_validate(hpo_dict(objective={"function": "my_pkg.objs:train_fn"}))
    assert cfg.objective.function == "my_pkg.objs:train_fn"


@pytest.mark.parametrize(
    ("checkpoint", "field"),
    [
        ({"study_name": "hpo_study"}, "study_name"),
        ({"study_name": "{model}_{backbone}"}, "study_name"),
        ({"study_name": "hpo_{backbone"}, "study_name"),
        ({"storage_path": "study.journal"}, "storage_path"),
        ({"storage_path": "/abs/{study_name}/study.journal"}, "storage_path"),
        ({"storage_path": "../{study_name}/study.journal"}, "storage_path"),
        ({"storage_path": "{study_name}/../../x.journal"}, "storage_path"),
        ({"storage_path": "{study_name}/study.txt"}, "storage_path"),
        ({"storage_path": "{study_name}/{backbone}.db"}, "storage_path"),
    ],
)
def test_bad_checkpoint_templates(checkpoint: dict[str, Any], field: str) -> None:
    fails_at(hpo_dict(checkpoint=checkpoint), ("checkpoint", field))


def test_good_checkpoint_templates() -> None:
    cfg = CheckpointConfig(study_name="exp1_{backbone}", storage_path="{study_name}/optuna.db")
    assert base_study_name(cfg.study_name, "bert") == "exp1_bert"


@pytest.mark.parametrize(
    ("study_name", "backbone"),
    [
        pytest.param("../{backbone}", "bert", id="traversal-template"),
        pytest.param("HPO_{backbone}", "bert", id="upper-case-template"),
        pytest.param("hpo {backbone}", "bert", id="space-template"),
        pytest.param("{backbone}/x", "bert", id="slash-template"),
        pytest.param("hpo_{backbone}", "b" * MAX_NAME_LENGTH, id="too-long-after-filling"),
    ],
)
def test_a_valid_config_always_yields_safe_study_names(study_name: str, backbone: str) -> None:
    """`hpoq config validate` must not pass a config whose study names fail at run time."""
    data = hpo_dict(
        backbones=[{"name": backbone, "model": "m"}], checkpoint={"study_name": study_name}
    )
    cfg, errors = validate_or_errors(data)
    if cfg is None:
        assert any(tuple(e["loc"][:1]) in {(), ("checkpoint",), ("backbones",)} for e in errors)
        return
    for b in cfg.backbones:
        try:
            base_study_name(cfg.checkpoint.study_name, b.name)
        except UnsafeNameError as exc:
            pytest.fail(f"config validated but its study name is unusable: {exc}")


def test_no_backbone_study_reads_as_a_variant_of_another() -> None:
    """Backbones 'bert' and 'bert_v2' share one study namespace: `hpo_bert_v2` would be read
    as variant 2 of 'bert'. A config that makes study names ambiguous must be refused."""
    data = hpo_dict(backbones=[{"name": "bert", "model": "m"}, {"name": "bert_v2", "model": "m"}])
    cfg, errors = validate_or_errors(data)
    if cfg is None:
        assert any(tuple(e["loc"][:1]) in {(), ("checkpoint",), ("backbones",)} for e in errors)
        return
    bases = [base_study_name(cfg.checkpoint.study_name, b.name) for b in cfg.backbones]
    for a in bases:
        for b in bases:
            if a != b:
                assert parse_variant(a, b) is None, f"{b!r} reads as a variant of {a!r}"


# --- objective metric -------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["micro-f1", "macro-f1", "precision", "recall"])
def test_the_builtin_objective_accepts_the_metrics_it_computes(metric: str) -> None:
    config = HpoConfig.model_validate(hpo_dict(objective={"metric": metric}))
    assert config.objective.function == BUILTIN_OBJECTIVE
    assert config.objective.metric == metric


def test_an_unknown_metric_of_the_builtin_objective_lists_the_choices(tmp_path: Path) -> None:
    error = fails_at(hpo_dict(objective={"metric": "micro_f1"}), ("objective", "metric"))
    assert "micro-f1, macro-f1, precision, recall" in str(error)
    path = tmp_path / "hpo.yaml"
    path.write_text(
        "backbones: [{name: tiny, architecture: {}}]\nn_trials: 3\n"
        "search_space: {lr: {type: log, low: 1.0e-5, high: 1.0e-3}}\n"
        "objective: {metric: accuracy}\n"
    )
    with pytest.raises(InputError) as caught:
        load_model(path, HpoConfig)
    message = str(caught.value)
    assert str(path) in message and "objective.metric" in message
    assert "micro-f1, macro-f1, precision, recall" in message


def test_a_custom_objective_names_its_own_metric() -> None:
    config = HpoConfig.model_validate(
        hpo_dict(objective={"function": "my_pkg.search:objective", "metric": "val/accuracy"})
    )
    assert config.objective.metric == "val/accuracy"


# --- warm start -------------------------------------------------------------------------


def test_warm_start_is_off_unless_asked_for() -> None:
    assert HpoConfig.model_validate(hpo_dict()).warm_start == "none"
    config = HpoConfig.model_validate(hpo_dict(warm_start="previous_best"))
    assert config.warm_start == "previous_best"
    error = fails_at(hpo_dict(warm_start="best"), ("warm_start",))
    assert "'none' or 'previous_best'" in str(error)


# --- devices shared by trial slots ------------------------------------------------------


def test_out_of_memory_fails_the_trial_unless_a_retry_alone_is_asked_for() -> None:
    assert HpoConfig.model_validate(hpo_dict()).out_of_memory == "fail"
    config = HpoConfig.model_validate(hpo_dict(out_of_memory="retry_alone"))
    assert config.out_of_memory == "retry_alone"
    error = fails_at(hpo_dict(out_of_memory="retry"), ("out_of_memory",))
    assert "'fail' or 'retry_alone'" in str(error)


def test_length_grouping_is_a_trainer_switch() -> None:
    assert HpoConfig.model_validate(hpo_dict()).trainer.length_grouping is True
    off = HpoConfig.model_validate(hpo_dict(trainer={"length_grouping": False}))
    assert off.trainer.length_grouping is False
    fails_at(hpo_dict(trainer={"length_grouping": "sometimes"}), ("trainer", "length_grouping"))
