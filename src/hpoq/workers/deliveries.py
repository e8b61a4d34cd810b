"""Bounding deliveries: a job that crashes its worker every time must stop, not loop.

A replacement job is named `{root}.r{n}` (core/jobs.py), so it shares its root's count. The
count is of executions that never finished: each start adds one, each execution that ends
(whatever the trial's state) takes its one back, so only crashes add up.
"""

from __future__ import annotations

from hpoq.config.settings import load_settings
from hpoq.core.coordination.keys import BOOKKEEPING_TTL_S, DELIVERY_COUNTER_TTL_S
from hpoq.core.jobs import replacement_job_id, root_job_id
from hpoq.workers.context import WorkerContext

__all__ = [
    "finish_delivery",
    "max_deliveries",
    "record_delivery",
    "record_gave_up",
    "replacement_job_id",
    "root_job_id",
]

# KEYS[1] counter. Takes one execution back, never below zero.
_FINISH = """
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
if count > 0 then redis.call('DECR', KEYS[1]) end
return count
"""


def max_deliveries() -> int:
    """HPOQ_MAX_DELIVERIES (default 3), parsed in config/settings.py."""
    return load_settings().max_deliveries


def record_delivery(ctx: WorkerContext, job_id: str) -> int:
    """Count one started execution of the job's lineage; returns the count so far."""
    key = ctx.keys.job_deliveries(root_job_id(job_id))
    pipe = ctx.redis.pipeline(transaction=True)
    pipe.incr(key)
    pipe.expire(key, DELIVERY_COUNTER_TTL_S)
    count, _ = pipe.execute()
    return int(count)


def finish_delivery(ctx: WorkerContext, job_id: str) -> None:
    """The execution ended (any trial state): it was no crash."""
    ctx.redis.eval(_FINISH, 1, ctx.keys.job_deliveries(root_job_id(job_id)))


def record_gave_up(ctx: WorkerContext, job_id: str, reason: str) -> None:
    """Remember a lineage given up, for `hpoq status`."""
    key = ctx.keys.failed_jobs()
    pipe = ctx.redis.pipeline(transaction=True)
    pipe.hset(key, root_job_id(job_id), reason)
    pipe.expire(key, BOOKKEEPING_TTL_S)
    pipe.execute()
