"""Fault: Redis SIGKILLed and restarted while workers run trials: with its append-only file
(what Redis holds survives; the worker reconnects by itself), and without it (Redis comes
back empty: live trials keep their slots and finish, lost jobs are topped up on demand)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from hpoq.config.settings import Settings
from hpoq.core.celery_app import create_app
from hpoq.core.coordination.embedded import EmbeddedRedis
from hpoq.core.coordination.keys import redis_keys
from hpoq.core.coordination.leases import BenchmarkLeases, key_hash
from hpoq.core.coordination.variant_counter import VariantCounter
from hpoq.core.fingerprints import study_key_hash
from hpoq.core.optuna_setup import JOB_ID_ATTR, RUN_ID_ATTR
from hpoq.core.runtime import Runtime
from hpoq.producer.submit import Submitter
from tests.factories import make_experiment, write_experiment
from tests.integration.cluster import Worker, cluster_env, wait_for, workers
from tests.integration.probes import (
    State,
    budget_state,
    finished,
    hpoq_json,
    quiet,
    runs,
    trials,
)
from tests.integration.servers import RedisProcess

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


def test_redis_losing_its_data_mid_sweep_reaps_no_live_trial_and_variant_n_can_be_finished(
    tmp_path: Path,
) -> None:
    """Redis restarts empty (no append-only file) while two trials run and two wait: the
    running trials re-create their claims on their next heartbeat and finish (none is
    reaped), the waiting jobs are lost with the data. A later variant is started; `hpoq
    status` lists the first one as incomplete with the command that finishes it, and that
    command tops it up to n_trials, never past."""
    volatile = RedisProcess(tmp_path / "redis", "--appendonly", "no")
    url = f"redis://127.0.0.1:{volatile.port}/0"
    client = redis.Redis.from_url(url, decode_responses=True)
    volatile.start(ping=client)
    output = tmp_path / "out"
    path = write_experiment(tmp_path, n_trials=4)
    experiment = make_experiment(tmp_path, n_trials=4)
    runtime = Runtime.from_settings(Settings(output_dir=output, platform="local"))
    keys = redis_keys(runtime)
    env = cluster_env(output, url, HPOQ_CHEAP_OBJECTIVE_SLEEP="1.5", HPOQ_LEASE_SECONDS="6")
    try:
        with workers(env, tmp_path, 2) as pool:
            [first] = hpoq_json(env, "submit", str(path))["submitted"]
            running = wait_for(
                lambda: (
                    [
                        t
                        for t in trials(runtime, experiment, State.RUNNING)
                        if RUN_ID_ATTR in t.user_attrs
                    ]
                    if len(trials(runtime, experiment, State.RUNNING)) == 2
                    else None
                ),
                120,
                "two trials running",
                pool,
            )
            alive = {str(t.user_attrs[JOB_ID_ATTR]) for t in running}
            volatile.process.kill()  # type: ignore[union-attr]
            volatile.process.wait()  # type: ignore[union-attr]
            volatile.start(ping=client)  # same port, no data: the two waiting jobs are gone
            assert client.llen("hpo") == 0
            # Each running trial's worker re-creates its claim on its next heartbeat.
            study_key = study_key_hash("tiny", "hpo_tiny")
            wait_for(
                lambda: alive <= set(client.zrange(keys.budget_claims(study_key), 0, -1)),
                60,
                "the claims re-established",
                pool,
            )
            wait_for(
                lambda: not trials(runtime, experiment, State.RUNNING), 120, "the trials", pool
            )
            survived = trials(runtime, experiment, State.COMPLETE)
            assert alive <= {t.user_attrs[JOB_ID_ATTR] for t in survived}
            assert trials(runtime, experiment, State.FAIL) == []  # none reaped

            # A later variant, then variant 1 finished by the command status gives.
            hpoq_json(env, "submit", str(path), "--run-mode", "force_new")
            status = hpoq_json(env, "status", str(path))
            [stuck] = status["incomplete_variants"]
            assert (stuck["variant"], stuck["state"]) == (1, "incomplete")
            command = stuck["command"].split()
            assert command[:3] == ["hpoq", "submit", str(path)]
            [topped] = hpoq_json(env, *command[1:])["submitted"]
            assert (topped["variant"], topped["action"]) == (1, "continued")
            assert topped["trials_enqueued"] == 4 - len(survived)
            wait_for(
                lambda: (
                    len(trials(runtime, experiment, State.COMPLETE)) == 4
                    and len(trials(runtime, experiment, State.COMPLETE, study="hpo_tiny_v2")) == 4
                    and len(finished(runs(runtime, experiment.benchmark_experiment_name))) >= 2
                ),
                240,
                "both variants and their benchmarks",
                pool,
            )
            wait_for(lambda: quiet(client), 60, "an idle cluster", pool)
            final = hpoq_json(env, "status", str(path))
    finally:
        client.close()
        volatile.stop()

    assert first["variant"] == 1
    for study in ("hpo_tiny", "hpo_tiny_v2"):
        assert len(trials(runtime, experiment, State.COMPLETE, study=study)) == 4  # never more
        assert trials(runtime, experiment, State.FAIL, study=study) == []
    assert [v["state"] for v in final["variants"]] == ["complete", "complete"]
    assert final["incomplete_variants"] == []
    studies = {r.data.tags["hpoq.study_name"] for r in finished(runs(runtime, "exp-benchmark"))}
    assert studies == {"hpo_tiny", "hpo_tiny_v2"}
