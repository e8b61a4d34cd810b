"""The screening transport against kombu itself (real Redis): poison messages are
dead-lettered and consumed, valid ones are delivered. These tests fail when kombu stops
reading messages the way broker_transport.py relies on."""

from __future__ import annotations

import inspect
import json

import redis
from kombu import Connection, Queue  # type: ignore[attr-defined]
from kombu.transport import redis as kombu_redis

from hpoq.core.celery_app import SCREENING_TRANSPORT, create_app
from hpoq.core.coordination.dead_letters import DeadLetters
from hpoq.core.jobs import QUEUE_HPO, TASK_RUN_TRIAL
from hpoq.workers.broker_transport import TRANSPORT, Channel
from tests.queue_messages import poison_messages, raw_messages

LEFT_TO_CELERY = {"unknown task", "pickled content"}


def test_the_kombu_hooks_it_relies_on_are_there() -> None:
    assert "asynchronous" in inspect.signature(kombu_redis.Channel._create_client).parameters
    assert issubclass(Channel, kombu_redis.Channel)
    assert TRANSPORT == SCREENING_TRANSPORT
    assert create_app("redis://h/0", consumer=True).conf.broker_transport == TRANSPORT
    assert create_app("redis://h/0").conf.broker_transport is None  # producers: kombu's own


def test_poison_is_dead_lettered_and_valid_messages_still_arrive(
    real_redis: redis.Redis, redis_url: str
) -> None:
    app = create_app(redis_url)
    app.send_task(TASK_RUN_TRIAL, args=[{"job_id": "x"}], queue=QUEUE_HPO, task_id="first")
    [valid] = raw_messages(real_redis, QUEUE_HPO)
    real_redis.delete(QUEUE_HPO)
    poison = poison_messages(valid)
    for raw in poison.values():
        real_redis.lpush(QUEUE_HPO, raw)
    app.send_task(TASK_RUN_TRIAL, args=[{"job_id": "y"}], queue=QUEUE_HPO, task_id="last")

    delivered: list[str] = []

    def on_message(message: object) -> None:  # undecoded: Celery decides on content
        delivered.append(message.headers["id"])  # type: ignore[attr-defined]
        message.ack()  # type: ignore[attr-defined]

    conn = Connection(redis_url, transport=TRANSPORT)
    with conn, conn.Consumer(Queue(QUEUE_HPO), on_message=on_message):
        for _ in range(200):
            if "last" in delivered:
                break
            try:
                conn.drain_events(timeout=0.5)
            except TimeoutError:
                continue
    app.close()

    letters = DeadLetters(real_redis)
    screened_out = len(poison) - len(LEFT_TO_CELERY)
    assert letters.count() == screened_out
    assert "last" in delivered and len(delivered) == len(LEFT_TO_CELERY) + 1
    assert real_redis.llen(QUEUE_HPO) == 0 and real_redis.hlen("unacked") == 0
    recent = letters.recent(100)
    assert {entry["queue"] for entry in recent} == {QUEUE_HPO}
    [null] = [e for e in recent if e["head"] == "null"]
    assert "null" in null["reason"] and null["size"] == 4
    assert all(len(entry["head"].encode()) <= 256 * 3 for entry in recent)
    assert real_redis.ttl("hpoq:dead-letters") > 0 and real_redis.ttl("hpoq:dead-letters:count") > 0
    assert json.loads(real_redis.lindex("hpoq:dead-letters", 0))["reason"]
