"""Fault: an objective that fails for some points. Failed trials are replaced up to
`max_failed_trials`; then the variant finishes with failures, its best completed trial is
still benchmarked, and `hpoq run` and `hpoq status` say why it stopped and how to go on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from hpoq.config.loader import load_experiment
from hpoq.config.settings import Settings
from hpoq.core.runtime import Runtime
from tests.factories import write_experiment
from tests.integration.cluster import cluster_env
from tests.integration.probes import REPO_ROOT, State, finished, hpoq_json, runs, trials

pytestmark = pytest.mark.slow


def test_a_failing_objective_ends_finished_with_failures_and_is_benchmarked(
    tmp_path: Path, real_redis: redis.Redis, redis_url: str
) -> None:
    path = write_experiment(
        tmp_path,
        n_trials=2,
        objective="tests.integration.crashing:fails_after_the_first",
        hpo_extra={"max_failed_trials": 1},
        benchmark_extra={"runner": "hpoq.workers.bench.cheap:run_inference_benchmark"},
    )
    output = tmp_path / "out"
    env = cluster_env(
        output,
        redis_url,
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    )
    result = subprocess.run(
        [sys.executable, "-m", "hpoq.producer", "run", str(path), "--json"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout)
    status = hpoq_json(env, "status", str(path))

    experiment = load_experiment(path)
    runtime = Runtime.from_settings(Settings(output_dir=output, platform="local"))
    # Trial 0 completed; trial 1 failed and was replaced; its replacement failed too, one
    # more than max_failed_trials replaces: the variant stopped there.
    assert len(trials(runtime, experiment, State.COMPLETE)) == 1
    assert len(trials(runtime, experiment, State.FAIL)) == 2
    assert trials(runtime, experiment, State.RUNNING) == []
    # `hpoq run` says why it stopped ...
    [stopped] = report["stopped"]
    assert stopped["state"] == "finished with failures"
    assert "max_failed_trials (1)" in stopped["reason"]
    assert any("max_failed_trials" in w for w in report["warnings"])
    # ... and still benchmarked the best completed trial.
    [bench] = report["benchmarks"]
    assert bench["status"] == "measured" and bench["trial"] == 0
    assert len(finished(runs(runtime, experiment.benchmark_experiment_name))) == 1
    # `hpoq status` says the same, with the command that tops the variant up.
    [variant] = status["incomplete_variants"]
    assert variant["state"] == "finished with failures" and variant["failed"] == 2
    assert variant["command"] == f"hpoq submit {path} --backbone tiny --variant 1"
    hpo_runs = runs(runtime, experiment.hpo_experiment_name)
    failed_runs = [r for r in hpo_runs if r.info.status == "FAILED"]
    assert len(failed_runs) == 2
    assert all("loss diverged" in r.data.tags["hpoq.error"] for r in failed_runs)
