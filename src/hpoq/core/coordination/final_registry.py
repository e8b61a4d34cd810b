"""Final trainings planned, in Redis: one entry per (backbone, spec_fp, exec_fp).

Each entry holds the latest variant's job (JSON) and its state: `queued` (the producer sent
it), `running` (a worker took it), `finished` or `failed` (the worker's last word). The
producer reads it, under the backbone's plan lock, to tell a final training in flight (no
second job) from one that failed (retried by `hpoq train-final --retry-failed`, or continued
by the run mode). MLflow stays the record of truth for finished models: an entry lost with
Redis's data only means the next plan asks MLflow alone.

Every write is one HSET (a whole entry), so a reader never sees half an entry. A worker
training an entry also keeps an `alive` key (its owner, one lease long, renewed by its
heartbeat): a `running` entry without it was lost with its worker, and the next plan
trains it again under its variant.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal, cast

import redis

from hpoq.core.coordination.keys import BOOKKEEPING_TTL_S, RedisKeys
from hpoq.core.fingerprints import fingerprint

State = Literal["queued", "running", "finished", "failed"]


@dataclass(frozen=True)
class FinalEntry:
    field: str
    state: State
    job: str  # the job's JSON
    error: str | None = None


def entry_field(backbone: str, spec_fp: str, exec_fp: str) -> str:
    return f"{backbone}:{spec_fp}:{exec_fp}"


class FinalRegistry:
    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self._client = client
        self._keys = keys
        self._key = keys.final_trainings()

    def _alive_key(self, field: str) -> str:
        return self._keys.final_alive(fingerprint({"final": field}))

    def keep_alive(self, field: str, owner: str, ttl_s: float) -> bool:
        """Say (again) that `owner` trains `field`, for `ttl_s` more seconds."""
        self._client.set(self._alive_key(field), owner, px=max(1, int(ttl_s * 1000)))
        return True

    def holder(self, field: str) -> str | None:
        """Who trains `field` now (None: nobody alive)."""
        value = self._client.get(self._alive_key(field))
        return None if value is None else str(value)

    def let_go(self, field: str) -> None:
        self._client.delete(self._alive_key(field))

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
        value = json.dumps({"state": state, "job": job, "error": error})
        pipe = self._client.pipeline(transaction=True)
        pipe.hset(self._key, field, value)
        pipe.expire(self._key, BOOKKEEPING_TTL_S)
        pipe.execute()


def _decode(field: str, raw: bytes | str) -> FinalEntry | None:
    try:
        value = json.loads(raw)
        state = value["state"]
        if state not in ("queued", "running", "finished", "failed"):
            return None
        return FinalEntry(field, state, str(value["job"]), value.get("error"))
    except (ValueError, KeyError, TypeError):
        return None  # not written by this module: ignored, overwritten by the next plan
