"""Every Redis key hpoq uses, and its TTL, built in this one module.

A namespace separates deployments that share one Redis (a different Optuna storage or
output directory gets different counters). Keys without a TTL say why.

Keys that hpoq does not build, listed so that nothing in Redis goes unexplained:
- the queues `hpo`, `benchmark` and `train` and kombu's `unacked`, `unacked_index` and
  `unacked_mutex`: kombu's own, emptied as jobs are acknowledged (a queue is a list that
  exists only while it holds messages); `_kombu.binding.*`: kombu's routing table, one
  small set per exchange, declared again by every worker that starts;
- `celery-task-meta-<job id>`: Celery's results, expiring after `result_expires` (7 days).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from hpoq.core.fingerprints import fingerprint

if TYPE_CHECKING:
    from hpoq.core.runtime import Runtime

DAY_S = 24 * 3600
# Budget and job bookkeeping lives as long as a sweep may plausibly be resumed.
BOOKKEEPING_TTL_S = 30 * DAY_S
DELIVERY_COUNTER_TTL_S = 7 * DAY_S
# Dead letters: the newest DEAD_LETTER_LIMIT are kept, for a week after the latest one.
DEAD_LETTER_TTL_S = 7 * DAY_S
DEAD_LETTER_LIMIT = 1000
# The reaper's record of its passes; gone after a quiet day, which only means that the
# next pass waits one lease before it trusts the claims again.
REAPER_WATCH_TTL_S = DAY_S

# Messages that no worker could take off a queue. Not namespaced: the queues they came
# from are shared by every deployment on the Redis, so are they. A list, newest first,
# trimmed to DEAD_LETTER_LIMIT; it and its counter expire DEAD_LETTER_TTL_S after the
# latest dead letter.
DEAD_LETTERS = "hpoq:dead-letters"
DEAD_LETTER_COUNT = "hpoq:dead-letters:count"

# The kinds of hpoq key that keep no TTL, each for the reason given where it is built.
KEYS_WITHOUT_TTL = ("variant-counter", "failed-benchmarks", "bench-fence")


def namespace_for(storage_identity: str) -> str:
    """Short namespace from what identifies the study storage (URL or output directory)."""
    return fingerprint({"storage": storage_identity}, length=12)


def storage_identity(runtime: Runtime) -> str:
    """What makes two processes share studies: the shared storage URL, else the output dir."""
    shared = runtime.settings.optuna_storage
    if shared is not None:
        from hpoq.redaction import redact_url

        return redact_url(shared.get_secret_value())
    return f"{runtime.layout.root}/{runtime.layout.platform}"


def redis_keys(runtime: Runtime) -> RedisKeys:
    """The keys of the deployment `runtime` belongs to (producer and workers alike)."""
    return RedisKeys(namespace_for(storage_identity(runtime)))


@dataclass(frozen=True)
class RedisKeys:
    namespace: str

    def _k(self, *parts: str) -> str:
        return ":".join(("hpoq", self.namespace, *parts))

    # No TTL: a variant number must never be issued twice, and the counter is one integer.
    def variant_counter(self, backbone: str, base: str) -> str:
        return self._k("variant-counter", backbone, base)

    # Budget of one variant (study_key = study_key_hash), see budget.py.
    # TTL: BOOKKEEPING_TTL_S, refreshed on every write.
    def budget_claims(self, study_key: str) -> str:
        return self._k("budget", study_key, "claims")

    def budget_finished(self, study_key: str) -> str:
        return self._k("budget", study_key, "finished")

    def budget_done_jobs(self, study_key: str) -> str:
        return self._k("budget", study_key, "done")

    def budget_pending(self, study_key: str) -> str:
        return self._k("budget", study_key, "pending")

    # RUNNING trials seen without a claim (Redis lost it), and since when. TTL as above.
    def budget_unclaimed(self, study_key: str) -> str:
        return self._k("budget", study_key, "unclaimed")

    # Held while a producer counts and enqueues the missing trials of one variant.
    # TTL: the lock's own timeout (redis-py Lock, SET NX PX).
    def enqueue_lock(self, study_key: str) -> str:
        return self._k("budget", study_key, "enqueue-lock")

    # Variants the reaper watches: study_key -> a trial job of the variant (JSON), from
    # which replacements are made. TTL: BOOKKEEPING_TTL_S, refreshed on every write.
    def active_variants(self) -> str:
        return self._k("active-variants")

    # Benchmark jobs enqueued and not finished: job id -> job (JSON), so that the reaper can
    # enqueue again a key whose lease lapsed. TTL: BOOKKEEPING_TTL_S, refreshed on writes.
    def active_benchmarks(self) -> str:
        return self._k("active-benchmarks")

    # Held by the one reaper running a pass. TTL: the lock's own timeout (one lease).
    def reaper_lock(self) -> str:
        return self._k("reaper", "lock")

    # When the reaper last ran, and from when it trusts the claims. TTL: REAPER_WATCH_TTL_S.
    def reaper_watch(self) -> str:
        return self._k("reaper", "watch")

    # Deliveries of one job, to stop a job that crashes its worker every time. TTL: 7 days.
    def job_deliveries(self, job_id: str) -> str:
        return self._k("job", job_id, "deliveries")

    # Jobs given up after too many deliveries (for `hpoq status`). TTL: BOOKKEEPING_TTL_S,
    # refreshed on every write.
    def failed_jobs(self) -> str:
        return self._k("failed-jobs")

    # Benchmark lease and fencing counter of one key (see leases.py). TTL: the lease's own.
    def benchmark_lease(self, key_hash: str) -> str:
        return self._k("bench-lease", key_hash)

    # Failed benchmark jobs (key -> job JSON) for `retry-failed`; no TTL: a failure waits
    # for a person, and an entry is removed when its key is re-enqueued.
    def failed_benchmarks(self) -> str:
        return self._k("failed-benchmarks")

    # No TTL: a fencing number must only ever grow for its key.
    def benchmark_fence(self, key_hash: str) -> str:
        return self._k("bench-fence", key_hash)

    # Final trainings planned: `{backbone}:{spec_fp}:{exec_fp}` -> the latest variant's job
    # and state (queued, running, finished, failed), for reuse, retry-failed and status.
    # TTL: BOOKKEEPING_TTL_S, refreshed on every write (MLflow stays the record of truth).
    def final_trainings(self) -> str:
        return self._k("final-trainings")

    # The worker training one of them is alive (value: its owner). TTL: one lease, renewed by
    # its heartbeat, so a dead worker's training counts as lost one lease after its death.
    def final_alive(self, field_hash: str) -> str:
        return self._k("final-alive", field_hash)

    # Held while a producer decides and enqueues the final trainings of one backbone.
    # TTL: the lock's own timeout (redis-py Lock, SET NX PX).
    def final_plan_lock(self, backbone: str) -> str:
        return self._k("final-plan-lock", backbone)

    # Turns on one device (device_hash = hash of host and visible GPUs; see device_lease.py):
    # shared holders (ZSET owner -> expiry ms), the exclusive holder, and the exclusive
    # request waiting for the shared holders to leave. TTL: one lease period, renewed by
    # every write (heartbeats, a waiting request's polls), so a crashed holder frees the
    # device one lease after its last renewal.
    def device_shared(self, device_hash: str) -> str:
        return self._k("device", device_hash, "shared")

    def device_exclusive(self, device_hash: str) -> str:
        return self._k("device", device_hash, "exclusive")

    def device_exclusive_wanted(self, device_hash: str) -> str:
        return self._k("device", device_hash, "wanted")
