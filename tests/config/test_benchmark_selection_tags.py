"""BenchmarkConfig, SelectionConfig, TagsRegistry and the experiment file schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from hpoq.config.base import Precision, RunMode
from hpoq.config.benchmark import MEASUREMENT_FIELDS, BenchmarkConfig, BenchmarkStrategy
from hpoq.config.experiment import ExperimentFile, MlflowExperiments
from hpoq.config.loader import load_model
from hpoq.config.selection import SelectionConfig, SelectionScope
from hpoq.config.tags import BENCHMARK_KEY_TAG, TagsRegistry

REPO = Path(__file__).resolve().parents[2]


def fails_at(model: type[BaseModel], data: Any, prefix: tuple[Any, ...]) -> ValidationError:
    with pytest.raises(ValidationError) as exc:
        model.model_validate(data)
    found = [tuple(e["loc"]) for e in exc.value.errors()]
    assert any(loc[: len(prefix)] == prefix for loc in found), found
    return exc.value


# --- benchmark ------------------------------------------------------------------------


def test_benchmark_defaults() -> None:
    cfg = BenchmarkConfig()
    assert cfg.run.mode is None  # null: inherit the HPO mode
    assert cfg.batch_sizes == [1, 8, 32]
    assert cfg.precisions == [Precision.FP32]
    assert cfg.benchmark_strategy is BenchmarkStrategy.BEST_PER_VARIANT
    assert cfg.benchmark_all_variants is True
    # Both shapes are measured, each entry labelled: real sentences and the fixed length.
    assert [p.value for p in cfg.padding] == ["sorted", "fixed"]


def test_shipped_benchmark_config_loads() -> None:
    cfg = load_model(REPO / "config" / "benchmark.yaml", BenchmarkConfig)
    assert cfg.run.mode is None
    assert cfg.batch_sizes == [1, 8, 32]
    # Enough timed batches for a p99 that is not the slowest batch, and a minimum time.
    assert cfg.iterations >= 100
    assert cfg.min_measure_seconds > 0


def test_benchmark_accepts_every_mode_and_both_precisions() -> None:
    cfg = BenchmarkConfig.model_validate(
        {"run": {"mode": "force_new"}, "precisions": ["fp32", "bf16"], "batch_sizes": [65_536]}
    )
    assert cfg.run.mode is RunMode.FORCE_NEW
    assert cfg.precisions == [Precision.FP32, Precision.BF16]


@pytest.mark.parametrize(
    ("data", "loc"),
    [
        pytest.param({"batch_sizes": []}, ("batch_sizes",), id="batch-empty"),
        pytest.param({"batch_sizes": [0]}, ("batch_sizes",), id="batch-zero"),
        pytest.param({"batch_sizes": [-8]}, ("batch_sizes",), id="batch-negative"),
        pytest.param({"batch_sizes": [65_537]}, ("batch_sizes",), id="batch-huge"),
        pytest.param({"batch_sizes": [8, 8]}, ("batch_sizes",), id="batch-duplicate"),
        pytest.param({"batch_sizes": list(range(1, 34))}, ("batch_sizes",), id="batch-too-many"),
        pytest.param({"batch_sizes": ["x"]}, ("batch_sizes", 0), id="batch-type"),
        pytest.param({"batch_sizes": 8}, ("batch_sizes",), id="batch-scalar"),
        pytest.param({"warmup_iterations": -1}, ("warmup_iterations",), id="warmup-negative"),
        pytest.param({"iterations": 0}, ("iterations",), id="iterations-zero"),
        pytest.param({"iterations": 10**9}, ("iterations",), id="iterations-huge"),
        pytest.param({"min_measure_seconds": -1}, ("min_measure_seconds",), id="min-time-neg"),
        pytest.param({"min_measure_seconds": 10**6}, ("min_measure_seconds",), id="min-time-huge"),
        pytest.param({"max_seq_length": 4}, ("max_seq_length",), id="seq-small"),
        pytest.param({"max_seq_length": 10_000}, ("max_seq_length",), id="seq-huge"),
        pytest.param({"precisions": []}, ("precisions",), id="precisions-empty"),
        pytest.param({"precisions": ["fp16"]}, ("precisions", 0), id="precision-enum"),
        pytest.param({"padding": []}, ("padding",), id="padding-empty"),
        pytest.param({"padding": ["longest"]}, ("padding", 0), id="padding-enum"),
        pytest.param({"padding": ["fixed", "fixed"]}, ("padding",), id="padding-duplicate"),
        pytest.param({"benchmark_strategy": "all"}, ("benchmark_strategy",), id="strategy-enum"),
        pytest.param(
            {"benchmark_all_variants": "maybe"}, ("benchmark_all_variants",), id="all-variants-type"
        ),
        pytest.param({"run": {"mode": "again"}}, ("run", "mode"), id="run-mode-enum"),
        pytest.param({"run": "force_new"}, ("run",), id="run-not-mapping"),
        pytest.param({"iteration": 5}, ("iteration",), id="unknown-key"),
    ],
)
def test_invalid_benchmark_configs(data: dict[str, Any], loc: tuple[Any, ...]) -> None:
    fails_at(BenchmarkConfig, data, loc)


def test_benchmark_fingerprint_payload_is_the_measurement_fields() -> None:
    assert set(BenchmarkConfig().fingerprint_payload()) == MEASUREMENT_FIELDS
    expected = {
        "batch_sizes",
        "warmup_iterations",
        "iterations",
        "min_measure_seconds",
        "max_seq_length",
        "precisions",
        "padding",
    }
    assert expected == MEASUREMENT_FIELDS
    assert BenchmarkConfig().fingerprint_payload()["precisions"] == ["fp32"]


# --- selection ------------------------------------------------------------------------


def test_selection_defaults_and_shipped_file() -> None:
    assert SelectionConfig().scope is SelectionScope.OVERALL
    cfg = load_model(REPO / "config" / "selection.yaml", SelectionConfig)
    assert cfg.objective.metric == "macro-f1"
    assert cfg.objective.direction == "maximize"


@pytest.mark.parametrize(
    ("data", "loc"),
    [
        pytest.param({"scope": "best"}, ("scope",), id="scope-enum"),
        pytest.param(
            {"objective": {"direction": "largest"}}, ("objective", "direction"), id="direction-enum"
        ),
        pytest.param({"objective": {"metric": ""}}, ("objective", "metric"), id="metric-empty"),
        pytest.param({"objective": {"metric": 1}}, ("objective", "metric"), id="metric-type"),
        pytest.param({"objective": {"goal": "max"}}, ("objective", "goal"), id="unknown-nested"),
        pytest.param({"scop": "overall"}, ("scop",), id="unknown-key"),
    ],
)
def test_invalid_selection_configs(data: dict[str, Any], loc: tuple[Any, ...]) -> None:
    fails_at(SelectionConfig, data, loc)


# --- tags -----------------------------------------------------------------------------


def test_tags_defaults_match_shipped_file() -> None:
    shipped = load_model(REPO / "config" / "tags.yaml", TagsRegistry)
    assert shipped == TagsRegistry()
    assert shipped.benchmark.key == BENCHMARK_KEY_TAG == "benchmark_key"


def test_tag_lookup() -> None:
    tags = TagsRegistry.model_validate({"grouping": {"study_key_hash": "my.study"}})
    assert tags.key("grouping", "study_key_hash") == "my.study"
    assert tags.key("process", "backbone") == "hpoq.backbone"
    assert tags.key("benchmark", "key") == "benchmark_key"
    with pytest.raises(KeyError):
        tags.key("grouping", "nope")
    with pytest.raises(KeyError):
        tags.key("nope", "backbone")
    with pytest.raises(KeyError):
        tags.key("model_config", "extra")


@pytest.mark.parametrize(
    ("data", "loc"),
    [
        pytest.param(
            {"benchmark": {"key": "bench_key"}}, ("benchmark", "key"), id="benchmark-key-fixed"
        ),
        pytest.param({"process": {"backbone": "a b"}}, ("process", "backbone"), id="space"),
        pytest.param({"process": {"backbone": ""}}, ("process", "backbone"), id="empty"),
        pytest.param({"process": {"backbone": "x" * 251}}, ("process", "backbone"), id="long"),
        pytest.param({"process": {"stage": "st\u0430ge"}}, ("process", "stage"), id="unicode"),
        pytest.param({"process": {"model": "m"}}, ("process", "model"), id="unknown-key"),
        pytest.param({"extra": {}}, ("extra",), id="unknown-section"),
    ],
)
def test_invalid_tags(data: dict[str, Any], loc: tuple[Any, ...]) -> None:
    fails_at(TagsRegistry, data, loc)


# --- experiment file ------------------------------------------------------------------


def experiment_dict(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "exp",
        "hpo": "h.yaml",
        "data": "d.yaml",
        "benchmark": "b.yaml",
        "selection": "s.yaml",
    }
    data.update(overrides)
    return data


def test_experiment_file_minimal() -> None:
    spec = ExperimentFile.model_validate(experiment_dict())
    assert spec.tags is None
    assert spec.mlflow == MlflowExperiments()


@pytest.mark.parametrize(
    ("overrides", "loc"),
    [
        pytest.param({"name": "../exp"}, ("name",), id="name-traversal"),
        pytest.param({"name": "Exp"}, ("name",), id="name-upper"),
        pytest.param({"hpo": None}, ("hpo",), id="hpo-null"),
        pytest.param({"mlflow": {"hpo": ""}}, ("mlflow", "hpo"), id="mlflow-empty"),
        pytest.param({"mlflow": {"train": "x"}}, ("mlflow", "train"), id="mlflow-unknown"),
        pytest.param({"hpo_file": "x"}, ("hpo_file",), id="unknown-key"),
    ],
)
def test_invalid_experiment_files(overrides: dict[str, Any], loc: tuple[Any, ...]) -> None:
    fails_at(ExperimentFile, experiment_dict(**overrides), loc)


@pytest.mark.parametrize("field", ["name", "hpo", "data", "benchmark", "selection"])
def test_experiment_required_fields(field: str) -> None:
    data = experiment_dict()
    del data[field]
    fails_at(ExperimentFile, data, (field,))
