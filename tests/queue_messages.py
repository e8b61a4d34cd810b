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


def _envelope(valid: bytes, **changes: Any) -> bytes:
    envelope = json.loads(valid)
    for key, value in changes.items():
        if value is _DROP:
            envelope.pop(key, None)
        else:
            envelope[key] = value
    return json.dumps(envelope).encode()


def _with_body(valid: bytes, body: bytes) -> bytes:
    return _envelope(valid, body=base64.b64encode(body).decode())


def _with_headers(valid: bytes, **changes: Any) -> bytes:
    headers = dict(json.loads(valid)["headers"])
    for key, value in changes.items():
        if value is _DROP:
            headers.pop(key, None)
        else:
            headers[key] = value
    return _envelope(valid, headers=headers)


_DROP = object()


def poison_messages(valid: bytes) -> dict[str, bytes]:
    """Every shape of bad message the worker must survive, made from a valid message that
    Celery sent (`valid`: the raw bytes on the queue)."""
    body = json.loads(base64.b64decode(json.loads(valid)["body"]))
    return {
        "non-JSON bytes": b"\xff\xfe\x00 not json",
        "truncated envelope": valid[: len(valid) // 2],
        "envelope null": b"null",
        "envelope list": b"[1, 2, 3]",
        "envelope number": b"42",
        "envelope string": b'"hello"',
        "envelope without properties": _envelope(valid, properties=_DROP),
        "body not base64": _envelope(valid, body="%%% not base64 %%%"),
        "body null": _with_body(valid, b"null"),
        "body list": _with_body(valid, b"[1, 2]"),
        "body number": _with_body(valid, b"5"),
        "body string": _with_body(valid, b'"hello"'),
        "body not JSON": _with_body(valid, b"\x00\x01 not json"),
        "body truncated": _with_body(valid, json.dumps(body).encode()[:40]),
        "two arguments": _with_body(valid, json.dumps([[body[0][0], 1], {}, body[2]]).encode()),
        "headers missing": _envelope(valid, headers=_DROP),
        "headers a list": _envelope(valid, headers=[1]),
        "task header a number": _with_headers(valid, task=5),
        "id header missing": _with_headers(valid, id=_DROP),
        "unknown task without id": _with_headers(valid, task="no.such.task", id=_DROP),
        "timelimit wrong": _with_headers(valid, timelimit=[1, 2, 3]),
        "unknown task": _with_headers(valid, task="no.such.task"),
        "pickled content": _envelope(valid, **{"content-type": "application/x-python-serialize"}),
        "oversized": _with_body(
            valid, json.dumps([[{"pad": "x" * (5 * 1024 * 1024)}], {}, body[2]]).encode()
        ),
    }


def raw_messages(client: redis.Redis, queue: str) -> list[bytes]:
    """The raw bytes of every message on `queue`, oldest first."""
    raw = client.lrange(queue, 0, -1)
    return [m if isinstance(m, bytes) else str(m).encode() for m in reversed(raw)]


# --- RabbitMQ: a delivery is framed (body, content type, headers apart) ---------------------

AmqpMessage = tuple[bytes, dict[str, Any]]  # (body, properties)


def amqp_poison_messages(body: bytes, properties: dict[str, Any]) -> dict[str, AmqpMessage]:
    """The AMQP counterparts of `poison_messages`, made from a valid message's body and
    properties (as Celery sent it): no envelope to break, the same body and headers."""
    task = json.loads(body)
    headers = dict(properties["application_headers"])

    def with_body(new: bytes) -> AmqpMessage:
        return new, properties

    def with_headers(**changes: Any) -> AmqpMessage:
        changed = dict(headers)
        for key, value in changes.items():
            if value is _DROP:
                changed.pop(key, None)
            else:
                changed[key] = value
        return body, {**properties, "application_headers": changed}

    def with_properties(**changes: Any) -> AmqpMessage:
        return body, {**properties, **changes}

    return {
        "non-JSON bytes": with_body(b"\xff\xfe\x00 not json"),
        "truncated body": with_body(body[: len(body) // 2]),
        "body null": with_body(b"null"),
        "body list": with_body(b"[1, 2]"),
        "body number": with_body(b"5"),
        "body string": with_body(b'"hello"'),
        "two arguments": with_body(json.dumps([[task[0][0], 1], {}, task[2]]).encode()),
        "headers missing": with_properties(application_headers=None),
        "task header a number": with_headers(task=5),
        "id header missing": with_headers(id=_DROP),
        "unknown task without id": with_headers(task="no.such.task", id=_DROP),
        "timelimit wrong": with_headers(timelimit=[1, 2, 3]),
        "unknown task": with_headers(task="no.such.task"),
        "pickled content": with_properties(content_type="application/x-python-serialize"),
        "oversized": with_body(
            json.dumps([[{"pad": "x" * (5 * 1024 * 1024)}], {}, task[2]]).encode()
        ),
    }
