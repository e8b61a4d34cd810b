"""The RabbitMQ screening transport against kombu and py-amqp themselves (a private virtual
host on a real RabbitMQ; skipped without one): poison deliveries are dead-lettered in the
coordination Redis and rejected, valid ones are delivered. These tests fail when kombu or
py-amqp stop delivering messages the way amqp_transport.py relies on."""

from __future__ import annotations

import inspect

import amqp
import pytest
import redis
from kombu import Connection, Queue  # type: ignore[attr-defined]
from kombu.transport import pyamqp

from hpoq.core.celery_app import DEAD_LETTERS_OPTION, SCREENING_AMQP_TRANSPORTS, create_app
from hpoq.core.coordination.dead_letters import DeadLetters
from hpoq.core.jobs import JOB_QUEUES, QUEUE_BENCHMARK, QUEUE_HPO, QUEUE_TRAIN, TASK_RUN_TRIAL
from hpoq.workers.amqp_transport import Channel, SSLTransport, Transport
from hpoq.workers.message_screen import screen_delivery
from tests.queue_messages import amqp_poison_messages

LEFT_TO_CELERY = {"unknown task", "pickled content"}
REDIS = "redis://127.0.0.1:6379/0"


def test_the_kombu_and_py_amqp_hooks_it_relies_on_are_there() -> None:
    parameters = inspect.signature(amqp.Channel.basic_consume).parameters
    assert {"queue", "no_ack", "callback"} <= set(parameters)
    assert issubclass(Channel, pyamqp.Channel)
    assert Transport.Connection.Channel is Channel and SSLTransport.Connection.Channel is Channel
    assert issubclass(SSLTransport, pyamqp.SSLTransport)
    assert set(JOB_QUEUES) == {QUEUE_HPO, QUEUE_BENCHMARK, QUEUE_TRAIN}


def test_workers_on_rabbitmq_screen_and_keep_redis_only_settings_off_the_broker() -> None:
    worker = create_app(REDIS, consumer=True, broker="amqp://u:p@rabbit:5672/hpoq").conf
    assert worker.broker_transport == SCREENING_AMQP_TRANSPORTS["amqp"]
    assert worker.broker_transport_options == {DEAD_LETTERS_OPTION: REDIS}
    assert worker.result_backend == REDIS  # results (and coordination) stay in Redis
    assert worker.result_backend_transport_options["visibility_timeout"] == 43200
    assert worker.task_acks_late and worker.task_reject_on_worker_lost
    secure = create_app(REDIS, consumer=True, broker="amqps://u:p@rabbit:5671/hpoq").conf
    assert secure.broker_transport == SCREENING_AMQP_TRANSPORTS["amqps"]
    producer = create_app(REDIS, broker="amqp://u:p@rabbit:5672/hpoq").conf
    assert producer.broker_transport is None  # producers: kombu's own
    on_redis = create_app(REDIS).conf
    assert on_redis.broker_url == REDIS
    assert on_redis.broker_transport_options["visibility_timeout"] == 43200


def test_the_dead_letters_url_is_masked_in_celerys_reports() -> None:
    conf = create_app("redis://:s3cret@h:6379/0", broker="amqp://u:p@rabbit//").conf
    assert "s3cret" not in str(conf.humanize(with_defaults=False, censored=True))


@pytest.fixture
def template(amqp_url: str, redis_url: str) -> amqp.Message:
    app = create_app(redis_url, broker=amqp_url)
    app.send_task(TASK_RUN_TRIAL, args=[{"job_id": "x"}], queue=QUEUE_HPO, task_id="first")
    app.close()
    with Connection(amqp_url) as conn:
        message = conn.default_channel.basic_get(QUEUE_HPO, no_ack=True)
    assert message is not None
    return message


def test_a_message_the_producer_sends_passes(template: amqp.Message) -> None:
    props = template.properties
    assert (
        screen_delivery(
            props["application_headers"],
            props["content_type"],
            props["content_encoding"],
            template.body,
        )
        is None
    )


def test_poison_is_dead_lettered_and_rejected_and_valid_messages_still_arrive(
    amqp_url: str, redis_url: str, real_redis: redis.Redis, template: amqp.Message
) -> None:
    poison = amqp_poison_messages(template.body, dict(template.properties))
    with Connection(amqp_url) as conn:
        channel = conn.default_channel
        for body, properties in poison.values():
            kept = {k: v for k, v in properties.items() if v is not None}
            channel.basic_publish(amqp.Message(body, **kept), exchange="", routing_key=QUEUE_HPO)
        valid = {k: v for k, v in template.properties.items() if v is not None}
        channel.basic_publish(amqp.Message(template.body, **valid), routing_key=QUEUE_HPO)

    delivered: list[str] = []

    def on_message(message: object) -> None:  # undecoded: Celery decides on content
        delivered.append(message.headers["task"])  # type: ignore[attr-defined]
        message.ack()  # type: ignore[attr-defined]

    conn = Connection(
        amqp_url, transport=Transport, transport_options={DEAD_LETTERS_OPTION: redis_url}
    )
    with conn, conn.Consumer(Queue(QUEUE_HPO), on_message=on_message):
        for _ in range(200):
            if len(delivered) > len(LEFT_TO_CELERY):
                break
            try:
                conn.drain_events(timeout=0.5)
            except TimeoutError:
                continue

    letters = DeadLetters(real_redis)
    assert letters.count() == len(poison) - len(LEFT_TO_CELERY)
    assert sorted(delivered) == sorted([TASK_RUN_TRIAL, TASK_RUN_TRIAL, "no.such.task"])
    recent = letters.recent(100)
    assert {entry["queue"] for entry in recent} == {QUEUE_HPO}
    reasons = " | ".join(entry["reason"] for entry in recent)
    for words in ("body is not JSON", "body is a JSON null", "no headers object", "oversized"):
        assert words in reasons, words
    with Connection(amqp_url) as check:  # rejected without requeue: nothing comes back
        assert check.default_channel.queue_declare(QUEUE_HPO, passive=True).message_count == 0
