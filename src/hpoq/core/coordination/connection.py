"""Redis connections from a URL, with errors that never show the password."""

from __future__ import annotations

import redis

from hpoq.errors import ServiceError
from hpoq.redaction import redact_url


def connect(url: str, *, timeout_s: float = 5.0) -> redis.Redis:
    """A client for `url` (redis://, rediss://, unix://) that has answered a PING."""
    try:
        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=timeout_s,
            socket_timeout=max(timeout_s, 30.0),
            health_check_interval=30,
            retry_on_timeout=True,
            decode_responses=True,
        )
        client.ping()
    except (redis.RedisError, ValueError, OSError) as exc:
        raise ServiceError(
            f"Redis at {redact_url(url)} is unreachable: {redact_url(str(exc))}"
        ) from None
    return client
