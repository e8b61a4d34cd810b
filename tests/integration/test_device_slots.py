"""`hpoq worker --slots 2` on one device: two trials at once, the trial budget and leases
intact, a trial that runs out of memory retried alone, and a benchmark that never runs
beside a trial. One real worker process (two pool processes) on a real Redis."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
import redis

from hpoq.config.experiment import Experiment
from hpoq.config.settings import Settings
from hpoq.core.celery_app import create_app
from hpoq.core.coordination.keys import redis_keys
from hpoq.core.fingerprints import study_key_hash
from hpoq.core.runtime import Runtime
from hpoq.core.variants import VariantRef
from hpoq.producer.submit import Submitter
from tests.factories import make_experiment
from tests.integration.cluster import Worker, cluster_env, wait_for
from tests.integration.device_probes import OOM_ENV, RECORD_ENV, SECONDS_ENV, read_records
from tests.integration.probes import finished, runs

pytestmark = pytest.mark.slow
PROBE = "tests.integration.device_probes"
SLOW_TRIALS = 5
OOM_TRIAL = 4  # of hpo_slow: runs out of memory on its first attempt


def _overlap(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return bool(a["start"] < b["end"] and b["start"] < a["end"])


def _trials(runtime: Runtime, experiment: Experiment, backbone: str) -> list[Any]:
    ref = VariantRef(backbone, 1, f"hpo_{backbone}")
    study = runtime.study_store(experiment.hpo.checkpoint).load(ref)
    return [] if study is None else study.get_trials(deepcopy=False)


def _claims(client: redis.Redis, runtime: Runtime, backbone: str) -> tuple[int, int]:
    """(live claims, finished) in the variant's budget."""
    keys = redis_keys(runtime)
    study_key = study_key_hash(backbone, f"hpo_{backbone}")
    claims = int(client.zcard(keys.budget_claims(study_key)))
    return claims, int(client.scard(keys.budget_finished(study_key)))


def test_two_slots_share_the_device_and_a_benchmark_never_runs_beside_a_trial(
    tmp_path: Path, real_redis: redis.Redis, redis_url: str
) -> None:
    output, records = tmp_path / "out", tmp_path / "records"
    records.mkdir()
    runtime = Runtime.from_settings(Settings(output_dir=output, platform="local"))
    common: dict[str, Any] = {
        "objective": f"{PROBE}:objective",
        "hpo_extra": {"out_of_memory": "retry_alone"},
        "benchmark_extra": {"runner": f"{PROBE}:run_inference_benchmark"},
    }
    # `quick` (1 short trial) completes at once and enqueues its benchmark while `slow`
    # trials run in the other slot; `slow` has more trials than there are slots.
    quick = make_experiment(tmp_path / "q", name="q", backbones=("quick",), n_trials=1, **common)
    slow = make_experiment(
        tmp_path / "s", name="s", backbones=("slow",), n_trials=SLOW_TRIALS, **common
    )
    celery = create_app(redis_url)
    for experiment in (quick, slow):
        Submitter(experiment, runtime, real_redis, redis_keys(runtime), celery).submit()
    env = cluster_env(
        output,
        redis_url,
        **{
            RECORD_ENV: str(records),
            SECONDS_ENV: "2.5",
            OOM_ENV: f"hpo_slow:{OOM_TRIAL}",
            "HPOQ_CHEAP_BENCH_SLEEP": "1",
        },
    )
    worker = Worker(env, tmp_path / "worker.log", "hpo,benchmark", "--slots", "2")
    try:
        wait_for(
            lambda: (
                len(_trials(runtime, slow, "slow")) >= SLOW_TRIALS
                and all(t.state.is_finished() for t in _trials(runtime, slow, "slow"))
                and finished(runs(runtime, quick.benchmark_experiment_name))
            ),
            240,
            "every slow trial and the quick variant's benchmark",
            [worker],
        )
        wait_for(lambda: real_redis.llen("hpo") == 0, 60, "an empty hpo queue", [worker])
    finally:
        worker.stop()
    log = worker.log()
    rows = read_records(records)
    attempts = [r for r in rows if r["kind"] == "objective"]
    benches = [r for r in rows if r["kind"] == "benchmark"]
    [bench] = [r for r in benches if "/quick/" in r["checkpoint"]]

    # The trial budget: exactly n_trials per variant, all complete, no claim left behind.
    for experiment, backbone, count in ((quick, "quick", 1), (slow, "slow", SLOW_TRIALS)):
        states = [t.state.name for t in _trials(runtime, experiment, backbone)]
        assert states == ["COMPLETE"] * count, (backbone, states)
        assert _claims(real_redis, runtime, backbone) == (0, count)
        hpo_runs = runs(runtime, experiment.hpo_experiment_name)
        assert len(finished(hpo_runs)) == len(hpo_runs) == count
    # Two trials at once, never three: the slots share the device.
    assert any(_overlap(a, b) for a, b in combinations(attempts, 2)), attempts
    assert not any(
        _overlap(a, b) and _overlap(b, c) and _overlap(a, c)
        for a, b, c in combinations(attempts, 3)
    )
    assert len({r["pid"] for r in attempts}) == 2

    # The trial that ran out of memory: failed attempt, then a second one with the device
    # to itself, recorded on its run; the trial counts once.
    oom = [r for r in attempts if r["study"] == "hpo_slow" and r["trial"] == OOM_TRIAL]
    assert [r["outcome"] for r in oom] == ["OutOfMemoryError", "ok"]
    retry = oom[1]
    assert not any(_overlap(retry, other) for other in attempts if other is not retry)
    assert not any(_overlap(retry, b) for b in benches)
    assert "ran out of memory sharing device" in log
    [oom_run] = [
        r
        for r in runs(runtime, slow.hpo_experiment_name)
        if r.data.tags["hpoq.trial_number"] == str(OOM_TRIAL)
    ]
    assert oom_run.data.metrics["out_of_memory_retries"] == 1.0

    # The benchmark: measured once, beside no trial, after waiting for the trial that was
    # running when it started (no new trial started meanwhile).
    assert len(finished(runs(runtime, quick.benchmark_experiment_name))) == 1
    assert not any(_overlap(b, a) for a in attempts for b in benches)
    [bench_start] = [
        r["t"]
        for r in rows
        if r["kind"] == "task_start" and "benchmark" in r["task"] and r["backbone"] == "quick"
    ]
    running = [a for a in attempts if a["start"] < bench_start < a["end"]]
    assert running, "the benchmark arrived on an idle device: nothing was tested"
    assert bench["start"] >= max(a["end"] for a in running)
    assert "waits to use device" in log

    # Every turn on the device was given back.
    assert list(real_redis.scan_iter("hpoq:*:device:*")) == []
