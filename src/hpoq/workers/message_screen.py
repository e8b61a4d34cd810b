"""What a message on an hpoq queue must look like before kombu and Celery may touch it.

kombu's Redis transport and Celery's task dispatcher assume a well-formed message: a JSON
envelope that kombu wrote, a Celery protocol 2 body and headers. Anything else raises in
the worker's main process, where nothing catches it, and the worker exits ("Unrecoverable
error"); a message already taken into `unacked` (Redis) or delivered unacknowledged
(RabbitMQ, which requeues it when the worker's connection drops) kills the next worker
too (kombu 5.7 `Message.__init__`, `Channel._brpop_read`; Celery 5.7 `worker/strategy.py`
`task_message_handler`, `Consumer.on_unknown_task`). `screen` (a Redis queue's raw bytes)
and `screen_delivery` (an AMQP delivery's parts) name what is wrong, or return None for a
message they handle safely: a valid one, or one that Celery refuses by itself (a content
type it does not accept, an unknown task name, a malformed ETA), which the signal handlers
in `dead_letter_signals.py` record.

Every hpoq task takes exactly one argument, the job payload (a JSON object).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

# Jobs carry a resolved experiment: kilobytes. Anything near this is not one of ours.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
JSON_CONTENT_TYPE = "application/json"
_EMBED_KEYS = {"callbacks", "errbacks", "chain", "chord"}
_OPTIONAL_TEXT_HEADERS = (
    "shadow",
    "root_id",
    "parent_id",
    "group",
    "argsrepr",
    "kwargsrepr",
    "origin",
    "lang",
)


def screen(raw: bytes) -> str | None:
    """What is wrong with a raw message taken off a Redis queue (kombu's JSON envelope)."""
    if len(raw) > MAX_MESSAGE_BYTES:
        return f"oversized: {len(raw)} bytes (limit {MAX_MESSAGE_BYTES})"
    try:
        envelope = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return f"envelope is not JSON: {exc}"
    if not isinstance(envelope, dict):
        return f"envelope is a JSON {_kind(envelope)}, not an object"
    problem = _envelope_problem(envelope)
    if problem is not None:
        return problem
    return _task_problem(
        envelope["headers"],
        envelope.get("content-type"),
        envelope.get("content-encoding"),
        lambda: _body_bytes(envelope),
    )


def screen_delivery(
    headers: Any, content_type: Any, content_encoding: Any, body: bytes | str
) -> str | None:
    """What is wrong with a message delivered by AMQP (RabbitMQ), which frames the headers,
    content type and body itself: the same checks as `screen` past kombu's envelope."""
    raw = body.encode("utf-8", "surrogateescape") if isinstance(body, str) else body
    if len(raw) > MAX_MESSAGE_BYTES:
        return f"oversized: {len(raw)} bytes (limit {MAX_MESSAGE_BYTES})"
    if not isinstance(headers, dict):
        return "no headers object: not a Celery protocol 2 task message"
    return _task_problem(headers, content_type, content_encoding, lambda: raw)


def _task_problem(
    headers: dict[str, Any], content_type: Any, content_encoding: Any, body: Callable[[], bytes]
) -> str | None:
    problem = _headers_problem(headers)
    if problem is not None:
        return problem
    if content_type != JSON_CONTENT_TYPE:
        return None  # Celery refuses other content types itself (task_rejected)
    if content_encoding not in ("utf-8", "utf8"):
        return f"JSON body with content-encoding {content_encoding!r}"
    try:
        decoded = json.loads(body().decode("utf-8"))
    except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
        return f"body is not JSON: {exc}"
    return _body_problem(decoded)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {list: "array", str: "string", bool: "boolean", dict: "object"}.get(
        type(value), "number"
    )


def _envelope_problem(envelope: dict[str, Any]) -> str | None:
    properties = envelope.get("properties")
    if not isinstance(properties, dict):
        return "envelope has no properties object"
    if not isinstance(properties.get("delivery_tag"), str):
        return "envelope has no delivery_tag"
    for name in ("delivery_info",):
        if properties.get(name) is not None and not isinstance(properties[name], dict):
            return f"envelope property {name} is not an object"
    if properties.get("body_encoding") not in (None, "base64"):
        return f"unknown body_encoding {properties.get('body_encoding')!r}"
    if not isinstance(envelope.get("headers"), dict):
        return "no headers object: not a Celery protocol 2 task message"
    if not isinstance(envelope.get("body"), str):
        return f"body is a JSON {_kind(envelope.get('body'))}, not a string"
    return None


def _headers_problem(headers: dict[str, Any]) -> str | None:
    for name in ("task", "id"):
        value = headers.get(name)
        if not isinstance(value, str) or not value:
            return f"header {name!r} is missing or not a string"
    for name in _OPTIONAL_TEXT_HEADERS:
        if headers.get(name) is not None and not isinstance(headers[name], str):
            return f"header {name!r} is not a string"
    if headers.get("compression") is not None:
        return "compressed bodies are not accepted"
    retries = headers.get("retries", 0)
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        return "header 'retries' is not a non-negative integer"
    if headers.get("ignore_result") is not None and not isinstance(headers["ignore_result"], bool):
        return "header 'ignore_result' is not a boolean"
    limits = headers.get("timelimit")
    if limits is not None and not (
        isinstance(limits, list)
        and len(limits) == 2
        and all(v is None or (_is_number(v) and v >= 0) for v in limits)
    ):
        return "header 'timelimit' is not a pair of seconds"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _body_bytes(envelope: dict[str, Any]) -> bytes:
    body: str = envelope["body"]
    if envelope["properties"].get("body_encoding") == "base64":
        return base64.b64decode(body, validate=True)
    return body.encode("utf-8")


def _body_problem(body: Any) -> str | None:
    if not isinstance(body, list) or len(body) != 3:
        return f"body is a JSON {_kind(body)}, not [args, kwargs, embed]"
    args, kwargs, embed = body
    if not isinstance(args, list) or len(args) != 1:
        return "args is not exactly one job payload"  # what the payload holds: parse_job
    if kwargs != {}:
        return "kwargs must be empty"
    if not isinstance(embed, dict) or set(embed) - _EMBED_KEYS:
        return "embed is not Celery's {callbacks, errbacks, chain, chord}"
    if any(value is not None for value in embed.values()):
        return "callbacks, errbacks, chains and chords are not accepted"
    return None
