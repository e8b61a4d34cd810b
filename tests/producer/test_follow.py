"""`--wait` reads Celery's results: a job that failed (a FAILURE task) is reported as failed
with its error text, next to what the other jobs returned."""

from __future__ import annotations

import pytest
import redis

from hpoq.core.celery_app import create_app
from hpoq.errors import JobFailed
from hpoq.producer.commands.benchmark_cmd import failed_benchmarks
from hpoq.producer.follow import wait_for_jobs


def test_failed_jobs_are_reported_with_their_error_text(
    real_redis: redis.Redis, redis_url: str
) -> None:
    celery = create_app(redis_url)
    celery.backend.mark_as_done("job-ok", {"status": "measured", "benchmark_key": "k1"})
    celery.backend.mark_as_failure("job-bad", JobFailed("benchmark of k2 failed: OOM"))
    results = wait_for_jobs(celery, ["job-ok", "job-bad"], label="benchmarks", timeout_s=30)
    assert results["job-ok"] == {"status": "measured", "benchmark_key": "k1"}
    assert results["job-bad"] == {"status": "failed", "error": "benchmark of k2 failed: OOM"}
    enqueued = [
        {"job_id": "job-ok", "key": "k1", "backbone": "b"},
        {"job_id": "job-bad", "key": "k2", "backbone": "b"},
    ]
    assert failed_benchmarks(enqueued, results) == [{"key": "k2", "backbone": "b", "error": "OOM"}]


def test_off_a_terminal_each_job_is_one_line_as_it_ends(
    real_redis: redis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    celery = create_app(redis_url)
    celery.backend.mark_as_done("job-a", {"status": "measured", "benchmark_key": "k1"})
    celery.backend.mark_as_failure("job-b", JobFailed("benchmark of k2 failed: OOM"))
    wait_for_jobs(celery, ["job-a", "job-b"], label="benchmarks", timeout_s=30)
    err = capsys.readouterr().err
    assert "benchmarks: job job-a done (1/2)" in err
    assert "benchmarks: job job-b failed (2/2)" in err
