"""Fault: any bytes on a worker's queues, on Redis and on RabbitMQ. Every shape of bad
message (not JSON, truncated, `null`, a list, a number or a string where an object belongs,
missing or wrong headers, unknown tasks, pickles, oversized bodies, bad job payloads) is
dead-lettered with its reason and first bytes, acknowledged (on RabbitMQ: rejected without
requeue), and counted in `hpoq status`; the same worker process then runs a real sweep and
its benchmark."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from kombu import Connection  # type: ignore[attr-defined]

from hpoq.config.loader import load_experiment
from hpoq.config.settings import Settings
from hpoq.core.coordination.dead_letters import DeadLetters
from hpoq.core.jobs import QUEUE_BENCHMARK, QUEUE_HPO, TASK_RUN_TRIAL
from hpoq.core.runtime import Runtime
from tests.factories import write_experiment
from tests.integration.brokers import Broker
from tests.integration.cluster import Worker, cluster_env, wait_for
from tests.integration.probes import (
    State,
    finished,
    hpoq_json,
    hpoq_keys_without_ttl,
    runs,
    trials,
)
from tests.queue_messages import amqp_poison_messages, poison_messages, raw_messages

pytestmark = pytest.mark.slow


Push = Callable[[str, Any], None]


def _redis_poison(app: Celery, client: redis.Redis) -> tuple[dict[str, Any], Push, list[str]]:
    app.send_task(TASK_RUN_TRIAL, args=[{"job_id": "x"}], queue=QUEUE_HPO, task_id="template")
    [valid] = raw_messages(client, QUEUE_HPO)
    client.delete(QUEUE_HPO)
    poison = poison_messages(valid)
    return (
        {**poison, "to benchmark": poison["envelope null"]},
        lambda queue, raw: client.lpush(queue, raw),
        ["envelope is not JSON", "envelope is a JSON null", "body is a JSON null"],
    )


def _amqp_poison(app: Celery, broker: Broker) -> tuple[dict[str, Any], Push, list[str]]:
    import amqp

    app.send_task(TASK_RUN_TRIAL, args=[{"job_id": "x"}], queue=QUEUE_HPO, task_id="template")
    with Connection(broker.url) as conn:
        valid = conn.default_channel.basic_get(QUEUE_HPO, no_ack=True)
        assert valid is not None
        poison = amqp_poison_messages(valid.body, dict(valid.properties))

    def push(queue: str, message: Any) -> None:
        body, properties = message
        with Connection(broker.url) as conn:
            sent = amqp.Message(body, **{k: v for k, v in properties.items() if v is not None})
            conn.default_channel.basic_publish(sent, exchange="", routing_key=queue)

    return (
        {**poison, "to benchmark": poison["non-JSON bytes"]},
        push,
        ["body is not JSON", "body is a JSON null"],
    )


def test_a_worker_survives_every_poison_message_then_runs_a_sweep(
    tmp_path: Path, real_redis: redis.Redis, redis_url: str, broker: Broker
) -> None:
    app = broker.app(redis_url)
    poison, push, words = (
        _amqp_poison(app, broker) if broker.amqp else _redis_poison(app, real_redis)
    )
    benchmark_poison = [poison.pop("to benchmark"), poison["body null"]]

    output = tmp_path / "out"
    env = cluster_env(output, redis_url, **broker.env())
    worker = Worker(env, tmp_path / "worker.log")
    try:
        wait_for(lambda: " ready." in worker.log(), 120, "the worker", [worker])
        pid = worker.process.pid
        for raw in poison.values():
            push(QUEUE_HPO, raw)
        for raw in benchmark_poison:
            push(QUEUE_BENCHMARK, raw)
        app.send_task(TASK_RUN_TRIAL, args=[{"not": "a job"}], queue=QUEUE_HPO)
        expected = len(poison) + 3
        letters = DeadLetters(real_redis)
        wait_for(lambda: letters.count() >= expected, 120, "every dead letter", [worker])
        wait_for(lambda: broker.quiet(real_redis), 60, "empty queues", [worker])
        assert worker.process.poll() is None and worker.process.pid == pid

        # The same worker now runs a real sweep and its benchmark.
        path = write_experiment(tmp_path, n_trials=2)
        hpoq_json(env, "submit", str(path))
        runtime = Runtime.from_settings(Settings(output_dir=output, platform="local"))
        wait_for(lambda: finished(runs(runtime, "exp-benchmark")), 180, "the sweep", [worker])
        wait_for(lambda: broker.quiet(real_redis), 60, "an idle cluster", [worker])
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
    for word in (
        *words,
        "body is a JSON number",
        "body is a JSON string",
        "no headers object",
        "header 'id'",
        "oversized",
        "unknown task 'no.such.task'",
        "refused by Celery: ContentDisallowed",
        "invalid job payload",
    ):
        assert word in reasons, word
    assert {entry["queue"] for entry in recent} == {QUEUE_HPO, QUEUE_BENCHMARK}
    assert max(len(entry["head"].encode()) for entry in recent) <= 3 * 256
    assert status["dead_letters"]["count"] == expected
    assert len(trials(runtime, load_experiment(path), State.COMPLETE)) == 2
    assert hpoq_keys_without_ttl(real_redis) == []
