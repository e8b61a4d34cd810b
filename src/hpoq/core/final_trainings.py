"""The final trainings planned, as `hpoq status`, `hpoq run` and `--retry-failed` see them:
each registry entry (coordination/final_registry.py) with its job and effective state.

The effective state is the entry's, except that a `running` entry whose worker holds no
`alive` lease any more is `lost` (its worker stopped beating; the next plan trains it
again). The leases of every running entry are read in one round trip (MGET).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

import redis
from pydantic import ValidationError

from hpoq.core.coordination.final_registry import FinalEntry, FinalRegistry
from hpoq.core.coordination.keys import RedisKeys
from hpoq.core.jobs import FinalTrainingJob

EffectiveState = Literal["queued", "running", "lost", "finished", "failed"]


@dataclass(frozen=True)
class PlannedFinal:
    entry: FinalEntry
    job: FinalTrainingJob
    state: EffectiveState

    @property
    def error(self) -> str | None:
        return self.entry.error


def job_of(raw: str) -> FinalTrainingJob | None:
    """The entry's job; None for one this version cannot read."""
    try:
        return FinalTrainingJob.model_validate_json(raw)
    except ValidationError:
        return None


def planned_finals(
    client: redis.Redis,
    keys: RedisKeys,
    experiment_name: str | None = None,
    fields: Collection[str] | None = None,
) -> list[PlannedFinal]:
    """The planned final trainings (of `experiment_name`, of `fields`), by entry field."""
    registry = FinalRegistry(client, keys)
    entries = [e for e in registry.all() if fields is None or e.field in fields]
    found: list[tuple[FinalEntry, FinalTrainingJob]] = []
    for entry in entries:
        job = job_of(entry.job)
        if job is None or (experiment_name is not None and job.experiment.name != experiment_name):
            continue
        found.append((entry, job))
    running = [e.field for e, _ in found if e.state == "running"]
    alive = {f for f, h in zip(running, registry.holders(running), strict=True) if h is not None}
    planned = []
    for entry, job in found:
        state: EffectiveState = entry.state
        if state == "running" and entry.field not in alive:
            state = "lost"
        planned.append(PlannedFinal(entry, job, state))
    return planned
