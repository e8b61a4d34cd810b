"""Reading Celery messages straight off a Redis queue (for tests that play the worker)."""

from __future__ import annotations

import base64
import json
from typing import Any

import redis


def queued_payloads(client: redis.Redis, queue: str) -> list[tuple[str, Any]]:
    """(task id, first argument) of every message on `queue`, oldest first."""
    messages = [json.loads(raw) for raw in reversed(client.lrange(queue, 0, -1))]
    out = []
    for message in messages:
        body = json.loads(base64.b64decode(message["body"]))
        out.append((message["headers"]["id"], body[0][0]))
    return out


def drain(client: redis.Redis, queue: str) -> list[tuple[str, Any]]:
    payloads = queued_payloads(client, queue)
    client.delete(queue)
    return payloads
