"""The same cluster on each broker: Redis, and RabbitMQ (HPOQ_BROKER_URL=amqp://) where one
answers. Counters, leases, results and dead letters stay in Redis either way.

- A round trip as a user makes it: `hpoq submit`, `hpoq status` counting the queued jobs
  on the broker, a worker running them, `hpoq status` again.
- A SIGKILLed worker's job delivered again to the surviving worker. On RabbitMQ it comes
  back as soon as the dead worker's connection drops, with every setting at its default;
  on Redis only after the visibility timeout (10 s here, 12 h by default). The times are
  printed.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from hpoq.config.settings import Settings
from hpoq.core.jobs import QUEUE_BENCHMARK, QUEUE_HPO, QUEUE_TRAIN
from hpoq.core.optuna_setup import JOB_ID_ATTR, RUN_ID_ATTR
from hpoq.core.runtime import Runtime
from hpoq.redaction import redact_url
from tests.factories import make_experiment, write_experiment
from tests.integration.brokers import Broker
from tests.integration.cluster import Worker, cluster_env, wait_for, workers
from tests.integration.crashing import MARKERS_ENV
from tests.integration.probes import (
    REPO_ROOT,
    State,
    finished,
    hpoq_json,
    runs,
    task_outcome,
    trials,
)

pytestmark = pytest.mark.slow
REDIS_VISIBILITY_S = 10
LEASE_S = 15.0


def test_submit_status_and_a_worker_round_trip(
    tmp_path: Path, real_redis: redis.Redis, redis_url: str, broker: Broker
) -> None:
    output = tmp_path / "out"
    env = cluster_env(output, redis_url, **broker.env())
    path = write_experiment(tmp_path, n_trials=3)
    submitted = hpoq_json(env, "submit", str(path))
    assert submitted["submitted"][0]["trials_enqueued"] == 3
    queued = hpoq_json(env, "status", str(path))
    assert queued["queues"] == {QUEUE_HPO: 3, QUEUE_BENCHMARK: 0, QUEUE_TRAIN: 0}
    shown = queued["settings"]["broker_url"]  # password redacted
    assert shown == (redact_url(broker.url) if broker.amqp else None)

    runtime = Runtime.from_settings(Settings(output_dir=output, platform="local"))
    with workers(env, tmp_path, 1) as pool:
        wait_for(lambda: finished(runs(runtime, "exp-benchmark")), 180, "the sweep", pool)
        wait_for(lambda: broker.quiet(real_redis), 60, "empty queues", pool)
        status = hpoq_json(env, "status", str(path))
    assert status["queues"] == {QUEUE_HPO: 0, QUEUE_BENCHMARK: 0, QUEUE_TRAIN: 0}
    assert [(v["finished"], v["running"]) for v in status["variants"]] == [(3, 0)]
    assert status["dead_letters"]["count"] == 0
    if broker.amqp:  # nothing queued in Redis: it holds the coordination only
        assert real_redis.llen(QUEUE_HPO) == 0 and not real_redis.exists("unacked")


def _received(worker: Worker, job_id: str) -> bool:
    return f"[{job_id}] received" in worker.log()


def _received_at(worker: Worker, job_id: str) -> datetime.datetime:
    """When `worker` first logged receiving `job_id` (Celery's `[time: LEVEL/process]`
    prefix; a retry is received again under the same id)."""
    line = next(x for x in worker.log().splitlines() if f"[{job_id}] received" in x)
    return datetime.datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f")


def _seconds_until(probe: Callable[[], bool], start: float, timeout_s: float) -> float:
    """Seconds from `start` until `probe` holds, looked at every 20 ms (a log line)."""
    while not probe():
        assert time.monotonic() - start < timeout_s, "timed out"
        time.sleep(0.02)
    return time.monotonic() - start


def test_a_sigkilled_workers_job_is_delivered_again_to_another_worker(
    tmp_path: Path,
    real_redis: redis.Redis,
    redis_url: str,
    broker: Broker,
    capsys: pytest.CaptureFixture[str],
) -> None:
    output = tmp_path / "out"
    markers = tmp_path / "markers"
    markers.mkdir()
    experiment = make_experiment(
        tmp_path, n_trials=1, objective="tests.integration.crashing:slow_first"
    )
    runtime = Runtime.from_settings(Settings(output_dir=output, platform="local"))
    # RabbitMQ: every broker setting at its default. Redis: a visibility timeout short
    # enough to wait for (its default is 12 h).
    extra = {} if broker.amqp else {"HPOQ_VISIBILITY_TIMEOUT": str(REDIS_VISIBILITY_S)}
    env = cluster_env(
        output,
        redis_url,
        HPOQ_LEASE_SECONDS=str(LEASE_S),
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
        **{MARKERS_ENV: str(markers)},
        **broker.env(),
        **extra,
    )
    with workers(env, tmp_path, 2) as pool:
        for worker in pool:
            wait_for(lambda w=worker: " ready." in w.log(), 120, "the workers", pool)
        hpoq_json(env, "submit", str(tmp_path / "config" / "experiment" / "exp.yaml"))
        [hung] = wait_for(  # inside the objective, which hangs the first time
            lambda: [t for t in trials(runtime, experiment) if RUN_ID_ATTR in t.user_attrs],
            120,
            "the trial running",
            pool,
        )
        job_id = str(hung.user_attrs[JOB_ID_ATTR])
        [victim] = [w for w in pool if _received(w, job_id)]
        [survivor] = [w for w in pool if w is not victim]
        killed = time.monotonic()
        victim.kill()
        redelivery_s = _seconds_until(lambda: _received(survivor, job_id), killed, 120)
        # The variant completes: the redelivered job waits out the dead worker's claim.
        wait_for(
            lambda: trials(runtime, experiment, State.COMPLETE), 180, "the trial done", [survivor]
        )
        # The variant's benchmark and the redelivered job's in-flight rechecks come first.
        wait_for(lambda: broker.quiet(real_redis), 180, "an idle cluster", [survivor])
        # The redelivered job itself ends, in either broker's case.
        outcome = wait_for(
            lambda: task_outcome(real_redis, job_id), 180, "the job's own end", [survivor]
        )

    since_first = (_received_at(survivor, job_id) - _received_at(victim, job_id)).total_seconds()
    with capsys.disabled():
        shown = {"broker": broker.name, "redelivery_s": round(redelivery_s, 2)}
        shown |= {"since_first_delivery_s": round(since_first, 2), "outcome": outcome["status"]}
        print(f"\nredelivery after SIGKILL: {json.dumps(shown)}")
    if broker.amqp:
        assert redelivery_s < 5.0  # no timeout: the connection dropped
    else:
        assert since_first >= REDIS_VISIBILITY_S - 0.5  # not before the visibility timeout
    assert outcome["status"] == "already_done"  # the job ran again as `.r1`, once
    assert len(trials(runtime, experiment, State.COMPLETE)) == 1
    assert trials(runtime, experiment, State.RUNNING) == []
    assert "Unrecoverable error" not in survivor.log()
