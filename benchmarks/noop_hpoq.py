"""A no-op task on an app built by hpoq's `create_app` (same settings as `hpoq worker`).

The task does what hpoq's task wrapper does before any work: it validates a real TrialJob
payload with `parse_job`, then returns the time it started. HPOQ_BENCH_CONF (JSON) may
override settings on both sides, for the ablations of bench_dispatch.py.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from hpoq.core.celery_app import create_app
from hpoq.core.jobs import TrialJob, parse_job

NOOP_TASK = "bench.hpoq_noop"
CONF_ENV = "HPOQ_BENCH_CONF"


def build_app(redis_url: str, overrides: dict[str, Any] | None = None) -> Any:
    app = create_app(redis_url)
    app.conf.update(overrides or {})
    acks_late = bool(app.conf.task_acks_late)

    @app.task(name=NOOP_TASK, bind=True, acks_late=acks_late, max_retries=None)
    def hpoq_noop(self: Any, payload: Any) -> dict[str, Any]:
        started = time.time()
        job = parse_job(payload, TrialJob)
        return {"started": started, "job_id": job.job_id}

    return app


def __getattr__(name: str) -> Any:
    """`celery -A <this module>:app` in a worker: the app for HPOQ_REDIS_URL, built on use."""
    if name == "app":
        globals()["app"] = build_app(
            os.environ["HPOQ_REDIS_URL"], json.loads(os.environ.get(CONF_ENV) or "{}")
        )
        return globals()["app"]
    raise AttributeError(name)
