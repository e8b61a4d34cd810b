"""The torch-free cheap objective and benchmark runner used by orchestration tests."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from hpoq.config.benchmark import BenchmarkConfig
from hpoq.config.hpo import HpoConfig
from hpoq.errors import HpoqError, InputError
from hpoq.workers.bench import cheap as cheap_bench
from hpoq.workers.objectives import cheap
from tests.workers.ner_fixtures import (
    TINY,
    AlwaysPrune,
    hpo_config,
    new_study,
    synthetic_data,
    trial_context,
)

SPACE = {
    "learning_rate": {"type": "log", "low": 1e-4, "high": 1e-2},
    "batch_size": {"type": "categorical", "choices": [8, 16, 32]},
    "epochs": {"type": "int", "low": 1, "high": 5},
}
BENCH = BenchmarkConfig(
    batch_sizes=[1, 8], warmup_iterations=0, iterations=5, precisions=["fp32", "bf16"]
)


def hpo() -> HpoConfig:
    return hpo_config(search_space=SPACE)


def run_cheap(tmp_path: Path, study: optuna.Study) -> tuple[float, optuna.Trial, Path]:
    config = hpo()
    trial = study.ask()
    context = trial_context(config, tmp_path, tmp_path / "data", trial.number)
    value = cheap.objective(trial, TINY, synthetic_data(tmp_path / "data"), context)
    study.tell(trial, value)
    return value, trial, context.trial_dir


def test_value_is_a_deterministic_function_of_the_params(tmp_path: Path) -> None:
    value, trial, trial_dir = run_cheap(tmp_path, new_study(hpo()))
    space = hpo().search_space
    assert value == cheap.score(trial.params, space)
    assert 0.0 <= value <= 1.0
    peak = {"learning_rate": 1e-4 * (1e-2 / 1e-4) ** 0.3, "batch_size": 16, "epochs": 2.2}
    assert cheap.score(peak, space) == pytest.approx(1.0 - 0.2**2 / 3 / 0.7**2)
    intermediate = new_study(hpo())
    value2, trial2, _ = run_cheap(tmp_path / "again", intermediate)
    assert (value2, trial2.params) == (value, trial.params)  # same sampler seed, same trial
    steps = intermediate.trials[0].intermediate_values
    assert sorted(steps) == [1, 2, 3]
    assert steps[3] == pytest.approx(value)
    payload = json.loads((trial_dir / "checkpoint" / cheap.CHEAP_CHECKPOINT_FILE).read_text())
    assert payload["trial_number"] == trial.number
    assert payload["value"] == value


def test_pruning_is_honoured_and_leaves_no_checkpoint(tmp_path: Path) -> None:
    config = hpo()
    study = new_study(config, pruner=AlwaysPrune())
    trial = study.ask()
    context = trial_context(config, tmp_path, tmp_path / "data", trial.number)
    with pytest.raises(optuna.TrialPruned):
        cheap.objective(trial, TINY, synthetic_data(tmp_path / "data"), context)
    assert not (context.trial_dir / "checkpoint").exists()


def test_sleep_env_slows_each_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cheap.SLEEP_ENV, "0.05")
    started = time.perf_counter()
    run_cheap(tmp_path, new_study(hpo()))
    assert time.perf_counter() - started >= cheap.STEPS * 0.05
    monkeypatch.setenv(cheap.SLEEP_ENV, "soon")
    with pytest.raises(InputError, match=cheap.SLEEP_ENV):
        run_cheap(tmp_path / "b", new_study(hpo()))


def test_cheap_benchmark_reads_the_cheap_checkpoint(tmp_path: Path) -> None:
    _, _, trial_dir = run_cheap(tmp_path, new_study(hpo()))
    data = synthetic_data(tmp_path / "data")
    result = cheap_bench.run_inference_benchmark(
        trial_dir / "checkpoint", data, tmp_path / "data", BENCH
    )
    again = cheap_bench.run_inference_benchmark(
        trial_dir / "checkpoint", data, tmp_path / "data", BENCH
    )
    assert result == again
    assert result.runner == "cheap"
    assert result.config == BENCH.fingerprint_payload()
    # precision x padding x batch size, each labelled.
    assert len(result.entries) == 8
    assert {(e.precision.value, e.padding.value) for e in result.entries} == {
        ("fp32", "sorted"),
        ("fp32", "fixed"),
        ("bf16", "sorted"),
        ("bf16", "fixed"),
    }
    for entry in result.entries:
        assert entry.latency_ms is not None
        assert entry.latency_ms.p50 <= entry.latency_ms.p95 <= entry.latency_ms.p99
        assert entry.throughput_sentences_per_s is not None
        assert entry.throughput_sentences_per_s > 0


def test_cheap_benchmark_fails_clearly_on_missing_or_corrupt_checkpoints(tmp_path: Path) -> None:
    data = synthetic_data(tmp_path / "data")
    missing = tmp_path / "trial_0" / "checkpoint"
    with pytest.raises(HpoqError, match="does not exist"):
        cheap_bench.run_inference_benchmark(missing, data, tmp_path, BENCH)
    missing.mkdir(parents=True)
    with pytest.raises(HpoqError, match=cheap.CHEAP_CHECKPOINT_FILE):
        cheap_bench.run_inference_benchmark(missing, data, tmp_path, BENCH)
    (missing / cheap.CHEAP_CHECKPOINT_FILE).write_text("{not json")
    with pytest.raises(HpoqError, match="corrupt"):
        cheap_bench.run_inference_benchmark(missing, data, tmp_path, BENCH)
    (missing / cheap.CHEAP_CHECKPOINT_FILE).write_text('{"value": 1}')
    with pytest.raises(HpoqError, match="trial_number"):
        cheap_bench.run_inference_benchmark(missing, data, tmp_path, BENCH)


def test_cheap_workloads_do_not_import_torch() -> None:
    code = (
        "import sys, hpoq.workers.objectives.cheap, hpoq.workers.bench.cheap, "
        "hpoq.workers.objectives.token_classification, hpoq.workers.bench.runner, "
        "hpoq.core.datasets; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, "
        "sorted(m for m in sys.modules if m.startswith(('torch', 'transformers')))"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_pinned_parameter_scores_like_a_single_choice() -> None:
    """low == high pins a value; it sits at the peak instead of dividing by zero."""
    space = HpoConfig.model_validate(
        {
            "backbones": [{"name": "tiny", "architecture": {}}],
            "n_trials": 1,
            "search_space": {
                "epochs": {"type": "int", "low": 3, "high": 3},
                "lr": {"type": "float", "low": 1e-3, "high": 1e-3, "log": True},
            },
        }
    ).search_space
    assert cheap.score({"epochs": 3, "lr": 1e-3}, space) == 1.0
