"""kombu's Redis transport, with every message screened before kombu reads it.

The one place hpoq reaches into kombu's internals. kombu takes a message off a queue with
BRPOP and parses it in `Channel._brpop_read` with no guard: bytes that are not a JSON
envelope, or an envelope that is not kombu's, raise in the worker's event loop and end
the worker. kombu offers no hook there, so the channel's client gets one through
redis-py's public `set_response_callback`: the BRPOP reply is screened
(`message_screen.screen`); a poison message is dead-lettered and answered as "nothing
arrived" (kombu raises its own `Empty`, which the event loop expects), so the message is
gone from the queue, never in `unacked`, and the worker goes on.

What this relies on in kombu 5.7, checked by tests/workers/test_broker_transport.py:
`Channel._create_client(asynchronous=True)` builds the client whose `parse_response(...,
'BRPOP')` reads messages, and a falsy BRPOP reply means "nothing arrived".

Selected with Celery's `broker_transport` setting (see celery_app.py); URLs keep their
redis:// or rediss:// meaning (TLS settings come from `broker_use_ssl`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from kombu.transport import redis as kombu_redis

from hpoq.core.celery_app import DEAD_LETTERS_OPTION
from hpoq.core.coordination.dead_letters import DeadLetters
from hpoq.workers.dead_letter_signals import record
from hpoq.workers.message_screen import screen

log = logging.getLogger(__name__)


class Channel(kombu_redis.Channel):
    def _create_client(self, asynchronous: bool = False) -> Any:
        client = super()._create_client(asynchronous=asynchronous)  # type: ignore[no-untyped-call]
        if asynchronous:
            parse = client.response_callbacks.get("BRPOP") or _as_tuple
            client.set_response_callback("BRPOP", self._screened(parse))
        return client

    def _screened(self, parse: Callable[..., Any]) -> Callable[..., Any]:
        def screened_brpop(response: Any, **options: Any) -> Any:
            if not response:
                return parse(response, **options)
            queue_key, raw = response[0], response[1]
            problem = screen(raw if isinstance(raw, bytes) else str(raw).encode())
            if problem is None:
                return parse(response, **options)
            queue = _text(queue_key).rsplit(self.sep, 1)[0]
            self._dead_letter(problem, queue, raw)
            return None  # "nothing arrived": the message is gone from the queue

        return screened_brpop

    def _dead_letter(self, problem: str, queue: str, raw: bytes) -> None:
        log.error("dead-lettered a message on queue %r: %s", queue, problem)
        options = self.connection.client.transport_options or {}
        if options.get(DEAD_LETTERS_OPTION):  # the coordination Redis (celery_app.py)
            record(str(options[DEAD_LETTERS_OPTION]), problem, queue, raw)
            return
        try:  # a bare kombu connection: the broker's Redis
            with self.conn_or_acquire() as client:
                DeadLetters(client).add(problem, queue, raw)
        except Exception as exc:  # the worker must live on even if this fails
            log.error("could not record the dead letter: %s", exc)


class Transport(kombu_redis.Transport):
    Channel = Channel


def _as_tuple(response: Any, **_: Any) -> Any:
    return tuple(response) if response else None


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


TRANSPORT = f"{__name__}:Transport"
