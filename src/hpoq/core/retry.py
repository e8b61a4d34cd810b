"""Who retries what: one owner per retry policy, each bounded, written down here.

1. One HTTP request to an MLflow tracking server (refused, reset or timed out
   connection, 429, 5xx): MLflow's own HTTP client. hpoq only sets its budget, per
   process kind, in `use_mlflow_http_policy`: read-only commands (`retrieve`, `status`,
   benchmark planning) 1 retry and 5 s per attempt, so they answer or fall back within
   15 s; workers, `submit` and `run` 5 retries with backoff 0-32 s (about a minute of
   outage) and 60 s per attempt. MLflow's default (7 retries, 120 s) made a read-only
   command wait 4 minutes for a server that was down.
2. An idempotent MLflow operation on one run (create the run once, log to it, terminate
   it), whatever the store, a lost reply included: `retry_call` below, wrapped around
   each such operation by the worker. 5 attempts, full-jitter backoff capped at 10 s.
3. A whole job, after a transient service error got past 1 and 2: Celery's task retry
   (`workers/tasks.py`), 5 retries 1-60 s apart; then the failure is recorded (a FAILED
   run; `hpoq benchmark retry-failed`, or a resumed variant, takes it up again).
4. A job whose key or claim another worker holds: Celery's task retry, one lease later.
5. Redis connections (broker and coordination): kombu and redis-py reconnect without a
   bound: nothing can progress without Redis, and workers come back by themselves.

Nothing else retries: a read in a producer command fails, or falls back, when its one
owner gives up. Bounds multiply only where a layer wraps another: a worker's write
waits at most about (2) x (1) before its job is retried by (3).
Values a person sets for `MLFLOW_HTTP_REQUEST_MAX_RETRIES`, `..._BACKOFF_FACTOR`,
`..._BACKOFF_JITTER` or `..._TIMEOUT` win over these budgets.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from enum import Enum
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


class MlflowHttpPolicy(Enum):
    """The budget of MLflow's HTTP client per process kind: (retries, backoff factor,
    backoff jitter in s, seconds per attempt). MLflow reads these variables per request."""

    READ_ONLY = (1, 1, 0.5, 5)
    WORKER = (5, 2, 1.0, 60)


def use_mlflow_http_policy(policy: MlflowHttpPolicy) -> None:
    """Set MLflow's HTTP retry budget for this process, leaving any value a person set."""
    retries, backoff, jitter, timeout = policy.value
    for name, value in (
        ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", retries),
        ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", backoff),
        ("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", jitter),
        ("MLFLOW_HTTP_REQUEST_TIMEOUT", timeout),
    ):
        if not os.environ.get(name, "").strip():
            os.environ[name] = str(value)
