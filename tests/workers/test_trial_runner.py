"""A trial job end to end in one process: claim, ask, objective, tell, MLflow, disk, release."""

from __future__ import annotations

import json
import time
from pathlib import Path

import optuna
import pytest
import redis

from hpoq.config.settings import Settings
from hpoq.core.celery_app import create_app
from hpoq.core.coordination.keys import redis_keys
from hpoq.core.fingerprints import study_key_hash, trial_key_hash
from hpoq.core.jobs import TrialJob
from hpoq.core.optuna_setup import JOB_ID_ATTR, RUN_ID_ATTR
from hpoq.core.runtime import Runtime
from hpoq.core.variants import VariantRef
from hpoq.producer.submit import Submitter
from hpoq.workers.context import WorkerContext
from hpoq.workers.trial_runner import InFlightElsewhere, execute_trial
from tests.factories import make_experiment


@pytest.fixture
def setup(tmp_path: Path, real_redis: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HPOQ_LEASE_SECONDS", "2")
    experiment = make_experiment(tmp_path, n_trials=3)
    runtime = Runtime.from_settings(Settings(output_dir=tmp_path / "out", platform="local"))
    submitter = Submitter(
        experiment, runtime, real_redis, redis_keys(runtime), create_app(redis_url)
    )
    [result] = submitter.submit()
    ctx = WorkerContext.create(redis_url, runtime)
    jobs = [
        TrialJob(
            job_id=j,
            experiment=submitter.job_experiment,
            backbone="tiny",
            study_name=result.study_name,
            variant=result.variant,
        )
        for j in result.job_ids
    ]
    return experiment, runtime, ctx, jobs


def test_each_job_runs_one_trial_and_records_it_in_all_three_places(setup) -> None:  # type: ignore[no-untyped-def]
    experiment, runtime, ctx, jobs = setup
    outcomes = [execute_trial(job, ctx) for job in jobs]
    assert [o.status for o in outcomes] == ["completed"] * 3
    assert outcomes[-1].variant_complete and not outcomes[0].variant_complete

    store = runtime.study_store(experiment.hpo.checkpoint)
    study = store.load(VariantRef("tiny", 1, "hpo_tiny"))
    assert study is not None
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 3
    assert {t.user_attrs[JOB_ID_ATTR] for t in complete} == {j.job_id for j in jobs}

    exp = ctx.mlflow.get_experiment_by_name(experiment.hpo_experiment_name)
    runs = ctx.mlflow.search_runs([exp.experiment_id])
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)
    tags = experiment.tags
    for trial in complete:
        [run] = [r for r in runs if r.info.run_id == trial.user_attrs[RUN_ID_ATTR]]
        assert run.data.tags[tags.process.stage] == "hpo"
        assert run.data.tags[tags.process.backbone] == "tiny"
        assert run.data.tags[tags.process.variant] == "1"
        assert run.data.tags[tags.process.trial_number] == str(trial.number)
        assert run.data.tags[tags.grouping.study_key_hash] == study_key_hash("tiny", "hpo_tiny")
        assert run.data.tags[tags.grouping.trial_key_hash] == trial_key_hash(
            "tiny", "hpo_tiny", trial.number
        )
        assert run.data.metrics["macro-f1"] == pytest.approx(trial.value)
        # The objective's per-step values, sent in the run's final batch, at step = epoch.
        history = ctx.mlflow.get_metric_history(run.info.run_id, "epoch/macro-f1")
        assert sorted(m.step for m in history) == [1, 2, 3]
        assert max(history, key=lambda m: m.step).value == pytest.approx(trial.value)
        assert [m.step for m in ctx.mlflow.get_metric_history(run.info.run_id, "macro-f1")] == [0]
        assert set(trial.params) <= set(run.data.params)
        metrics_file = runtime.layout.trial_dir("tiny", "hpo_tiny", trial.number) / "metrics.json"
        on_disk = json.loads(metrics_file.read_text())
        assert on_disk["value"] == pytest.approx(trial.value)
        assert on_disk["run_id"] == run.info.run_id and on_disk["state"] == "COMPLETE"


