"""Bounding deliveries: a job that crashes its worker every time must stop, not loop.

A replacement job (enqueued when a dead worker's trial is reaped) is named
`{root}.r{n}`, so it shares its root's delivery count.
"""

from __future__ import annotations

from hpoq.config.settings import load_settings
from hpoq.core.coordination.keys import DELIVERY_COUNTER_TTL_S
from hpoq.workers.context import WorkerContext


def max_deliveries() -> int:
    """HPOQ_MAX_DELIVERIES (default 3), parsed in config/settings.py."""
    return load_settings().max_deliveries


def root_job_id(job_id: str) -> str:
    return job_id.split(".", 1)[0]


def replacement_job_id(job_id: str) -> str:
    root, _, suffix = job_id.partition(".r")
    number = int(suffix) + 1 if suffix.isdigit() else 1
    return f"{root}.r{number}"


def record_delivery(ctx: WorkerContext, job_id: str) -> int:
    """Count one started execution of the job's lineage; returns the count so far."""
    key = ctx.keys.job_deliveries(root_job_id(job_id))
    pipe = ctx.redis.pipeline(transaction=True)
    pipe.incr(key)
    pipe.expire(key, DELIVERY_COUNTER_TTL_S)
    count, _ = pipe.execute()
    return int(count)
