"""Fault: the disk fills up while a benchmark result is being cached.

Tests run as root, so a read-only directory would not stop them: the fault is injected
into os.replace / os.fsync for the cache directory only. The cache is never half-written
(no temporary file, no partial JSON, a previous file intact), the measurement does not
count as published, and the next run repairs it.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest
import redis

from hpoq.core.benchmark_index import read_cache
from hpoq.core.coordination.leases import BenchmarkLeases
from hpoq.core.jobs import BenchmarkJob
from hpoq.producer.benchmark import benchmark_experiment, retry_failed
from hpoq.workers.benchmark_job import execute_benchmark
from tests.integration.inprocess import World, finished_sweep


@pytest.fixture
def world(
    tmp_path: Path, real_redis: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> World:
    return finished_sweep(tmp_path, real_redis, redis_url, monkeypatch)


def _fill_disk(monkeypatch: pytest.MonkeyPatch, directory: Path, step: str) -> None:
    """ENOSPC from `step` ('replace' or 'fsync') for files in `directory`, and only there."""
    real = getattr(os, step)

    def in_directory(path: Any) -> bool:
        return Path(os.fsdecode(path)).parent == directory

    def full(*args: Any, **kwargs: Any) -> Any:
        target = args[1] if step == "replace" else os.readlink(f"/proc/self/fd/{args[0]}")
        if in_directory(target):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fsdecode(target))
        return real(*args, **kwargs)

    monkeypatch.setattr(os, step, full)


def _bench_runs(world: World) -> list[Any]:
    return world.runs(world.experiment.benchmark_experiment_name)


def _cache_files(world: World) -> list[Path]:
    directory = world.runtime.layout.benchmark_cache_dir()
    return sorted(directory.iterdir()) if directory.is_dir() else []


@pytest.mark.parametrize("step", ["replace", "fsync"])
def test_a_full_disk_while_caching_leaves_no_partial_file_and_retry_failed_repairs_it(
    world: World, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    [job] = world.benchmark()
    _fill_disk(monkeypatch, world.runtime.layout.benchmark_cache_dir(), step)
    outcome = execute_benchmark(job, world.ctx)
    assert outcome.status == "failed"
    assert "No space left on device" in (outcome.error or "")
    assert _cache_files(world) == []  # no temporary file, no partial JSON
    # Not published: the run that was being filled is FAILED with the reason, none FINISHED.
    [run] = _bench_runs(world)
    assert run.info.status == "FAILED" and run.info.run_id == outcome.run_id
    assert "No space left on device" in run.data.tags["hpoq.error"]
    assert world.redis.hexists(world.services.keys.failed_benchmarks(), job.benchmark_key)
    assert BenchmarkLeases(world.redis, world.services.keys).holder(job.benchmark_key) is None

    monkeypatch.undo()  # space is freed
    monkeypatch.setenv("HPOQ_LEASE_SECONDS", "5")
    report = retry_failed(world.services)
    assert [e["key"] for e in report.enqueued] == [job.benchmark_key]
    [again] = world.queued_benchmarks()
    repaired = execute_benchmark(again, world.ctx)
    assert repaired.status == "measured"
    [cache] = _cache_files(world)
    payload = json.loads(cache.read_text())
    assert payload["benchmark_key"] == job.benchmark_key and payload["run_id"] == repaired.run_id
    finished = [r for r in _bench_runs(world) if r.info.status == "FINISHED"]
    assert [r.info.run_id for r in finished] == [repaired.run_id]


def test_a_full_disk_while_re_measuring_keeps_the_previous_cache_whole(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    [job] = world.benchmark()
    first = execute_benchmark(job, world.ctx)
    [cache] = _cache_files(world)
    before = cache.read_bytes()
    benchmark_experiment(world.experiment, world.services, mode_override="force_new")
    [forced] = world.queued_benchmarks()
    _fill_disk(monkeypatch, cache.parent, "replace")
    assert execute_benchmark(forced, world.ctx).status == "failed"
    assert _cache_files(world) == [cache] and cache.read_bytes() == before
    assert read_cache(world.runtime.layout, job.benchmark_key)["run_id"] == first.run_id  # type: ignore[index]

    monkeypatch.undo()
    monkeypatch.setenv("HPOQ_LEASE_SECONDS", "5")
    benchmark_experiment(world.experiment, world.services, mode_override="force_new")
    [again] = world.queued_benchmarks()
    assert isinstance(again, BenchmarkJob) and again.fence == 3
    remeasured = execute_benchmark(again, world.ctx)
    assert remeasured.status == "measured"
    cached = read_cache(world.runtime.layout, job.benchmark_key)
    assert cached is not None and cached["fence"] == 3 and cached["run_id"] == remeasured.run_id
    assert len(_cache_files(world)) == 1
