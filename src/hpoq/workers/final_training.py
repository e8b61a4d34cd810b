"""One final-training job: the chosen trial's hyperparameters, trained once more under a
final-training variant, scored on train, validation and test, recorded and published.

Order, and why:
1. the entry's `alive` lease is taken (SET NX): another delivery holding it sends this one
   back to the queue for later;
2. under it, a FINISHED run of this variant already in MLflow ends the job (a redelivery,
   or a job sent twice): the model is never trained twice under one variant; else the
   registry entry says `running` (only while it still holds this job: a newer job sent
   since is never overwritten), a heartbeat renews the lease while it trains (a lease lost
   meanwhile: nothing is recorded and the checkpoint is not replaced), and a RUNNING MLflow
   run is opened in the final experiment, tagged stage=final_training, the backbone and
   variant, spec_fp, exec_fp, the seed and the source HPO run and trial;
3. with a shared turn on the device (as a trial's), the model is built, scored on test
   untrained (the baseline it must beat), trained on train (+ validation) for the job's
   epochs under its seed and precision, then scored on every split;
4. the scores (`{split}.{metric}`: the configured metric, micro and macro F1, precision,
   recall, `f1.<TYPE>`), the parameters and the checkpoint are logged; the checkpoint is
   saved under `<output>/<platform>/final/<backbone>/<name>/checkpoint/` and published to
   the run by content hash (another host's benchmark worker fetches it); the run is set
   FINISHED last, so a FINISHED final run always has its checkpoint;
5. the benchmark of the final model is enqueued through the benchmark dispatch path (its
   key names the final run), exactly once whoever asks.
A failure sets the run FAILED with the error (tag `hpoq.error`) and the registry entry
`failed`, for `hpoq train-final --retry-failed`.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hpoq.config.base import RunMode
from hpoq.core.benchmark_dispatch import TaskSender, dispatch
from hpoq.core.benchmark_index import final_candidate
from hpoq.core.coordination.final_registry import FinalRegistry, entry_field
from hpoq.core.coordination.heartbeat import Heartbeat
from hpoq.core.coordination.leases import BenchmarkLeases
from hpoq.core.final_runs import FinalRun, final_runs
from hpoq.core.jobs import FinalTrainingJob, JobInFlight
from hpoq.core.trial_record import STAGE_FINAL_TRAINING, write_json_atomic
from hpoq.workers.context import WorkerContext, lease_seconds

log = logging.getLogger(__name__)
Status = Literal["trained", "already_done", "failed"]
SCORES_FILE = "final_scores.json"


class FinalTrainingInFlight(JobInFlight):
    """Raised when another delivery of the job is training it (its heartbeat is alive)."""


class FinalLeaseLost(FinalTrainingInFlight):
    """Raised when this delivery's lease lapsed mid-training: another may train it, so
    nothing is recorded and the job looks again later (finished by then, or trained)."""


@dataclass(frozen=True)
class FinalOutcome:
    status: Status
    name: str
    run_id: str | None = None
    error: str | None = None
    benchmark_jobs: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "name": self.name,
            "run_id": self.run_id,
            "error": self.error,
            "benchmark_jobs": list(self.benchmark_jobs),
        }

    def failure(self) -> str | None:
        if self.status != "failed":
            return None
        run = f" (MLflow run {self.run_id})" if self.run_id else ""
        return f"final training {self.name} failed: {self.error}{run}"


def final_checkpoint_dir(ctx: WorkerContext, backbone: str, name: str) -> Path:
    return ctx.runtime.layout.final_variant_dir(backbone, name) / "checkpoint"


def execute_final_training(job: FinalTrainingJob, ctx: WorkerContext) -> FinalOutcome:
    registry = FinalRegistry(ctx.redis, ctx.keys)
    field = entry_field(job.backbone, job.spec_fp, job.exec_fp)
    as_json = job.model_dump_json()
    owner = f"{job.job_id}@{socket.gethostname()}:{os.getpid()}"
    lease_s = lease_seconds()
    if not registry.acquire(field, owner, lease_s):  # another delivery trains it: look again
        raise FinalTrainingInFlight(
            f"final training {job.study_name} is running on {registry.holder(field)}"
        )
    try:
        done = _finished_run(job, ctx)  # asked under the lease: no delivery finishes meanwhile
        if done is not None:
            registry.put_if_job(field, job.job_id, "finished", as_json)
            return FinalOutcome("already_done", job.study_name, run_id=done.run_id)
        registry.put_if_job(field, job.job_id, "running", as_json)
        beat = Heartbeat(lambda: registry.renew(field, owner, lease_s), lease_s / 3, job.job_id)

        def still_held() -> None:
            """Raise once another delivery may be training: nothing of ours is published."""
            if beat.lost.is_set() or not registry.renew(field, owner, lease_s):
                raise FinalLeaseLost(f"final training {job.study_name}: its lease was lost")

        with beat:
            run_id = _open_run(job, ctx)
            try:
                scores, baseline, checkpoint, summary = _train(job, ctx, still_held)
                still_held()
                _record(job, ctx, run_id, scores, baseline, checkpoint, summary)
            except FinalLeaseLost as exc:
                _fail_run(job, ctx, run_id, str(exc))
                raise
            except Exception as exc:
                text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                log.error("final training %s failed: %s", job.study_name, text)
                traceback.clear_frames(exc.__traceback__)
                _fail_run(job, ctx, run_id, text)
                registry.put_if_job(field, job.job_id, "failed", as_json, error=text)
                return FinalOutcome("failed", job.study_name, run_id=run_id, error=text)
        registry.put_if_job(field, job.job_id, "finished", as_json)
        return FinalOutcome("trained", job.study_name, run_id=run_id)
    finally:
        registry.release(field, owner)


def benchmark_final(job: FinalTrainingJob, ctx: WorkerContext, sender: TaskSender) -> list[str]:
    """Enqueue the benchmark of the final model (never forced; a key measured or in flight
    is skipped by the dispatch path)."""
    run = _finished_run(job, ctx)
    if run is None:
        return []
    report = dispatch(
        job.experiment,
        ctx.runtime,
        [final_candidate(job.experiment, run)],
        mode=RunMode.REUSE_IF_EXISTS,
        leases=BenchmarkLeases(ctx.redis, ctx.keys),
        sender=sender,
        client=ctx.mlflow,
    )
    return report.job_ids


def _finished_run(job: FinalTrainingJob, ctx: WorkerContext) -> FinalRun | None:
    for run in final_runs(ctx.mlflow, job.experiment, job.backbone, status="FINISHED"):
        if run.name == job.study_name:
            return run
    return None


def _tags(job: FinalTrainingJob, ctx: WorkerContext) -> dict[str, str]:
    t = job.experiment.tags
    ft = t.final_training
    return {
        t.process.stage: STAGE_FINAL_TRAINING,
        t.process.backbone: job.backbone,
        t.process.variant: str(job.variant),
        t.process.study_name: job.study_name,
        t.process.experiment: job.experiment.name,
        ft.spec_fp: job.spec_fp,
        ft.exec_fp: job.exec_fp,
        ft.seed: str(job.seed),
        ft.source_study_name: job.source_study_name,
        ft.source_trial_number: str(job.source_trial_number),
        ft.source_trial_id: job.source_trial_id,
        ft.source_run_id: job.source_run_id or "",
        "hpoq.worker": ctx.hostname,
        "hpoq.job_id": job.job_id,
    }


def _open_run(job: FinalTrainingJob, ctx: WorkerContext) -> str:
    from hpoq.core.retry import retry_call
    from hpoq.core.trial_tracking import transient_errors

    name = job.experiment.final_experiment_name
    run_name = f"{job.study_name}-seed-{job.seed}"
    tags = _tags(job, ctx)
    return retry_call(
        lambda: ctx.in_experiment(
            name,
            lambda experiment_id: str(
                ctx.mlflow.create_run(experiment_id, tags=tags, run_name=run_name).info.run_id
            ),
        ),
        what="MLflow create final-training run",
        retry_on=transient_errors(),
    )


def _train(
    job: FinalTrainingJob, ctx: WorkerContext, still_held: Callable[[], None]
) -> tuple[dict[str, dict[str, float]], dict[str, float], Path, dict[str, Any]]:
    """Train under a shared turn on the device: (scores per split, the untrained model's
    test scores, the checkpoint folder, the summary)."""
    from hpoq.core.datasets import SPLITS, ensure_dataset
    from hpoq.core.datasets.readers import SplitName
    from hpoq.core.job_inputs import local_backbone, local_data
    from hpoq.workers.device_turns import turn_owner
    from hpoq.workers.training.checkpoints import write_model_files
    from hpoq.workers.training.device import seed_everything
    from hpoq.workers.training.hyperparams import HyperParams
    from hpoq.workers.training.trainer import fit, prepare, score_split

    final = job.experiment.final_training
    assert final is not None  # the job's validator refuses a job without one
    trainer = job.experiment.hpo.trainer
    store = ctx.content()
    data, data_dir = local_data(job.experiment, store)
    ensure_dataset(data, data_dir)
    backbone = local_backbone(job.experiment, job.backbone, store)
    params = HyperParams.from_params({**job.params, "epochs": job.epochs})
    splits: tuple[SplitName, ...] = (
        ("train", "validation") if final.train_on_validation else ("train",)
    )
    started = time.perf_counter()
    with ctx.device_turns.shared(turn_owner(job.job_id), f"final training {job.study_name}"):
        seed_everything(job.seed)
        run = prepare(backbone, data, data_dir, trainer, params, trainer.device, splits)
        try:
            grouping = trainer.length_grouping
            baseline = score_split(run, data, data_dir, "test", job.precision, grouping)
            fit(run, params, job.precision, job.seed, length_grouping=grouping)
            scores: dict[str, dict[str, float]] = {
                split: score_split(run, data, data_dir, split, job.precision, grouping).as_metrics()
                for split in SPLITS
            }
            summary: dict[str, Any] = {
                "backbone": job.backbone,
                "name": job.study_name,
                "variant": job.variant,
                "seed": job.seed,
                "spec_fp": job.spec_fp,
                "exec_fp": job.exec_fp,
                "device": str(run.device),
                "precision": job.precision.value,
                "params": dict(job.params),
                "epochs": job.epochs,
                "trained_on": list(splits),
                "source": {
                    "study_name": job.source_study_name,
                    "trial_number": job.source_trial_number,
                    "run_id": job.source_run_id,
                },
                "scores": scores,
                "test_untrained": baseline.as_metrics(),
                "wall_seconds": time.perf_counter() - started,
                "max_length": run.max_length,
            }
            folder = final_checkpoint_dir(ctx, job.backbone, job.study_name)
            tmp = folder.with_name(f"{folder.name}.tmp-{job.job_id}")
            write_model_files(tmp, run.model, run.tokenizer, run.labels, summary)
            still_held()  # never replace the checkpoint of a delivery that holds the lease
            if folder.exists():
                import shutil

                shutil.rmtree(folder)
            tmp.rename(folder)
            write_json_atomic(folder.parent / SCORES_FILE, summary)
        finally:
            run.model = None
            run.train.clear()
            run.validation.clear()
    return scores, baseline.as_metrics(), folder, summary


def _record(
    job: FinalTrainingJob,
    ctx: WorkerContext,
    run_id: str,
    scores: dict[str, dict[str, float]],
    baseline: dict[str, float],
    checkpoint: Path,
    summary: dict[str, Any],
) -> None:
    from mlflow.entities import Metric, Param

    from hpoq.core.retry import retry_call
    from hpoq.core.trial_tracking import transient_errors
    from hpoq.workers.checkpoint_store import upload_checkpoint

    now = int(time.time() * 1000)
    values = {f"{split}.{k}": v for split, group in scores.items() for k, v in group.items()}
    values |= {f"test_untrained.{k}": v for k, v in baseline.items()}
    metrics = [Metric(k, v, now, 0) for k, v in sorted(values.items())]
    params = [Param(k, str(v)) for k, v in sorted(job.params.items()) if k != "epochs"]
    params += [
        Param("epochs", str(job.epochs)),
        Param("seed", str(job.seed)),
        Param("precision", job.precision.value),
        Param("train_on_validation", str(summary["trained_on"] != ["train"])),
    ]
    transient = transient_errors()

    def log_all() -> None:  # idempotent: retried on the same run
        ctx.mlflow.log_batch(run_id, metrics=metrics, params=params)
        ctx.mlflow.log_dict(run_id, summary, SCORES_FILE)

    retry_call(log_all, what="MLflow log final training", retry_on=transient)
    upload_checkpoint(ctx.content(), run_id, checkpoint)
    retry_call(
        lambda: ctx.mlflow.set_terminated(run_id, status="FINISHED"),
        what="MLflow finish final-training run",
        retry_on=transient,
    )


def _fail_run(job: FinalTrainingJob, ctx: WorkerContext, run_id: str, error: str) -> None:
    from hpoq.core.trial_tracking import fail_run

    try:
        fail_run(ctx.mlflow, run_id, error, job.experiment.tags.final_training.error)
    except Exception as exc:  # the registry still says failed, for retry-failed
        log.warning("could not mark final run %s FAILED: %s", run_id, exc)


def record_final_failure(job: FinalTrainingJob, ctx: WorkerContext, error: str) -> None:
    """A job that ran out of retries (a service down throughout): remembered as failed,
    unless a newer job was sent for its entry since."""
    field = entry_field(job.backbone, job.spec_fp, job.exec_fp)
    FinalRegistry(ctx.redis, ctx.keys).put_if_job(
        field, job.job_id, "failed", job.model_dump_json(), error=error
    )


def record_rejected_final(ctx: WorkerContext, job_id: str, error: str) -> None:
    """A job refused before it ran (a malformed payload): its entry, found by job id, is
    marked failed, so nobody waits on a job that will never run."""
    try:
        FinalRegistry(ctx.redis, ctx.keys).fail_job(job_id, error)
    except Exception as exc:  # bookkeeping never hides the rejection itself
        log.warning("could not mark the rejected final training %s failed: %s", job_id, exc)
