"""HPO variants on real Celery workers over a real Redis."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest
import redis

from hpoq.config.settings import Settings
from hpoq.core.celery_app import create_app
from hpoq.core.coordination.keys import redis_keys
from hpoq.core.jobs import QUEUE_HPO, TASK_RUN_TRIAL, TrialJob
from hpoq.core.optuna_setup import RUN_ID_ATTR
from hpoq.core.runtime import Runtime
from hpoq.core.tracking import make_client
from hpoq.core.variants import VariantRef
from hpoq.producer.submit import Submitter
from tests.factories import make_experiment
from tests.integration.cluster import cluster_env, wait_for, workers

pytestmark = pytest.mark.slow
State = optuna.trial.TrialState


def _trials(runtime: Runtime, experiment, state: State) -> list[optuna.trial.FrozenTrial]:  # type: ignore[no-untyped-def]
    study = runtime.study_store(experiment.hpo.checkpoint).load(VariantRef("tiny", 1, "hpo_tiny"))
    return [] if study is None else study.get_trials(deepcopy=False, states=(state,))


def _runs(runtime: Runtime, experiment):  # type: ignore[no-untyped-def]
    client = make_client(runtime.mlflow_uri())
    exp = client.get_experiment_by_name(experiment.hpo_experiment_name)
    return [] if exp is None else client.search_runs([exp.experiment_id], max_results=1000)


def test_two_workers_run_exactly_n_trials_even_with_a_duplicate_delivery(
    tmp_path: Path, real_redis: redis.Redis, redis_url: str
) -> None:
    output = tmp_path / "out"
    experiment = make_experiment(tmp_path, n_trials=10)
    runtime = Runtime.from_settings(Settings(output_dir=output, platform="local"))
    celery = create_app(redis_url)
    submitter = Submitter(experiment, runtime, real_redis, redis_keys(runtime), celery)
    [result] = submitter.submit()
    # The same job delivered twice (as Redis does after a visibility timeout).
    duplicate = TrialJob(
        job_id=result.job_ids[0],
        experiment=submitter.job_experiment,
        backbone="tiny",
        study_name=result.study_name,
        variant=1,
    )
    celery.send_task(
        TASK_RUN_TRIAL, args=[duplicate.to_payload()], queue=QUEUE_HPO, task_id=duplicate.job_id
    )
    env = cluster_env(output, redis_url)
    with workers(env, tmp_path, 2) as pool:
        wait_for(
            lambda: len(_trials(runtime, experiment, State.COMPLETE)) >= 10,
            180,
            "10 complete trials",
            pool,
        )
        wait_for(lambda: real_redis.llen("hpo") == 0, 60, "an empty hpo queue", pool)
        time.sleep(2)  # let the duplicate's delivery finish
    assert len(_trials(runtime, experiment, State.COMPLETE)) == 10
    assert _trials(runtime, experiment, State.RUNNING) == []
    runs = _runs(runtime, experiment)
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert len(finished) == 10 and len(runs) == 10
    trial_ids = {r.data.tags["hpoq.trial_key_hash"] for r in finished}
    assert len(trial_ids) == 10
    assert {r.data.tags["hpoq.variant"] for r in finished} == {"1"}


def test_a_sigkilled_worker_trial_fails_and_the_variant_still_completes(
    tmp_path: Path, real_redis: redis.Redis, redis_url: str
) -> None:
    output = tmp_path / "out"
    experiment = make_experiment(tmp_path, n_trials=4)
    runtime = Runtime.from_settings(Settings(output_dir=output, platform="local"))
    submitter = Submitter(
        experiment, runtime, real_redis, redis_keys(runtime), create_app(redis_url)
    )
    submitter.submit()
    env = cluster_env(
        output,
        redis_url,
        HPOQ_CHEAP_OBJECTIVE_SLEEP="1",
        HPOQ_LEASE_SECONDS="3",
        HPOQ_VISIBILITY_TIMEOUT="10",
    )
    with workers(env, tmp_path / "first", 0) as _:
        pass
    (tmp_path / "first").mkdir()
    with workers(env, tmp_path / "first", 1) as [victim]:
        # Mid-trial means inside the objective: the trial's MLflow run exists already.
        running = wait_for(
            lambda: [
                t
                for t in _trials(runtime, experiment, State.RUNNING)
                if RUN_ID_ATTR in t.user_attrs
            ],
            120,
            "a trial inside its objective",
            [victim],
        )
        victim.kill()
    killed_number = running[0].number
    (tmp_path / "second").mkdir()
    with workers(env, tmp_path / "second", 1) as pool:
        wait_for(
            lambda: len(_trials(runtime, experiment, State.COMPLETE)) >= 4,
            240,
            "4 complete trials after the kill",
            pool,
        )
        time.sleep(12)  # past the visibility timeout: the killed job's message comes back
        assert len(_trials(runtime, experiment, State.COMPLETE)) == 4
    failed = _trials(runtime, experiment, State.FAIL)
    assert [t.number for t in failed] == [killed_number]
    runs = _runs(runtime, experiment)
    assert sum(r.info.status == "FINISHED" for r in runs) == 4
    killed_runs = [r for r in runs if r.data.tags.get("hpoq.trial_number") == str(killed_number)]
    assert [r.info.status for r in killed_runs] == ["FAILED"]
