"""Final trainings planned, in Redis: one entry per (backbone, spec_fp, exec_fp).

Each entry holds the latest variant's job (JSON) and its state: `queued` (the producer sent
it), `running` (a worker took it), `finished` or `failed` (the worker's last word). The
producer reads it, under the backbone's plan lock, to tell a final training in flight (no
second job) from one that failed (retried by `hpoq train-final --retry-failed`, or continued
by the run mode). MLflow stays the record of truth for finished models: an entry lost with
Redis's data only means the next plan asks MLflow alone.

Every write is one HSET (a whole entry), so a reader never sees half an entry. The producer
writes under the plan lock (`put`); a worker writes only while the entry still holds its
own job (`put_if_job`, compare-and-set on the job id), so an older job's late word never
replaces a newer job sent since (force_new, a retry).

A worker training an entry holds its `alive` key, an owned lease (coordination/leases.py:
SET NX to take it, compare-and-PEXPIRE on each heartbeat, compare-and-DEL to let go): one
delivery trains at a time, and a `running` entry without it was lost with its worker (the
next plan trains it again under its variant).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal, cast

import redis

from hpoq.core.coordination.keys import BOOKKEEPING_TTL_S, RedisKeys
from hpoq.core.coordination.leases import OwnedLeases
from hpoq.core.fingerprints import fingerprint

State = Literal["queued", "running", "finished", "failed"]

# KEYS[1] the registry hash; ARGV: 1 field, 2 the writer's job id, 3 the new entry (JSON),
# 4 the hash's ttl s. Writes the entry unless it holds another job (one sent since the
# writer's); 1 when written.
_PUT_IF_JOB = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
  local ok, entry = pcall(cjson.decode, current)
  if ok and type(entry) == 'table' and type(entry.job_id) == 'string'
      and entry.job_id ~= ARGV[2] then
    return 0
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""


@dataclass(frozen=True)
class FinalEntry:
    field: str
    state: State
    job: str  # the job's JSON
    error: str | None = None
    job_id: str | None = None


def entry_field(backbone: str, spec_fp: str, exec_fp: str) -> str:
    return f"{backbone}:{spec_fp}:{exec_fp}"


class FinalRegistry:
    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self._client = client
        self._keys = keys
        self._key = keys.final_trainings()
        self._leases = OwnedLeases(client)
        self._put_if_job = client.register_script(_PUT_IF_JOB)

    def _alive_key(self, field: str) -> str:
        return self._keys.final_alive(fingerprint({"final": field}))

    def acquire(self, field: str, owner: str, ttl_s: float) -> bool:
        """Take the right to train `field` for `ttl_s` seconds; False when another holds it."""
        return self._leases.acquire(self._alive_key(field), owner, ttl_s)

    def renew(self, field: str, owner: str, ttl_s: float) -> bool:
        """Extend `owner`'s hold; False once it lapsed or another delivery holds it."""
        return self._leases.renew(self._alive_key(field), owner, ttl_s)

    def release(self, field: str, owner: str) -> bool:
        """Let go of `field` if `owner` still holds it (never someone else's hold)."""
        return self._leases.release(self._alive_key(field), owner)

    def holder(self, field: str) -> str | None:
        """Who trains `field` now (None: nobody alive)."""
        return self._leases.holder(self._alive_key(field))

    def holders(self, fields: list[str]) -> list[str | None]:
        """Who trains each field now, in one round trip."""
        return self._leases.holders([self._alive_key(f) for f in fields])

    def in_flight(self, entry: FinalEntry) -> bool:
        """Queued, or running on a worker that is still alive."""
        if entry.state == "queued":
            return True
        return entry.state == "running" and self.holder(entry.field) is not None

    def get(self, field: str) -> FinalEntry | None:
        raw = self._client.hget(self._key, field)
        return None if raw is None else _decode(field, raw)

    def all(self) -> list[FinalEntry]:
        stored = cast(dict[str, str], self._client.hgetall(self._key))
        entries = []
        for field, raw in stored.items():
            entry = _decode(field, raw)
            if entry is not None:
                entries.append(entry)
        return sorted(entries, key=lambda e: e.field)

    def put(self, field: str, state: State, job: str, error: str | None = None) -> None:
        """Write the entry whatever it holds (the producer, under the backbone's plan lock)."""
        pipe = self._client.pipeline(transaction=True)
        pipe.hset(self._key, field, _encode(state, job, error))
        pipe.expire(self._key, BOOKKEEPING_TTL_S)
        pipe.execute()

    def put_if_job(
        self, field: str, job_id: str, state: State, job: str, error: str | None = None
    ) -> bool:
        """Write the entry only while it holds job `job_id` (or nothing): a worker's word
        on its own job. False when a newer job was sent since."""
        value = _encode(state, job, error)
        return bool(
            self._put_if_job(keys=[self._key], args=[field, job_id, value, BOOKKEEPING_TTL_S])
        )

    def fail_job(self, job_id: str, error: str) -> bool:
        """Mark the entry holding job `job_id` failed (a job refused before it ran, whose
        payload names no entry); False when no entry holds it any more."""
        for entry in self.all():
            if entry.job_id == job_id:
                return self.put_if_job(entry.field, job_id, "failed", entry.job, error)
        return False


def _job_id_of(job: str) -> str | None:
    try:
        job_id = json.loads(job).get("job_id")
    except (ValueError, AttributeError):
        return None
    return None if job_id is None else str(job_id)


def _encode(state: State, job: str, error: str | None) -> str:
    return json.dumps({"state": state, "job": job, "error": error, "job_id": _job_id_of(job)})


def _decode(field: str, raw: bytes | str) -> FinalEntry | None:
    try:
        value = json.loads(raw)
        state = value["state"]
        if state not in ("queued", "running", "finished", "failed"):
            return None
        job_id = value.get("job_id")
        return FinalEntry(
            field,
            state,
            str(value["job"]),
            value.get("error"),
            None if job_id is None else str(job_id),
        )
    except (ValueError, KeyError, TypeError):
        return None  # not written by this module: ignored, overwritten by the next plan
