"""The run mode: defaults, CLI override precedence, benchmark inheritance, bad values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hpoq.config.benchmark import BenchmarkConfig
from hpoq.config.data import DataConfig
from hpoq.config.hpo import HpoConfig
from hpoq.config.loader import load_model
from hpoq.config.run_mode import (
    RunMode,
    get_benchmark_run_mode,
    get_run_mode,
    is_force_new,
    parse_run_mode,
)
from hpoq.errors import HpoqError, InputError

REPO = Path(__file__).resolve().parents[2]
MODES = list(RunMode)
REUSE, RESUME, FORCE = RunMode.REUSE_IF_EXISTS, RunMode.RESUME_IF_INCOMPLETE, RunMode.FORCE_NEW


def hpo_model(mode: str | None) -> HpoConfig:
    return HpoConfig.model_validate(
        {
            "backbones": [{"name": "a", "model": "m"}],
            "n_trials": 1,
            "search_space": {"x": {"type": "float", "low": 0, "high": 1}},
            "run": {"mode": mode},
        }
    )


def test_contract_values() -> None:
    assert [m.value for m in RunMode] == ["reuse_if_exists", "resume_if_incomplete", "force_new"]


@pytest.mark.parametrize(
    "config",
    [
        pytest.param(None, id="none"),
        pytest.param({}, id="empty-dict"),
        pytest.param({"run": None}, id="run-null"),
        pytest.param({"run": {}}, id="run-empty"),
        pytest.param({"run": {"mode": None}}, id="mode-null"),
        pytest.param({"n_trials": 3}, id="other-keys"),
        pytest.param(BenchmarkConfig(), id="benchmark-model-default"),
        pytest.param(hpo_model(None), id="hpo-model-null"),
        pytest.param(
            DataConfig.model_validate(
                {
                    "name": "d",
                    "version": "1",
                    "format": "conll",
                    "local_path": "x",
                    "splits": {"train": "a", "validation": "b", "test": "c"},
                    "labels": ["O"],
                }
            ),
            id="model-without-run",
        ),
    ],
)
def test_default_is_reuse_if_exists(config: Any) -> None:
    assert get_run_mode(config) is REUSE


@pytest.mark.parametrize("default", MODES)
def test_caller_default_applies_when_unset(default: RunMode) -> None:
    assert get_run_mode({}, default=default) is default
    assert get_run_mode(None, default=default) is default


@pytest.mark.parametrize("mode", MODES)
def test_mode_from_dict_and_model(mode: RunMode) -> None:
    assert get_run_mode({"run": {"mode": mode.value}}) is mode
    assert get_run_mode({"run": {"mode": mode}}) is mode
    assert get_run_mode(hpo_model(mode.value)) is mode
    assert get_run_mode(BenchmarkConfig.model_validate({"run": {"mode": mode.value}})) is mode


@pytest.mark.parametrize("configured", [None, *MODES])
@pytest.mark.parametrize("override", MODES)
def test_cli_override_beats_config_and_default(
    configured: RunMode | None, override: RunMode
) -> None:
    config = {"run": {"mode": configured}}
    assert get_run_mode(config, override=override) is override
    assert get_run_mode(config, override=override.value) is override
    assert get_run_mode(config, default=FORCE, override=override) is override
    assert get_run_mode(hpo_model(configured), override=override.value) is override


def test_config_beats_default() -> None:
    assert get_run_mode({"run": {"mode": "resume_if_incomplete"}}, default=FORCE) is RESUME


@pytest.mark.parametrize("hpo_mode", MODES)
def test_benchmark_null_inherits_hpo_mode(hpo_mode: RunMode) -> None:
    hpo_dict = {"run": {"mode": hpo_mode.value}}
    assert get_benchmark_run_mode({"run": {"mode": None}}, hpo_dict) is hpo_mode
    assert get_benchmark_run_mode({}, hpo_dict) is hpo_mode
    assert get_benchmark_run_mode(None, hpo_dict) is hpo_mode
    assert get_benchmark_run_mode(BenchmarkConfig(), hpo_model(hpo_mode.value)) is hpo_mode


def test_benchmark_and_hpo_both_unset_is_reuse() -> None:
    assert get_benchmark_run_mode(None, None) is REUSE
    assert get_benchmark_run_mode(BenchmarkConfig(), hpo_model(None)) is REUSE


@pytest.mark.parametrize("bench_mode", MODES)
@pytest.mark.parametrize("hpo_mode", [None, *MODES])
def test_benchmark_own_mode_wins_over_hpo(bench_mode: RunMode, hpo_mode: RunMode | None) -> None:
    bench = BenchmarkConfig.model_validate({"run": {"mode": bench_mode.value}})
    assert get_benchmark_run_mode(bench, hpo_model(hpo_mode)) is bench_mode
    bench_dict = {"run": {"mode": bench_mode.value}}
    assert get_benchmark_run_mode(bench_dict, {"run": {"mode": hpo_mode}}) is bench_mode


@pytest.mark.parametrize("override", MODES)
def test_benchmark_override_wins(override: RunMode) -> None:
    bench = {"run": {"mode": "reuse_if_exists"}}
    hpo = {"run": {"mode": "resume_if_incomplete"}}
    assert get_benchmark_run_mode(bench, hpo, override=override.value) is override
    assert get_benchmark_run_mode({}, hpo, override=override) is override


def test_shipped_configs_benchmark_inherits() -> None:
    hpo = load_model(REPO / "config" / "hpo" / "smoke.yaml", HpoConfig)
    bench = load_model(REPO / "config" / "benchmark.yaml", BenchmarkConfig)
    assert get_benchmark_run_mode(bench, hpo) is get_run_mode(hpo) is REUSE
    assert get_benchmark_run_mode(bench, hpo, override="force_new") is FORCE


@pytest.mark.parametrize("value", ["reuse", "FORCE_NEW", "", " force_new", "force-new", 3, ["x"]])
def test_bad_mode_in_config_names_the_field(value: object) -> None:
    with pytest.raises(InputError) as exc:
        get_run_mode({"run": {"mode": value}})
    message = str(exc.value)
    assert message.startswith("run.mode: ")
    assert repr(value) in message
    assert "reuse_if_exists, resume_if_incomplete, force_new" in message


def test_bad_benchmark_mode_names_the_field() -> None:
    with pytest.raises(InputError, match=r"^run\.mode: 'again'"):
        get_benchmark_run_mode({"run": {"mode": "again"}}, {})


def test_bad_hpo_mode_when_benchmark_inherits() -> None:
    with pytest.raises(InputError, match=r"^run\.mode: 'again'"):
        get_benchmark_run_mode({"run": {"mode": None}}, {"run": {"mode": "again"}})


@pytest.mark.parametrize("override", ["new", "Force_New", ""])
def test_bad_override_names_the_flag(override: str) -> None:
    with pytest.raises(InputError, match=r"^--run-mode: "):
        get_run_mode({"run": {"mode": "force_new"}}, override=override)
    with pytest.raises(InputError, match=r"^--run-mode: "):
        get_benchmark_run_mode({}, {}, override=override)


@pytest.mark.parametrize("run", ["force_new", ["force_new"], 1])
def test_run_section_must_be_a_mapping(run: object) -> None:
    with pytest.raises(InputError, match=r"^run: expected a mapping"):
        get_run_mode({"run": run})


def test_parse_run_mode_names_the_given_field() -> None:
    assert parse_run_mode("force_new") is FORCE
    assert parse_run_mode(RESUME) is RESUME
    with pytest.raises(InputError, match=r"^benchmark\.run\.mode: 'x' is not a run mode"):
        parse_run_mode("x", field="benchmark.run.mode")
    assert issubclass(InputError, HpoqError)


def test_is_force_new() -> None:
    assert is_force_new({"run": {"mode": "force_new"}})
    assert is_force_new(hpo_model("force_new"))
    assert not is_force_new({"run": {"mode": "resume_if_incomplete"}})
    assert not is_force_new({})
    assert not is_force_new(None)
