"""Fault: Redis SIGKILLed and restarted (same data directory and port, append-only file on)
while a worker runs a trial. What Redis holds survives; the worker reconnects by itself."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from hpoq.config.settings import Settings
from hpoq.core.coordination.embedded import EmbeddedRedis
from hpoq.core.coordination.leases import BenchmarkLeases, key_hash
from hpoq.core.coordination.variant_counter import VariantCounter
from hpoq.core.optuna_setup import RUN_ID_ATTR
from hpoq.core.runtime import Runtime
from hpoq.producer.submit import Submitter
from hpoq.workers.celery_app import create_app
from hpoq.workers.context import redis_keys
from tests.factories import make_experiment
from tests.integration.cluster import Worker, cluster_env, wait_for
from tests.integration.probes import State, budget_state, finished, quiet, runs, trials

pytestmark = pytest.mark.slow


def test_redis_restarted_mid_sweep_keeps_jobs_counters_and_leases_and_workers_reconnect(
    tmp_path: Path,
) -> None:
    server = EmbeddedRedis(tmp_path / "redis").start()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    worker: Worker | None = None
    try:
        output = tmp_path / "out"
        experiment = make_experiment(tmp_path, n_trials=4)
        runtime = Runtime.from_settings(Settings(output_dir=output, platform="local"))
        keys = redis_keys(runtime)
        [submitted] = Submitter(experiment, runtime, client, keys, create_app(server.url)).submit(
            mode_override="force_new"
        )
        counter = VariantCounter(client, keys)
        leases = BenchmarkLeases(client, keys)
        assert counter.peek("tiny", "hpo_tiny") == 1
        assert leases.acquire("some-key", "owner-1", ttl_s=600)
        fence = leases.next_fence("some-key")

        env = cluster_env(
            output,
            server.url,
            HPOQ_CHEAP_OBJECTIVE_SLEEP="1",
            HPOQ_LEASE_SECONDS="30",  # longer than the outage: the running trial keeps its claim
            HPOQ_VISIBILITY_TIMEOUT="10",
        )
        worker = Worker(env, tmp_path / "worker.log")
        pid = worker.process.pid
        wait_for(
            lambda: [
                t for t in trials(runtime, experiment, State.RUNNING) if RUN_ID_ATTR in t.user_attrs
            ],
            120,
            "a running trial",
            [worker],
        )
        queued = client.llen("hpo")
        assert queued >= 2
        time.sleep(1.5)  # past the append-only file's once-a-second flush
        server.kill()
        time.sleep(1)
        server = EmbeddedRedis(tmp_path / "redis", server.port).start()

        # Everything Redis held is back: queued jobs, the variant counter, the lease, its fence.
        assert client.llen("hpo") >= queued - 1  # the reconnecting worker may take one
        assert counter.peek("tiny", "hpo_tiny") == 1
        assert leases.holder("some-key") == "owner-1"
        assert leases.current_fence("some-key") == fence
        assert client.ttl(keys.benchmark_lease(key_hash("some-key"))) > 500  # TTL kept too

        # The same worker process reconnects and finishes the sweep and its benchmark.
        wait_for(
            lambda: finished(runs(runtime, experiment.benchmark_experiment_name)),
            150,
            "the sweep and its benchmark after the restart",
            [worker],
        )
        wait_for(lambda: quiet(client), 60, "an idle cluster", [worker])
        assert worker.process.poll() is None and worker.process.pid == pid
        assert "Connection to broker lost" in worker.log()
    finally:
        if worker is not None:
            worker.stop()
        client.close()
        server.stop()

    complete = trials(runtime, experiment, State.COMPLETE)
    assert len(complete) == 4 and trials(runtime, experiment, State.RUNNING) == []
    hpo_runs = runs(runtime, experiment.hpo_experiment_name)
    assert len(finished(hpo_runs)) == 4
    assert len({r.data.tags["hpoq.trial_key_hash"] for r in finished(hpo_runs)}) == 4
    assert len(finished(runs(runtime, experiment.benchmark_experiment_name))) == 1
    # A second force_new after the restart continues the surviving counter.
    with EmbeddedRedis(tmp_path / "redis", server.port) as again:
        client = redis.Redis.from_url(again.url, decode_responses=True)
        budget = budget_state(client, runtime)
        assert budget.claims == {} and budget.pending == {}
        assert budget.finished == set(submitted.job_ids)
        [second] = Submitter(experiment, runtime, client, keys, create_app(again.url)).submit(
            mode_override="force_new"
        )
        assert (second.study_name, second.variant) == ("hpo_tiny_v2", 2)
        client.close()
