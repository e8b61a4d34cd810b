"""Bounded retries with exponential backoff and full jitter for transient service errors."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from hpoq.redaction import redact_url

T = TypeVar("T")
log = logging.getLogger(__name__)


def backoff_delay(attempt: int, base_s: float = 0.5, cap_s: float = 30.0) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt)] so retries spread out."""
    return random.uniform(0, min(cap_s, base_s * (2**attempt)))


def retry_call(
    fn: Callable[[], T],
    *,
    what: str,
    retry_on: tuple[type[BaseException], ...],
    attempts: int = 5,
    base_s: float = 0.5,
    cap_s: float = 10.0,
) -> T:
    """Call `fn`, retrying on `retry_on` up to `attempts` times in all; re-raise the last error."""
    for attempt in range(attempts):
        try:
            return fn()
        except retry_on as exc:
            if attempt == attempts - 1:
                raise
            delay = backoff_delay(attempt, base_s, cap_s)
            log.warning(
                "%s failed (%s); retry %d/%d in %.1fs",
                what,
                redact_url(str(exc)),  # a server's error may quote its URL, password and all
                attempt + 1,
                attempts - 1,
                delay,
            )
            time.sleep(delay)
    raise AssertionError("unreachable")
