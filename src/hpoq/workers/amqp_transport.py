"""kombu's py-amqp transport (RabbitMQ), with every job delivery screened before kombu reads it.

The AMQP counterpart of broker_transport.py. On RabbitMQ a message arrives framed (headers,
content type and body apart), but Celery still assumes a Celery protocol 2 task inside: a
JSON `null` body, bytes that are not JSON or a truncated body raise in the worker's main
process and end the worker, and RabbitMQ hands the unacknowledged message to the next
worker, which dies the same way. The hook is py-amqp's public `Channel.basic_consume`: the
callback kombu registers there (`Consumer._receive_callback`) for the job queues (`hpo`,
`benchmark`, consumed with acknowledgements) is wrapped, so each delivery is screened
(`message_screen.screen_delivery`) before kombu builds its Message. A poison delivery is
dead-lettered in the coordination Redis and rejected without requeue (dropped, or routed
to the queue's dead-letter exchange where an operator set one); the worker goes on. The
worker's other consumers (events, gossip, remote control) are left as they are.

What this relies on in kombu 5.7 and py-amqp 5.4, checked by
tests/workers/test_amqp_transport.py: `pyamqp.Connection.Channel` is the channel class;
`basic_consume` takes `queue`, `no_ack` and `callback`; the callback receives an
`amqp.Message` whose `delivery_info` holds its `delivery_tag`; the
connection's `client` is kombu's Connection, whose `transport_options` name the
coordination Redis (celery_app.DEAD_LETTERS_OPTION).

Selected with Celery's `broker_transport` setting for amqp:// and amqps:// URLs (see
celery_app.py).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

from kombu.transport import pyamqp

from hpoq.core.celery_app import DEAD_LETTERS_OPTION
from hpoq.core.jobs import JOB_QUEUES
from hpoq.workers.dead_letter_signals import record
from hpoq.workers.message_screen import screen_delivery

log = logging.getLogger(__name__)
_CONSUME = inspect.signature(pyamqp.Channel.basic_consume)


class Channel(pyamqp.Channel):
    def basic_consume(self, *args: Any, **kwargs: Any) -> Any:
        bound = _CONSUME.bind(self, *args, **kwargs)
        bound.apply_defaults()
        found = bound.arguments
        if found["queue"] in JOB_QUEUES and not found["no_ack"] and found["callback"]:
            found["callback"] = self._screened(str(found["queue"]), found["callback"])
        return super().basic_consume(*bound.args[1:], **bound.kwargs)

    def _screened(self, queue: str, callback: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def screened_delivery(message: Any) -> Any:
            properties = getattr(message, "properties", None) or {}
            problem = screen_delivery(
                properties.get("application_headers"),
                properties.get("content_type"),
                properties.get("content_encoding"),
                message.body,
            )
            if problem is None:
                return callback(message)
            log.error("dead-lettered a message on queue %r: %s", queue, problem)
            body = message.body
            self._record(problem, queue, body if isinstance(body, bytes) else str(body))
            self.basic_reject(message.delivery_info["delivery_tag"], requeue=False)
            return None

        return screened_delivery

    def _record(self, problem: str, queue: str, raw: bytes | str) -> None:
        client = getattr(self.connection, "client", None)
        options = getattr(client, "transport_options", None) or {}
        url = options.get(DEAD_LETTERS_OPTION)
        if url:
            record(str(url), problem, queue, raw)
        else:  # a bare kombu connection: nowhere to record it but the log
            log.error("no coordination Redis to record the dead letter in")


class Connection(pyamqp.Connection):
    Channel = Channel


class Transport(pyamqp.Transport):
    Connection = Connection


class SSLTransport(pyamqp.SSLTransport):
    Connection = Connection
