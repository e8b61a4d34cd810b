"""Dead letters for the messages Celery refuses by itself, through its own signals.

Celery rejects (and so acknowledges) a message whose content type it does not accept or
whose ETA is malformed (`task_rejected`), and one naming a task no worker has
(`task_unknown`); it logs them and goes on. These handlers also record them where people
look (`hpoq status`). Messages that would end the worker never reach Celery: see
broker_transport.py and amqp_transport.py. A job whose payload is malformed is recorded by
the task itself.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from celery.signals import task_rejected, task_unknown

from hpoq.core.celery_app import coordination_url
from hpoq.core.coordination.connection import connect
from hpoq.core.coordination.dead_letters import DeadLetters

log = logging.getLogger(__name__)
_clients: dict[str, DeadLetters] = {}


def dead_letters(redis_url: str) -> DeadLetters:
    """One client per coordination Redis URL in this process (redis-py pools survive a
    fork)."""
    found = _clients.get(redis_url)
    if found is None:
        found = _clients[redis_url] = DeadLetters(connect(redis_url))
    return found


def record(redis_url: str, reason: str, queue: str, raw: bytes | str) -> None:
    try:
        dead_letters(redis_url).add(reason, queue, raw)
    except Exception as exc:  # never let bookkeeping end the worker
        log.error("could not record the dead letter (%s): %s", reason, exc)


def _queue(message: Any) -> str:
    info = getattr(message, "delivery_info", None) or {}
    return str(info.get("routing_key") or "?")


def _raw(message: Any) -> bytes | str:
    body = getattr(message, "body", b"")
    if isinstance(body, bytes | str):
        return body
    return json.dumps(body, default=str)


def _on_rejected(sender: Any = None, message: Any = None, exc: Any = None, **_: Any) -> None:
    if sender is None or message is None:
        return
    reason = f"refused by Celery: {exc!r}" if exc else "refused by Celery: unknown message format"
    record(coordination_url(sender.app), reason, _queue(message), _raw(message))


def _on_unknown(sender: Any = None, message: Any = None, name: Any = None, **_: Any) -> None:
    if sender is None or message is None:
        return
    record(coordination_url(sender.app), f"unknown task {name!r}", _queue(message), _raw(message))


task_rejected.connect(_on_rejected)
task_unknown.connect(_on_unknown)
