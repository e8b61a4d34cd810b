"""A trial job end to end in one process: claim, ask, objective, tell, MLflow, disk, release."""

from __future__ import annotations

import json
import time
from pathlib import Path

import optuna
import pytest
import redis

from hpoq.config.settings import Settings
from hpoq.core.fingerprints import study_key_hash, trial_key_hash
from hpoq.core.jobs import TrialJob
from hpoq.core.optuna_setup import JOB_ID_ATTR, RUN_ID_ATTR, open_variant_study
from hpoq.core.runtime import Runtime
from hpoq.core.variants import VariantRef
from hpoq.producer.submit import Submitter
from hpoq.workers.celery_app import create_app
from hpoq.workers.context import WorkerContext, redis_keys
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
            experiment=experiment,
            data_dir=str(tmp_path / "data"),
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


def test_a_failing_objective_is_a_fail_trial_and_frees_its_slot(setup, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    _, _, ctx, jobs = setup
    import hpoq.workers.objectives.cheap as cheap

    def boom(*args: object) -> float:
        raise RuntimeError("diverged")

    monkeypatch.setattr(cheap, "objective", boom)
    outcome = execute_trial(jobs[0], ctx)
    assert outcome.status == "failed"
    run = ctx.mlflow.get_run(outcome.run_id)
    assert run.info.status == "FAILED" and "diverged" in run.data.tags["hpoq.error"]
    monkeypatch.undo()
    monkeypatch.setenv("HPOQ_LEASE_SECONDS", "2")
    replacement = jobs[0].model_copy(update={"job_id": "trial-again"})
    statuses = [execute_trial(j, ctx).status for j in [*jobs[1:], replacement]]
    assert statuses == ["completed"] * 3


def test_a_dead_workers_trial_is_reaped_as_fail(setup) -> None:  # type: ignore[no-untyped-def]
    experiment, runtime, ctx, jobs = setup
    store = runtime.study_store(experiment.hpo.checkpoint)
    ref = VariantRef("tiny", 1, "hpo_tiny")
    study = open_variant_study(store, ref, experiment.hpo)
    key = study_key_hash("tiny", "hpo_tiny")
    # A worker claimed, asked, and died: its claim lapses, its trial stays RUNNING.
    ctx.budget.claim(key, jobs[0].job_id, 3, [], lease_s=0.01)
    orphan = study.ask()
    orphan.set_user_attr(JOB_ID_ATTR, jobs[0].job_id)
    study.trials  # noqa: B018 - refresh
    import time

    time.sleep(2.1)  # older than the lease (HPOQ_LEASE_SECONDS=2)
    outcome = execute_trial(jobs[1], ctx)
    assert [r.trial_number for r in outcome.reaped] == [orphan.number]
    assert outcome.reaped[0].retired_first
    frozen = study.get_trials()[orphan.number]
    assert frozen.state == optuna.trial.TrialState.FAIL
    assert execute_trial(jobs[0], ctx).status == "already_done"
    # It died before opening a run: the reaper logged a FAILED one for it.
    assert _runs_of_trial(ctx, experiment, orphan.number) == ["FAILED"]


def _runs_of_trial(ctx, experiment, number: int) -> list[str]:  # type: ignore[no-untyped-def]
    found = ctx.mlflow.get_experiment_by_name(experiment.hpo_experiment_name)
    runs = ctx.mlflow.search_runs(
        [found.experiment_id],
        f"tags.`{experiment.tags.process.trial_number}` = '{number}'",
    )
    return [r.info.status for r in runs]


def test_a_run_opened_by_a_worker_that_died_before_recording_it_is_failed(setup) -> None:  # type: ignore[no-untyped-def]
    from hpoq.core.trial_record import TrialRecord
    from hpoq.core.trial_tracking import start_trial_run

    experiment, runtime, ctx, jobs = setup
    store = runtime.study_store(experiment.hpo.checkpoint)
    study = open_variant_study(store, VariantRef("tiny", 1, "hpo_tiny"), experiment.hpo)
    key = study_key_hash("tiny", "hpo_tiny")
    ctx.budget.claim(key, jobs[0].job_id, 3, [], lease_s=0.01)
    orphan = study.ask()
    orphan.set_user_attr(JOB_ID_ATTR, jobs[0].job_id)
    # The worker opened the trial's run, then died before recording its id on the trial.
    record = TrialRecord(
        state="FAIL",
        value=None,
        params={},
        experiment=experiment.name,
        backbone="tiny",
        study_name="hpo_tiny",
        variant=1,
        trial_number=orphan.number,
        metric=experiment.hpo.objective.metric,
    )
    start_trial_run(
        ctx.mlflow,
        ctx.experiment_id(experiment.hpo_experiment_name),
        record,
        record.mlflow_tags(experiment.tags),
    )
    time.sleep(2.1)
    outcome = execute_trial(jobs[1], ctx)
    assert [r.trial_number for r in outcome.reaped] == [orphan.number]
    assert _runs_of_trial(ctx, experiment, orphan.number) == ["FAILED"]  # that run, no other


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
