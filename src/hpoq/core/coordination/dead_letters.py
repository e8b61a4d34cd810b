"""Messages that no worker could take: kept in Redis, bounded, for `hpoq status`.

Each entry is one JSON object: why it was refused, the queue, its size and its first bytes
(as text, undecodable bytes replaced), which worker refused it and when. The list keeps the
newest DEAD_LETTER_LIMIT entries; the counter counts them all. Both expire
DEAD_LETTER_TTL_S after the latest entry. A message is dead-lettered once, by the worker
that took it off its queue, and is never delivered again.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from typing import Any

import redis

from hpoq.core.coordination.keys import (
    DEAD_LETTER_COUNT,
    DEAD_LETTER_LIMIT,
    DEAD_LETTER_TTL_S,
    DEAD_LETTERS,
)

HEAD_BYTES = 256


def head_text(raw: bytes | str, limit: int = HEAD_BYTES) -> str:
    """The first `limit` bytes of a message as printable text."""
    data = raw.encode("utf-8", "replace") if isinstance(raw, str) else raw
    return data[:limit].decode("utf-8", "replace")


@dataclass(frozen=True)
class DeadLetter:
    reason: str
    queue: str
    size: int
    head: str
    worker: str
    at: float  # seconds since the epoch, on the refusing worker's clock (for people only)

    def to_json(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "queue": self.queue,
            "size": self.size,
            "head": self.head,
            "worker": self.worker,
            "at": self.at,
        }


class DeadLetters:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def add(self, reason: str, queue: str, raw: bytes | str) -> DeadLetter:
        letter = DeadLetter(
            reason=reason[:1000],
            queue=queue,
            size=len(raw),
            head=head_text(raw),
            worker=socket.gethostname(),
            at=time.time(),
        )
        pipe = self._client.pipeline(transaction=True)
        pipe.lpush(DEAD_LETTERS, json.dumps(letter.to_json()))
        pipe.ltrim(DEAD_LETTERS, 0, DEAD_LETTER_LIMIT - 1)
        pipe.expire(DEAD_LETTERS, DEAD_LETTER_TTL_S)
        pipe.incr(DEAD_LETTER_COUNT)
        pipe.expire(DEAD_LETTER_COUNT, DEAD_LETTER_TTL_S)
        pipe.execute()
        return letter

    def count(self) -> int:
        value = self._client.get(DEAD_LETTER_COUNT)
        return int(value) if value else 0

    def recent(self, limit: int = 10) -> list[dict[str, Any]]:
        """The newest `limit` entries, newest first."""
        raw = self._client.lrange(DEAD_LETTERS, 0, max(0, limit - 1))
        out = []
        for item in raw:
            try:
                entry = json.loads(item)
            except ValueError:
                continue
            if isinstance(entry, dict):
                out.append(entry)
        return out
