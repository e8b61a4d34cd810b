"""Screening raw queue messages: every poison shape is named, valid messages pass, and what
Celery refuses by itself (an unknown task, a content type it does not accept) is left to it."""

from __future__ import annotations

import pytest
import redis

from hpoq.core.celery_app import create_app
from hpoq.core.jobs import QUEUE_HPO, TASK_RUN_TRIAL
from hpoq.workers.message_screen import screen
from tests.queue_messages import poison_messages, raw_messages

LEFT_TO_CELERY = {"unknown task", "pickled content"}


@pytest.fixture
def valid(real_redis: redis.Redis, redis_url: str) -> bytes:
    """A message exactly as the producer sends it."""
    app = create_app(redis_url)
    app.send_task(TASK_RUN_TRIAL, args=[{"job_id": "x"}], queue=QUEUE_HPO, task_id="t-1")
    [raw] = raw_messages(real_redis, QUEUE_HPO)
    app.close()
    return raw


def test_a_message_the_producer_sends_passes(valid: bytes) -> None:
    assert screen(valid) is None


def test_every_poison_shape_is_named(valid: bytes) -> None:
    for name, raw in poison_messages(valid).items():
        problem = screen(raw)
        if name in LEFT_TO_CELERY:
            assert problem is None, name
        else:
            assert problem, name


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("non-JSON bytes", "envelope is not JSON"),
        ("envelope null", "JSON null"),
        ("body null", "body is a JSON null"),
        ("body number", "JSON number"),
        ("headers missing", "no headers"),
        ("unknown task without id", "'id'"),
        ("two arguments", "exactly one job payload"),
        ("oversized", "oversized"),
    ],
)
def test_the_reason_says_what_is_wrong(valid: bytes, name: str, words: str) -> None:
    assert words in (screen(poison_messages(valid)[name]) or "")
