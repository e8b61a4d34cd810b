"""Final training on real Celery workers, Redis and MLflow: the best trial trained once
more on train + validation, scored on test above an untrained model, published and
benchmarked exactly once; a second `hpoq train-final` does no work, another seed makes a
new variant, and six concurrent `force_new` producers get six distinct variants."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from hpoq.config.hpo import BUILTIN_OBJECTIVE
from hpoq.config.loader import load_experiment
from hpoq.config.settings import Settings
from hpoq.core.celery_app import create_app
from hpoq.core.content_store import CHECKPOINT_ARTIFACT_PATH, digest_tag
from hpoq.core.coordination.keys import redis_keys
from hpoq.core.runtime import Runtime
from hpoq.core.tracking import make_client
from hpoq.producer.submit import Submitter
from tests.factories import write_experiment
from tests.integration.cluster import cluster_env, wait_for, workers

pytestmark = pytest.mark.slow
QUEUES = "hpo,benchmark,train"


def _runs(runtime: Runtime, name: str) -> list[Any]:
    client = make_client(runtime.mlflow_uri())
    exp = client.get_experiment_by_name(name)
    return [] if exp is None else client.search_runs([exp.experiment_id], max_results=1000)


def _finished(runtime: Runtime, name: str, study_name: str) -> list[Any]:
    return [
        r
        for r in _runs(runtime, name)
        if r.info.status == "FINISHED" and r.data.tags.get("hpoq.study_name") == study_name
    ]


def _command(path: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "hpoq.producer", args[0], str(path), *args[1:], "--json"]


def _cli(path: Path, env: dict[str, str], *args: str) -> dict[str, Any]:
    result = subprocess.run(
        _command(path, *args), env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)  # type: ignore[no-any-return]


@pytest.mark.timeout(600)  # a sweep, three trainings and seven producers on 2 shared cores
def test_final_training_trains_once_is_benchmarked_once_and_numbers_new_variants(
    tmp_path: Path, real_redis: redis.Redis, redis_url: str
) -> None:
    output = tmp_path / "out"
    path = write_experiment(
        tmp_path,
        n_trials=2,
        objective=BUILTIN_OBJECTIVE,
        hpo_extra={
            "trainer": {"max_seq_length": 32},
            "search_space": {  # one epoch per trial; the final model gets more
                "learning_rate": {"type": "float", "low": 3e-3, "high": 6e-3, "log": True},
                "batch_size": {"type": "categorical", "choices": [8]},
                "epochs": {"type": "int", "low": 1, "high": 1},
            },
        },
        benchmark_extra={"batch_sizes": [4], "padding": ["sorted"]},
        final_training={"seeds": [0], "epochs": 12},
    )
    experiment = load_experiment(path)
    runtime = Runtime.from_settings(Settings(output_dir=output, platform="local"))
    Submitter(experiment, runtime, real_redis, redis_keys(runtime), create_app(redis_url)).submit()
    env = cluster_env(output, redis_url)
    bench = experiment.benchmark_experiment_name
    with workers(env, tmp_path, 1, QUEUES) as pool:
        wait_for(lambda: _finished(runtime, bench, "hpo_tiny"), 300, "the sweep's benchmark", pool)
        first = _cli(path, env, "train-final", "--wait")
        [item] = first["final_trainings"]
        assert (item["action"], item["name"], item["variant"]) == ("created", "final_tiny", 1)
        assert first["results"][item["job_id"]]["status"] == "trained"
        # The worker enqueued the final model's benchmark when it finished.
        measured = wait_for(
            lambda: _finished(runtime, bench, "final_tiny"),
            300,
            "the final model's benchmark",
            pool,
        )
        again = _cli(path, env, "train-final")
        assert [i["action"] for i in again["final_trainings"]] == ["reused"]
        assert _cli(path, env, "benchmark")["enqueued"] == []
        seeds = tmp_path / "config" / "final_training.yaml"
        seeds.write_text(yaml.safe_dump({"seeds": [1], "epochs": 12}))
        reseeded = _cli(path, env, "train-final", "--wait")
        [other] = reseeded["final_trainings"]
        assert (other["action"], other["name"]) == ("created", "final_tiny_v2")
        assert other["spec_fp"] == item["spec_fp"] and other["exec_fp"] != item["exec_fp"]
    models = _cli(path, env, "retrieve", "--stage", "final")["final_models"]
    assert [(m["name"], m["seed"]) for m in models] == [("final_tiny", 0), ("final_tiny_v2", 1)]
    assert all(m["checkpoint"]["local_path"] and m["checkpoint"]["digest"] for m in models)
    assert len(measured) == 1
    assert len(_finished(runtime, bench, "final_tiny")) == 1  # benchmarked exactly once

    [run] = _finished(runtime, experiment.final_experiment_name, "final_tiny")
    tags, metrics, params = run.data.tags, run.data.metrics, run.data.params
    assert tags["hpoq.stage"] == "final_training" and tags["hpoq.variant"] == "1"
    assert tags["hpoq.spec_fp"] == item["spec_fp"] and tags["hpoq.exec_fp"] == item["exec_fp"]
    assert (
        tags["hpoq.source_study_name"] == "hpo_tiny" and tags[digest_tag(CHECKPOINT_ARTIFACT_PATH)]
    )
    assert params["train_on_validation"] == "True" and params["seed"] == "0"
    for split in ("train", "validation", "test"):
        assert {f"{split}.macro-f1", f"{split}.micro-f1"} <= set(metrics)
    assert any(name.startswith("test.f1.") for name in metrics)  # per entity type
    assert metrics["test.macro-f1"] > metrics["test_untrained.macro-f1"]

    # Six producers at once, each asking for a new variant: six numbers, none shared.
    procs = [
        subprocess.Popen(
            _command(path, "train-final", "--run-mode", "force_new"),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(6)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e.decode()[-1500:] for _, e in outs]
    items = [i for out, _ in outs for i in json.loads(out)["final_trainings"]]
    assert sorted(i["variant"] for i in items) == [3, 4, 5, 6, 7, 8]
    assert {i["action"] for i in items} == {"created"}
    assert real_redis.llen("train") == 6