def test_a_redelivered_job_does_nothing(setup) -> None:  # type: ignore[no-untyped-def]
    _, _, ctx, jobs = setup
    assert execute_trial(jobs[0], ctx).status == "completed"
    assert execute_trial(jobs[0], ctx).status == "already_done"


def test_extra_jobs_beyond_the_budget_are_no_ops(setup) -> None:  # type: ignore[no-untyped-def]
    _, _, ctx, jobs = setup
    for job in jobs:
        execute_trial(job, ctx)
    extra = jobs[0].model_copy(update={"job_id": "trial-extra"})
    outcome = execute_trial(extra, ctx)
    assert outcome.status == "budget_full" and outcome.variant_complete


def test_a_job_whose_claim_is_live_elsewhere_is_deferred(setup) -> None:  # type: ignore[no-untyped-def]
    _, _, ctx, jobs = setup
    key = study_key_hash("tiny", jobs[0].study_name)
    ctx.budget.claim(key, jobs[0].job_id, 3, [], 60)
    with pytest.raises(InFlightElsewhere):
        execute_trial(jobs[0], ctx)


def test_a_failing_objective_is_a_fail_trial_replaced_in_the_same_step(setup, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    _, _, ctx, jobs = setup
    import hpoq.workers.objectives.cheap as cheap

    def boom(*args: object) -> float:
        raise RuntimeError("diverged")

    monkeypatch.setattr(cheap, "objective", boom)
    outcome = execute_trial(jobs[0], ctx)
    assert outcome.status == "failed" and "diverged" in (outcome.error or "")
    # What the task reports as its failure: the trial, the study, the error and the run.
    assert outcome.failure() == (
        f"trial {outcome.trial_number} of {jobs[0].study_name} failed: {outcome.error}"
        f" (MLflow run {outcome.run_id})"
    )
    run = ctx.mlflow.get_run(outcome.run_id)
    assert run.info.status == "FAILED" and "diverged" in run.data.tags["hpoq.error"]
    # Its replacement is pending from the moment the failed job is retired.
    assert outcome.replacement == f"{jobs[0].job_id}.r1"
    pending = ctx.redis.zrange(ctx.keys.budget_pending(study_key_hash("tiny", "hpo_tiny")), 0, -1)
    assert outcome.replacement in pending and jobs[0].job_id not in pending
    assert outcome.progress is not None and outcome.progress.state == "running"
    monkeypatch.undo()
    monkeypatch.setenv("HPOQ_LEASE_SECONDS", "2")
    replacement = jobs[0].model_copy(update={"job_id": outcome.replacement})
    statuses = [execute_trial(j, ctx).status for j in [*jobs[1:], replacement]]
    assert statuses == ["completed"] * 3


def test_failures_beyond_max_failed_trials_are_not_replaced(
    tmp_path: Path, real_redis: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HPOQ_LEASE_SECONDS", "2")
    experiment = make_experiment(tmp_path, n_trials=2, hpo_extra={"max_failed_trials": 1})
    runtime = Runtime.from_settings(Settings(output_dir=tmp_path / "out", platform="local"))
    app = create_app(redis_url)
    submitter = Submitter(experiment, runtime, real_redis, redis_keys(runtime), app)
    [result] = submitter.submit()
    ctx = WorkerContext.create(redis_url, runtime)
    first, second = (
        TrialJob(
            job_id=j, experiment=submitter.job_experiment,
            backbone="tiny", study_name=result.study_name, variant=result.variant,
        )
        for j in result.job_ids
    )  # fmt: skip
    assert execute_trial(first, ctx).status == "completed"
    import hpoq.workers.objectives.cheap as cheap

    def boom(*args: object) -> float:
        raise RuntimeError("diverged")

    monkeypatch.setattr(cheap, "objective", boom)
    failed = execute_trial(second, ctx)
    assert failed.replacement == f"{second.job_id}.r1"  # 1 failure: replaced
    last = execute_trial(second.model_copy(update={"job_id": failed.replacement}), ctx)
    assert last.status == "failed" and last.replacement is None  # 2 > max_failed_trials
    assert last.progress is not None and last.variant_over
    assert last.progress.state == "finished with failures"
    assert (last.progress.finished, last.progress.failed) == (1, 2)
    assert "max_failed_trials (1)" in last.progress.reason


def test_a_worker_whose_claim_was_reaped_publishes_nothing(setup, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Presumed dead (its claim lapsed while it stalled), it comes back with a result: no
    COMPLETE told, its MLflow run FAILED, nothing counted, nothing on disk."""
    from hpoq.core.coordination.budget import ReapCandidate

    experiment, runtime, ctx, jobs = setup
    key = study_key_hash("tiny", "hpo_tiny")
    import hpoq.workers.objectives.cheap as cheap

    real = cheap.objective

    def stalls_then_returns(*args):  # type: ignore[no-untyped-def]
        value = real(*args)
        ctx.redis.zadd(ctx.keys.budget_claims(key), {jobs[0].job_id: 0})  # lapsed
        [reaped] = ctx.budget.reap(
            key,
            [ReapCandidate(jobs[0].job_id, f"{jobs[0].job_id}.r1", True)],
            trusted=True,
            lease_s=2,
            replacements_allowed=3,
        )
        assert reaped.replacement_id == f"{jobs[0].job_id}.r1"
        return value

    monkeypatch.setattr(cheap, "objective", stalls_then_returns)
    outcome = execute_trial(jobs[0], ctx)
    assert outcome.status == "lost" and outcome.replacement is None  # the reaper replaced it
    [trial] = (
        runtime.study_store(experiment.hpo.checkpoint)
        .load(VariantRef("tiny", 1, "hpo_tiny"))
        .trials
    )  # type: ignore[union-attr]
    assert trial.state == optuna.trial.TrialState.FAIL
    run = ctx.mlflow.get_run(outcome.run_id)
    assert run.info.status == "FAILED" and "claim lost" in run.data.tags["hpoq.error"]
    assert ctx.redis.scard(ctx.keys.budget_finished(key)) == 0
    trial_dir = runtime.layout.trial_dir("tiny", "hpo_tiny", trial.number)
    assert not (trial_dir / "metrics.json").exists()


class SlowToOpenRuns:
    """An MLflow client whose create_run waits (up to 10 s) until the objective has
    suggested its parameters, and records whether it saw that happen."""

    def __init__(self, client, store, ref) -> None:  # type: ignore[no-untyped-def]
        self.client = client
        self.store = store
        self.ref = ref
        self.saw_objective_running: list[bool] = []

    def create_run(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + 10
        seen = False
        while not seen and time.monotonic() < deadline:
            study = self.store.load(self.ref)
            running = study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
            seen = any(t.params for t in running)
            time.sleep(0.02)
        self.saw_objective_running.append(seen)
        return self.client.create_run(*args, **kwargs)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.client, name)


def test_the_mlflow_run_is_opened_while_the_objective_works(setup) -> None:  # type: ignore[no-untyped-def]
    experiment, runtime, ctx, jobs = setup
    slow = SlowToOpenRuns(
        ctx.mlflow,
        runtime.study_store(experiment.hpo.checkpoint),
        VariantRef("tiny", 1, "hpo_tiny"),
    )
    ctx.mlflow = slow
    outcome = execute_trial(jobs[0], ctx)
    assert slow.saw_objective_running == [True]
    assert outcome.status == "completed" and outcome.run_id
    trial = (
        runtime.study_store(experiment.hpo.checkpoint)
        .load(VariantRef("tiny", 1, "hpo_tiny"))
        .trials[0]
    )  # type: ignore[union-attr]
    assert trial.user_attrs[RUN_ID_ATTR] == outcome.run_id
    assert slow.client.get_run(outcome.run_id).info.status == "FINISHED"


def test_warm_start_runs_the_previous_best_first_within_the_budget(
    tmp_path: Path, real_redis: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hpoq.core.warm_start import WARM_START_ATTR

    monkeypatch.setenv("HPOQ_LEASE_SECONDS", "2")
    experiment = make_experiment(tmp_path, n_trials=3, hpo_extra={"warm_start": "previous_best"})
    runtime = Runtime.from_settings(Settings(output_dir=tmp_path / "out", platform="local"))
    submitter = Submitter(
        experiment, runtime, real_redis, redis_keys(runtime), create_app(redis_url)
    )
    ctx = WorkerContext.create(redis_url, runtime)
    store = runtime.study_store(experiment.hpo.checkpoint)

    def run_all(result) -> None:  # type: ignore[no-untyped-def]
        for job_id in result.job_ids:
            job = TrialJob(
                job_id=job_id,
                experiment=submitter.job_experiment,
                backbone="tiny",
                study_name=result.study_name,
                variant=result.variant,
            )
            assert execute_trial(job, ctx).status == "completed"

    [first] = submitter.submit()
    # Variant 1 has nothing before it: no warm start, three sampled trials.
    assert store.load(VariantRef("tiny", 1, "hpo_tiny")).trials == []  # type: ignore[union-attr]
    run_all(first)
    v1 = store.load(VariantRef("tiny", 1, "hpo_tiny"))
    assert v1 is not None
    best = max(v1.trials, key=lambda t: (t.value, -t.number))

    [second] = submitter.submit(mode_override="force_new")
    ref = VariantRef("tiny", second.variant, second.study_name)
    waiting = store.load(ref).get_trials(states=(optuna.trial.TrialState.WAITING,))  # type: ignore[union-attr]
    assert len(waiting) == 1 and second.trials_enqueued == 3
    run_all(second)
    trials = store.load(ref).trials  # type: ignore[union-attr]
    # The budget holds: three trials, the first of them the previous best's parameters.
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert trials[0].params == best.params
    assert trials[0].user_attrs[WARM_START_ATTR] == f"hpo_tiny#{best.number}"
    assert all(t.params != best.params for t in trials[1:])


def test_a_lost_claim_stops_the_objective_at_its_next_pruning_check(setup, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The reaper took the claim while the objective trains: `trial.should_prune()` says
    stop, and the trial is not published as PRUNED either."""
    from hpoq.core.coordination.budget import ReapCandidate

    experiment, runtime, ctx, jobs = setup
    key = study_key_hash("tiny", "hpo_tiny")
    import hpoq.workers.objectives.cheap as cheap

    answers: list[bool] = []

    def trains_until_told(trial, *args):  # type: ignore[no-untyped-def]
        ctx.redis.zadd(ctx.keys.budget_claims(key), {jobs[0].job_id: 0})  # lapsed
        ctx.budget.reap(
            key,
            [ReapCandidate(jobs[0].job_id, f"{jobs[0].job_id}.r1", True)],
            trusted=True,
            lease_s=2,
            replacements_allowed=3,
        )
        deadline = time.monotonic() + 30
        for epoch in range(10_000):  # an epoch per pass, as a trainer does
            trial.report(0.5, epoch)
            answers.append(trial.should_prune())
            if answers[-1] or time.monotonic() > deadline:
                raise optuna.TrialPruned()
            time.sleep(0.05)
        return 0.5

    monkeypatch.setattr(cheap, "objective", trains_until_told)
    outcome = execute_trial(jobs[0], ctx)
    assert answers[-1] is True and answers.count(True) == 1  # told once, and it stopped
    assert outcome.status == "lost"
    [trial] = (
        runtime.study_store(experiment.hpo.checkpoint)
        .load(VariantRef("tiny", 1, "hpo_tiny"))
        .trials
    )  # type: ignore[union-attr]
    assert trial.state == optuna.trial.TrialState.FAIL  # not PRUNED: nothing counted
    assert ctx.redis.scard(ctx.keys.budget_finished(key)) == 0
