"""Dead letters: newest first, bounded, counted, expiring."""

from __future__ import annotations

import redis

from hpoq.core.coordination import dead_letters
from hpoq.core.coordination.dead_letters import DeadLetters
from hpoq.core.coordination.keys import DEAD_LETTER_COUNT, DEAD_LETTERS


def test_entries_are_bounded_counted_and_expire(
    any_redis: redis.Redis, monkeypatch: object
) -> None:
    monkeypatch.setattr(dead_letters, "DEAD_LETTER_LIMIT", 3)  # type: ignore[attr-defined]
    letters = DeadLetters(any_redis)
    for i in range(5):
        letters.add(f"reason {i}", "hpo", b"\xff" + b"x" * 1000)
    assert letters.count() == 5
    recent = letters.recent(10)
    assert [e["reason"] for e in recent] == ["reason 4", "reason 3", "reason 2"]
    assert recent[0]["size"] == 1001 and len(recent[0]["head"]) == 256
    assert recent[0]["head"].startswith("\ufffd")  # undecodable bytes shown, not raised
    assert any_redis.ttl(DEAD_LETTERS) > 0 and any_redis.ttl(DEAD_LETTER_COUNT) > 0
