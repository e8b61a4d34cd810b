"""Queue lengths on either broker: Redis lists, RabbitMQ's passive declare (a private
virtual host; skipped without a RabbitMQ)."""

from __future__ import annotations

import re

import pytest
import redis

from hpoq.core.celery_app import create_app
from hpoq.core.jobs import JOB_QUEUES, QUEUE_BENCHMARK, QUEUE_HPO, QUEUE_TRAIN, TASK_RUN_TRIAL
from hpoq.errors import ServiceError
from hpoq.producer.queue_depth import queue_lengths

QUEUES = JOB_QUEUES


def test_redis_queue_lengths(real_redis: redis.Redis, redis_url: str) -> None:
    app = create_app(redis_url)
    assert queue_lengths(app, real_redis, redis_url, QUEUES) == {
        QUEUE_HPO: 0,
        QUEUE_BENCHMARK: 0,
        QUEUE_TRAIN: 0,
    }
    for n in range(2):
        app.send_task(TASK_RUN_TRIAL, args=[{"n": n}], queue=QUEUE_HPO)
    assert queue_lengths(app, real_redis, redis_url, QUEUES) == {
        QUEUE_HPO: 2,
        QUEUE_BENCHMARK: 0,
        QUEUE_TRAIN: 0,
    }
    app.close()


def test_rabbitmq_queue_lengths_never_declare_a_queue(
    real_redis: redis.Redis, redis_url: str, amqp_url: str
) -> None:
    app = create_app(redis_url, broker=amqp_url)
    # Nothing declared yet: 0 (a passive declare creates nothing, and raises for a queue
    # that is not there).
    assert queue_lengths(app, real_redis, redis_url, QUEUES) == {
        QUEUE_HPO: 0,
        QUEUE_BENCHMARK: 0,
        QUEUE_TRAIN: 0,
    }
    for n in range(3):
        app.send_task(TASK_RUN_TRIAL, args=[{"n": n}], queue=QUEUE_HPO)
    assert queue_lengths(app, real_redis, redis_url, QUEUES) == {
        QUEUE_HPO: 3,
        QUEUE_BENCHMARK: 0,
        QUEUE_TRAIN: 0,
    }
    assert real_redis.llen(QUEUE_HPO) == 0  # the jobs are on RabbitMQ, not in Redis
    app.close()


def test_an_unreachable_rabbitmq_is_a_service_error(
    real_redis: redis.Redis, redis_url: str
) -> None:
    app = create_app(redis_url, broker="amqp://u:s3cret@127.0.0.1:1//")
    with pytest.raises(ServiceError, match=re.escape("broker at amqp://u:***@127.0.0.1:1")) as exc:
        queue_lengths(app, real_redis, redis_url, QUEUES)
    assert "s3cret" not in str(exc.value)
    app.close()
