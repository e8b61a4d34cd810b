"""Reading the end state of a sweep from all four places (Optuna, MLflow, disk, Redis), and
running the `hpoq` CLI as a user would, for the fault and security suites."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import redis

from hpoq.config.experiment import Experiment
from hpoq.core.coordination.keys import redis_keys
from hpoq.core.fingerprints import study_key_hash
from hpoq.core.jobs import JOB_QUEUES
from hpoq.core.runtime import Runtime
from hpoq.core.tracking import make_client
from hpoq.core.variants import VariantRef

State = optuna.trial.TrialState
REPO_ROOT = Path(__file__).resolve().parents[2]


def hpoq(
    env: dict[str, str], *args: str, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    """`hpoq ARGS` in its own process, from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "hpoq.producer", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def hpoq_json(env: dict[str, str], *args: str) -> dict[str, Any]:
    result = hpoq(env, *args, "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def trials(
    runtime: Runtime, experiment: Experiment, *states: Any, study: str = "hpo_tiny"
) -> list[optuna.trial.FrozenTrial]:
    variant = 1 if study == "hpo_tiny" else int(study.rsplit("_v", 1)[1])
    loaded = runtime.study_store(experiment.hpo.checkpoint).load(VariantRef("tiny", variant, study))
    if loaded is None:
        return []
    return loaded.get_trials(deepcopy=False, states=states or None)


def runs(runtime: Runtime, name: str) -> list[Any]:
    """Every MLflow run of the experiment `name` (any status)."""
    client = make_client(runtime.mlflow_uri())
    exp = client.get_experiment_by_name(name)
    return [] if exp is None else list(client.search_runs([exp.experiment_id], max_results=1000))


def finished(run_list: list[Any]) -> list[Any]:
    return [r for r in run_list if r.info.status == "FINISHED"]


@dataclass(frozen=True)
class BudgetState:
    claims: dict[str, float]
    finished: set[str]
    done: set[str]
    pending: dict[str, float]


def budget_state(client: redis.Redis, runtime: Runtime, study: str = "hpo_tiny") -> BudgetState:
    keys = redis_keys(runtime)
    study_key = study_key_hash("tiny", study)
    return BudgetState(
        claims=dict(client.zrange(keys.budget_claims(study_key), 0, -1, withscores=True)),
        finished=set(client.smembers(keys.budget_finished(study_key))),
        done=set(client.smembers(keys.budget_done_jobs(study_key))),
        pending=dict(client.zrange(keys.budget_pending(study_key), 0, -1, withscores=True)),
    )


def quiet(client: redis.Redis) -> bool:
    """Nothing queued, nothing delivered and unacknowledged: every job has run to its end."""
    return (
        all(client.llen(queue) == 0 for queue in JOB_QUEUES)
        and client.hlen("unacked") == 0
        and client.zcard("unacked_index") == 0
    )


def lease_keys(client: redis.Redis) -> list[str]:
    return [str(k) for k in client.scan_iter("hpoq:*:bench-lease:*")]


def task_result(client: redis.Redis, task_id: str) -> dict[str, Any] | None:
    """The stored Celery result of `task_id` (JSON in the Redis backend), or None."""
    raw = client.get(f"celery-task-meta-{task_id}")
    return None if raw is None else json.loads(raw)  # type: ignore[no-any-return]


def task_outcome(client: redis.Redis, task_id: str) -> dict[str, Any] | None:
    """What the task returned once it succeeded (a retry stores RETRY first), else None."""
    meta = task_result(client, task_id)
    return meta["result"] if meta and meta["status"] == "SUCCESS" else None


def redis_strings(client: redis.Redis) -> Iterator[str]:
    """Every key and every value Redis holds, as strings (to search them for a secret or
    a path that must not be there)."""
    for key in client.scan_iter():
        yield key
        kind = client.type(key)
        if kind == "string":
            yield str(client.get(key))
        elif kind == "hash":
            yield from (f"{k}={v}" for k, v in client.hgetall(key).items())
        elif kind == "list":
            yield from client.lrange(key, 0, -1)
        elif kind == "set":
            yield from client.smembers(key)
        elif kind == "zset":
            yield from client.zrange(key, 0, -1)


def hpoq_keys_without_ttl(client: redis.Redis) -> list[str]:
    """hpoq's keys that would live for ever, other than those keys.py says must."""
    from hpoq.core.coordination.keys import KEYS_WITHOUT_TTL

    return [
        str(key)
        for key in client.scan_iter("hpoq:*")
        if client.ttl(key) == -1 and str(key).split(":")[2] not in KEYS_WITHOUT_TTL
    ]
