"""A no-op task on a bare Celery app: default settings, a Redis broker and result backend."""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery

BARE_TASK = "bench.bare_noop"


def build_app(redis_url: str) -> Celery:
    app = Celery("bare", broker=redis_url, backend=redis_url)

    @app.task(name=BARE_TASK)
    def bare_noop(payload: Any) -> dict[str, Any]:
        return {"started": time.time()}

    return app


def __getattr__(name: str) -> Any:
    """`celery -A <this module>:app` in a worker: the app for HPOQ_REDIS_URL, built on use."""
    if name == "app":
        globals()["app"] = build_app(os.environ["HPOQ_REDIS_URL"])
        return globals()["app"]
    raise AttributeError(name)
