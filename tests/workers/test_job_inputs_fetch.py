"""A worker fetches what a job names by content into its own cache; what cannot be fetched
or verified fails the job with a clear error in MLflow and in `hpoq status`.

"Another host" here is a WorkerContext with its own output directory that shares only the
tracking store (SQLite file) and Redis with the producer. The same flow across processes
and a real tracking server is tests/integration/test_multi_host.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from hpoq.config.settings import Settings
from hpoq.core.content_store import CONTENT_EXPERIMENT, TAG_KIND, digest_tag
from hpoq.core.runtime import Runtime
from hpoq.core.trial_record import write_json_atomic
from hpoq.producer.status import cluster_status
from hpoq.workers.benchmark_job import checkpoint_dir, execute_benchmark
from hpoq.workers.checkpoint_store import ARTIFACT_PATH
from hpoq.workers.context import WorkerContext
from hpoq.workers.trial_runner import execute_trial
from tests.integration.inprocess import World, finished_sweep


def other_host(world: World, root: Path) -> WorkerContext:
    """A worker with its own output directory; the same tracking store, Redis and keys."""
    runtime = Runtime.from_settings(
        Settings(output_dir=root, platform="local", MLFLOW_TRACKING_URI=world.runtime.mlflow_uri())
    )
    ctx = world.ctx
    return WorkerContext(runtime, ctx.redis, ctx.keys, ctx.budget, "other-host")


def _stored(world: World, kind: str, name: str) -> Path:
    """A file of published content as the artifact store holds it."""
    client = world.services.mlflow()
    experiment = client.get_experiment_by_name(CONTENT_EXPERIMENT)
    [run] = client.search_runs([experiment.experiment_id], f"tags.`{TAG_KIND}` = '{kind}'")
    return Path(run.info.artifact_uri.removeprefix("file://")) / "files" / name


def _corrupt(path: Path) -> None:
    path.write_text("Anna\tB-ORG\n\n" + path.read_text()[12:])


def _local_model(root: Path) -> dict[str, Any]:
    model = root / "models" / "tiny"
    model.mkdir(parents=True)
    (model / "config.json").write_text('{"model_type": "bert"}')
    return {"backbones": [{"name": "tiny", "model": "../models/tiny"}]}


@pytest.mark.parametrize(
    ("kind", "name", "damage", "expected"),
    [
        ("data", "train.conll", _corrupt, "data 'synthetic-ner': "),
        ("models", "config.json", lambda path: path.unlink(), "backbone 'tiny': model "),
    ],
    ids=["corrupt-data-file", "model-file-gone"],
)
def test_inputs_that_cannot_be_fetched_fail_the_trial_clearly_and_cache_nothing(
    tmp_path: Path,
    real_redis: redis.Redis,
    redis_url: str,
    kind: str,
    name: str,
    damage: Callable[[Path], None],
    expected: str,
) -> None:
    world = World.create(
        tmp_path, real_redis, redis_url, n_trials=1, hpo_extra=_local_model(tmp_path)
    )
    [job] = world.submit()
    damage(_stored(world, kind, name))
    worker = world.ctx  # publishing fills no cache: this host downloads it too

    outcome = execute_trial(job, worker)

    assert outcome.status == "failed"
    [run] = world.runs(world.experiment.hpo_experiment_name)
    assert run.info.status == "FAILED"
    error = run.data.tags[world.experiment.tags.benchmark.error]
    assert expected in error and name in error
    status = cluster_status(world.services, world.experiment)
    assert [(v["failed"], v["finished"]) for v in status["variants"]] == [(1, 0)]
    cache = worker.runtime.layout.content_cache() / kind
    assert not cache.exists() or list(cache.iterdir()) == []  # no entry, no staging folder


@pytest.fixture
def world(
    tmp_path: Path, real_redis: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> World:
    return finished_sweep(tmp_path, real_redis, redis_url, monkeypatch)


def test_a_benchmark_on_another_host_fetches_the_verified_checkpoint(
    tmp_path: Path, world: World
) -> None:
    [job] = world.benchmark()
    worker = other_host(world, tmp_path / "worker")
    assert not checkpoint_dir(job, worker).exists()  # this host never trained it

    outcome = execute_benchmark(job, worker)

    assert outcome.status == "measured", outcome.error
    digest = world.services.mlflow().get_run(job.run_id).data.tags[digest_tag(ARTIFACT_PATH)]
    fetched = worker.runtime.layout.content_cache() / "checkpoints" / digest
    assert fetched.is_dir()
    [run] = world.runs(world.experiment.benchmark_experiment_name)
    result = world.services.mlflow().download_artifacts(run.info.run_id, "benchmark.json")
    assert str(fetched) in Path(result).read_text()
    data_cache = worker.runtime.layout.content_cache() / "data"
    assert len(list(data_cache.iterdir())) == 1  # the test split came by content too


def test_a_checkpoint_that_does_not_match_its_hash_fails_the_benchmark_clearly(
    tmp_path: Path, world: World
) -> None:
    [job] = world.benchmark()
    run = world.services.mlflow().get_run(job.run_id)
    stored = Path(run.info.artifact_uri.removeprefix("file://")) / ARTIFACT_PATH
    [checkpoint_file] = list(stored.iterdir())
    write_json_atomic(checkpoint_file, {"trial_number": 99})  # tampered after upload
    worker = other_host(world, tmp_path / "worker")

    outcome = execute_benchmark(job, worker)

    assert outcome.status == "failed"
    assert "does not match its hash" in (outcome.error or "")
    assert checkpoint_file.name in (outcome.error or "")
    [failed] = world.runs(world.experiment.benchmark_experiment_name)
    assert failed.info.status == "FAILED"
    assert "does not match its hash" in failed.data.tags["hpoq.error"]
    status = cluster_status(world.services, world.experiment)
    assert status["failed_benchmarks"] == [job.benchmark_key]
    cache = worker.runtime.layout.content_cache() / "checkpoints"
    assert not [p for p in cache.iterdir() if not p.name.endswith(".lock")]
