"""Per-process worker state, built once and reused by every job the process runs."""

from __future__ import annotations

import functools
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import redis

from hpoq.config.settings import load_settings
from hpoq.core.coordination.budget import TrialBudget
from hpoq.core.coordination.connection import connect
from hpoq.core.coordination.keys import RedisKeys, redis_keys
from hpoq.core.runtime import Runtime
from hpoq.core.studies import StudyStore

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from hpoq.core.content_store import ContentStore
    from hpoq.workers.device_turns import DeviceTurns

T = TypeVar("T")

# Distinct checkpoint configs a worker keeps open studies for (one per experiment, usually).
MAX_CACHED_STORES = 8


def lease_seconds() -> float:
    """HPOQ_LEASE_SECONDS (default 60): a claim lapses this long after its last
    heartbeat; heartbeats come 3 times per lease."""
    return load_settings().lease_seconds


@dataclass
class WorkerContext:
    runtime: Runtime
    redis: redis.Redis
    keys: RedisKeys
    budget: TrialBudget
    hostname: str
    # One StudyStore per checkpoint config for the life of the process: its storages read
    # a study's journal incrementally instead of replaying it from the start on every job.
    _study_stores: dict[str, StudyStore] = field(default_factory=dict, repr=False)
    # Experiment ids never change once created; a lookup costs an MLflow round trip.
    _experiment_ids: dict[str, str] = field(default_factory=dict, repr=False)

    @functools.cached_property
    def mlflow(self) -> MlflowClient:
        from hpoq.core.tracking import make_client

        return make_client(self.runtime.mlflow_uri())

    @functools.cached_property
    def device_turns(self) -> DeviceTurns:
        """Turns on this worker's device: shared by trials, exclusive for benchmarks."""
        from hpoq.core.coordination.device_lease import DeviceLease
        from hpoq.workers.device_turns import DeviceTurns, device_id

        lease = DeviceLease(self.redis, self.keys, device_id(self.runtime.settings))
        return DeviceTurns(lease, lease_seconds())

    @property
    def slots(self) -> int:
        """Trial processes of this worker that share its device (`hpoq worker --slots`)."""
        return self.runtime.settings.worker_slots

    def study_store(self, checkpoint: object) -> StudyStore:
        from hpoq.config.hpo import CheckpointConfig

        assert isinstance(checkpoint, CheckpointConfig)
        key = checkpoint.model_dump_json()
        store = self._study_stores.get(key)
        if store is None:
            if len(self._study_stores) >= MAX_CACHED_STORES:
                self._study_stores.pop(next(iter(self._study_stores)))
            store = self._study_stores[key] = self.runtime.study_store(checkpoint)
        return store

    def experiment_id(self, name: str) -> str:
        """The id of MLflow experiment `name` (created when missing), cached per process."""
        from hpoq.core.tracking import artifact_root, ensure_experiment

        found = self._experiment_ids.get(name)
        if found is None:
            location = artifact_root(self.runtime.layout, self.runtime.mlflow_uri())
            found = ensure_experiment(self.mlflow, name, location)
            self._experiment_ids[name] = found
        return found

    def content(self) -> ContentStore:
        """Published files by content hash, cached under this worker's output directory.
        Built per call on the current client (cheap); the experiment id lookup is cached."""
        from hpoq.core.content_store import CONTENT_EXPERIMENT
        from hpoq.core.job_inputs import content_store

        return content_store(
            self.runtime, self.mlflow, lambda: self.experiment_id(CONTENT_EXPERIMENT)
        )

    def in_experiment(self, name: str, write: Callable[[str], T]) -> T:
        """`write(experiment_id)` with the cached id of experiment `name`. A failed write
        drops the cached id, so the next one looks it up again (the experiment may have
        been deleted and created anew)."""
        try:
            return write(self.experiment_id(name))
        except Exception:
            self._experiment_ids.pop(name, None)
            raise

    @classmethod
    def create(cls, redis_url: str, runtime: Runtime | None = None) -> WorkerContext:
        runtime = runtime or Runtime.from_settings()
        client = connect(redis_url)
        keys = redis_keys(runtime)
        return cls(runtime, client, keys, TrialBudget(client, keys), socket.gethostname())
