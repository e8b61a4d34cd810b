"""`hpoq run` and `hpoq benchmark --wait` exit 1 when the work did not produce what was
asked, and say why: a backbone whose every trial fails, a benchmark that fails; each with
the first error a worker recorded and where the worker logs are. The objective and the
runner are user code on PYTHONPATH, run by real workers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from tests.factories import write_experiment
from tests.integration.cluster import cluster_env, workers
from tests.integration.probes import hpoq
from tests.producer.json_errors import error_document

pytestmark = pytest.mark.slow

USER_CODE = """
from hpoq.workers.bench.cheap import run_inference_benchmark
from hpoq.workers.objectives.cheap import objective as cheap_objective


def objective(trial, backbone, data, context):
    if backbone.name == "broken":
        raise ValueError("the broken backbone never trains")
    return cheap_objective(trial, backbone, data, context)


def runner(checkpoint_dir, data, data_dir, benchmark, device=None):
    raise RuntimeError("no device left for benchmarks")
"""


def test_run_and_benchmark_wait_exit_1_naming_each_failure_and_its_worker_error(
    tmp_path: Path, redis_url: str, real_redis: redis.Redis
) -> None:
    (tmp_path / "user_code.py").write_text(USER_CODE, encoding="utf-8")
    path = write_experiment(
        tmp_path,
        backbones=("good", "broken"),
        n_trials=2,
        objective="user_code:objective",
        benchmark_extra={"runner": "user_code:runner"},
    )
    output = tmp_path / "out"
    env = cluster_env(output, redis_url, PYTHONPATH=str(tmp_path))
    result = hpoq(env, "run", str(path), "--json", timeout_s=600)
    assert result.returncode == 1, result.stderr[-4000:]
    error = error_document(result.stdout, 1, "work_failed")
    report = json.loads(result.stdout)
    # The results that did come out are still there, in the same document.
    assert [t["backbone"] for t in report["best_trials"]] == ["good"]
    assert report["missing"] == ["broken"]
    logs = str(output / "logs")
    assert report["logs"] == logs
    failures = {f["what"]: f for f in report["failures"]}
    assert set(failures) == {"trials", "benchmark"}
    assert failures["trials"]["backbone"] == "broken"
    assert failures["trials"]["error"] == "ValueError: the broken backbone never trains"
    assert failures["benchmark"]["backbone"] == "good"
    assert "RuntimeError: no device left for benchmarks" in failures["benchmark"]["error"]
    assert "2 failures" in error["message"]
    # The person reading the terminal gets both errors and the logs.
    for text in (
        "broken: no completed trial in hpo_broken",
        "ValueError: the broken backbone never trains",
        "RuntimeError: no device left for benchmarks",
        f"worker logs: {logs}",
    ):
        assert text in result.stderr, result.stderr[-4000:]
    assert list((output / "logs").glob("worker-*.log"))

    # `benchmark --wait` measures the failed key again, on a worker of its own: it fails
    # the same way, and the command says so.
    with workers(env, tmp_path, 1) as started:
        waited = hpoq(env, "benchmark", str(path), "--wait", "--json", timeout_s=300)
    assert waited.returncode == 1, waited.stderr[-3000:] + started[0].log()[-3000:]
    document = json.loads(waited.stdout)
    [failure] = document["failures"]
    assert failure["key"] == failures["benchmark"]["key"]
    assert "RuntimeError: no device left for benchmarks" in failure["error"]
    assert error_document(waited.stdout, 1, "work_failed")["message"].startswith(
        f"benchmark {failure['key']} failed; worker error: RuntimeError"
    )
    assert "no device left for benchmarks" in waited.stderr
