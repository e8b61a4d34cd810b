"""How many jobs wait on each queue, whichever broker carries them.

Redis: the length of the queue's list (a queue that holds nothing has no key). RabbitMQ: the
`message_count` of a passive `queue.declare`, which creates nothing (a queue no worker or
producer has declared yet counts 0). Either counts messages waiting, not those a worker
has taken and not yet acknowledged.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from hpoq.core.celery_app import is_amqp
from hpoq.core.coordination.connection import connect
from hpoq.errors import ServiceError
from hpoq.redaction import redact_url

if TYPE_CHECKING:
    import redis
    from celery import Celery


def queue_lengths(
    celery: Celery, coordination: redis.Redis, redis_url: str, queues: Iterable[str]
) -> dict[str, int]:
    """Messages waiting on each of `queues`, on `celery`'s broker. `coordination`: the client
    of `redis_url`, used as it is when the broker is that Redis (a snapshot's included)."""
    broker = str(celery.conf.broker_url)
    if is_amqp(broker):
        return _amqp_lengths(celery, queues)
    client = coordination if broker == redis_url else connect(broker)
    try:
        return {queue: int(client.llen(queue)) for queue in queues}
    finally:
        if client is not coordination:
            client.close()


def _amqp_lengths(celery: Celery, queues: Iterable[str]) -> dict[str, int]:
    lengths: dict[str, int] = {}
    with celery.connection_for_read() as conn:
        try:
            for queue in queues:
                channel = conn.channel()  # a failed passive declare closes its channel
                try:
                    count = channel.queue_declare(queue, passive=True).message_count
                    lengths[queue] = int(count)
                except conn.channel_errors:
                    lengths[queue] = 0  # not declared yet: nothing was ever sent to it
                finally:
                    channel.close()
        except conn.connection_errors as exc:
            broker = redact_url(str(celery.conf.broker_url))
            raise ServiceError(f"the broker at {broker} is unreachable: {exc}") from None
    return lengths
