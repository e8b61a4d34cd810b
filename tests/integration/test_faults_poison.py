"""Fault: any bytes on a worker's queues. Every shape of bad message (not JSON, truncated,
`null`, a list, a number or a string where an object belongs, missing or wrong headers,
unknown tasks, pickles, oversized bodies, bad job payloads) is dead-lettered with its
reason and first bytes, acknowledged, and counted in `hpoq status`; the same worker
process then runs a real sweep and its benchmark."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from hpoq.config.loader import load_experiment
from hpoq.config.settings import Settings
from hpoq.core.coordination.dead_letters import DeadLetters
from hpoq.core.jobs import QUEUE_BENCHMARK, QUEUE_HPO, TASK_RUN_TRIAL
from hpoq.core.runtime import Runtime
from hpoq.workers.celery_app import create_app
from tests.factories import write_experiment
from tests.integration.cluster import Worker, cluster_env, wait_for
from tests.integration.probes import (
    State,
    finished,
    hpoq_json,
    hpoq_keys_without_ttl,
    quiet,
    runs,
    trials,
)
from tests.queue_messages import poison_messages, raw_messages

pytestmark = pytest.mark.slow


def test_a_worker_survives_every_poison_message_then_runs_a_sweep(
    tmp_path: Path, real_redis: redis.Redis, redis_url: str
) -> None:
    app = create_app(redis_url)
    app.send_task(TASK_RUN_TRIAL, args=[{"job_id": "x"}], queue=QUEUE_HPO, task_id="template")
    [valid] = raw_messages(real_redis, QUEUE_HPO)
    real_redis.delete(QUEUE_HPO)
    poison = poison_messages(valid)

    output = tmp_path / "out"
    env = cluster_env(output, redis_url)
    worker = Worker(env, tmp_path / "worker.log")
    try:
        wait_for(lambda: " ready." in worker.log(), 120, "the worker", [worker])
        pid = worker.process.pid
        for raw in poison.values():
            real_redis.lpush(QUEUE_HPO, raw)
        for name in ("envelope null", "body null"):
            real_redis.lpush(QUEUE_BENCHMARK, poison[name])
        app.send_task(TASK_RUN_TRIAL, args=[{"not": "a job"}], queue=QUEUE_HPO)
        expected = len(poison) + 3
        letters = DeadLetters(real_redis)
        wait_for(lambda: letters.count() >= expected, 120, "every dead letter", [worker])
        wait_for(lambda: quiet(real_redis), 60, "empty queues", [worker])
        assert worker.process.poll() is None and worker.process.pid == pid

        # The same worker now runs a real sweep and its benchmark.
        path = write_experiment(tmp_path, n_trials=2)
        hpoq_json(env, "submit", str(path))
        runtime = Runtime.from_settings(Settings(output_dir=output, platform="local"))
        wait_for(lambda: finished(runs(runtime, "exp-benchmark")), 180, "the sweep", [worker])
        wait_for(lambda: quiet(real_redis), 60, "an idle cluster", [worker])
        status = hpoq_json(env, "status", str(path))
        assert worker.process.poll() is None and worker.process.pid == pid
    finally:
        worker.stop()
        app.close()

    log = worker.log()
    assert "Unrecoverable error" not in log
    assert letters.count() == expected
    recent = letters.recent(expected)
    reasons = " | ".join(entry["reason"] for entry in recent)
    for words in (
        "envelope is not JSON",
        "envelope is a JSON null",
        "body is a JSON null",
        "body is a JSON number",
        "body is a JSON string",
        "no headers object",
        "header 'id'",
        "oversized",
        "unknown task 'no.such.task'",
        "refused by Celery: ContentDisallowed",
        "invalid job payload",
    ):
        assert words in reasons, words
    assert {entry["queue"] for entry in recent} == {QUEUE_HPO, QUEUE_BENCHMARK}
    assert max(len(entry["head"].encode()) for entry in recent) <= 3 * 256
    assert status["dead_letters"]["count"] == expected
    assert len(trials(runtime, load_experiment(path), State.COMPLETE)) == 2
    assert hpoq_keys_without_ttl(real_redis) == []
