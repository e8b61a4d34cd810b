"""Real workers started together search distinct points: within a variant, across variants,
and a rerun of a variant's trial numbers repeats them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
import redis

from hpoq.config.experiment import Experiment
from hpoq.config.settings import Settings
from hpoq.core.celery_app import create_app
from hpoq.core.coordination.keys import redis_keys
from hpoq.core.jobs import TrialJob
from hpoq.core.runtime import Runtime
from hpoq.core.variants import VariantRef
from hpoq.producer.submit import SubmitResult, Submitter
from hpoq.workers.context import WorkerContext
from hpoq.workers.trial_runner import execute_trial
from tests.factories import make_experiment
from tests.integration.cluster import cluster_env, wait_for, workers

pytestmark = pytest.mark.slow
WORKERS = 3
COMPLETE = optuna.trial.TrialState.COMPLETE
Point = tuple[tuple[str, Any], ...]


def _points(runtime: Runtime, experiment: Experiment, result: SubmitResult) -> dict[int, Point]:
    """Trial number -> parameters of the variant's COMPLETE trials."""
    ref = VariantRef("tiny", result.variant, result.study_name)
    study = runtime.study_store(experiment.hpo.checkpoint).load(ref)
    trials = [] if study is None else study.get_trials(deepcopy=False, states=(COMPLETE,))
    return {t.number: tuple(sorted(t.params.items())) for t in trials}


def _submit_two_variants(
    experiment: Experiment, runtime: Runtime, client: redis.Redis, redis_url: str
) -> tuple[SubmitResult, SubmitResult, Experiment]:
    """Variants 1 and 2, and the experiment as their jobs carry it."""
    submitter = Submitter(experiment, runtime, client, redis_keys(runtime), create_app(redis_url))
    [first] = submitter.submit()
    [second] = submitter.submit(mode_override="force_new")
    assert submitter.job_experiment is not None
    return first, second, submitter.job_experiment


def test_workers_started_together_search_distinct_points_and_reruns_repeat_them(
    tmp_path: Path, real_redis: redis.Redis, redis_url: str
) -> None:
    experiment = make_experiment(tmp_path, n_trials=WORKERS)
    runtime = Runtime.from_settings(Settings(output_dir=tmp_path / "out", platform="local"))
    first, second, _ = _submit_two_variants(experiment, runtime, real_redis, redis_url)
    assert (first.variant, second.variant) == (1, 2)
    # Every job is queued before the workers start; a trial takes ~3 s, so the first
    # WORKERS trials run side by side.
    env = cluster_env(tmp_path / "out", redis_url, HPOQ_CHEAP_OBJECTIVE_SLEEP="1")
    with workers(env, tmp_path, WORKERS) as pool:
        wait_for(
            lambda: all(len(_points(runtime, experiment, r)) == WORKERS for r in (first, second)),
            300,
            f"{WORKERS} complete trials in each of two variants",
            pool,
        )
    variant_1 = _points(runtime, experiment, first)
    variant_2 = _points(runtime, experiment, second)
    assert len(set(variant_1.values())) == WORKERS  # the first W trials: W distinct points
    assert len(set(variant_2.values())) == WORKERS
    assert not set(variant_1.values()) & set(variant_2.values())  # force_new explores anew

    # A rerun elsewhere (its own output and Redis keys), one job at a time in this process:
    # each variant's trial numbers propose the points the cluster ran.
    rerun = Runtime.from_settings(Settings(output_dir=tmp_path / "rerun", platform="local"))
    *again, job_experiment = _submit_two_variants(experiment, rerun, real_redis, redis_url)
    assert isinstance(job_experiment, Experiment)
    ctx = WorkerContext.create(redis_url, rerun)
    for result in again:
        for job_id in result.job_ids:
            job = TrialJob(
                job_id=job_id,
                experiment=job_experiment,
                backbone="tiny",
                study_name=result.study_name,
                variant=result.variant,
            )
            assert execute_trial(job, ctx).status == "completed"
    assert _points(rerun, experiment, again[0]) == variant_1
    assert _points(rerun, experiment, again[1]) == variant_2
