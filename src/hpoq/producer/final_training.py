"""`hpoq train-final` as an importable function: the best trial of each backbone trained
once more, as final-training variants `final_{backbone}[_vN]`, one job per backbone and
seed on queue `train`.

Per backbone and seed, under the backbone's plan lock (Redis), the run-mode table
(core/run_plan.py, the one shared with HPO variants) decides on the variant whose spec_fp
and exec_fp match: none yet -> a new variant; a finished one -> reused (no job); an
unfinished one -> continued (its job sent again under its variant) unless it is in flight
(queued, or running on a worker whose heartbeat is alive);
force_new -> the next variant. New numbers come from the variant counter
(coordination/variant_counter.py) keyed by `final_{backbone}`, seeded from MLflow and disk.

Everything is validated, the best trials retrieved and the services reached before the
first number is allocated, so bad input leaves nothing behind.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from hpoq.config.base import RunMode
from hpoq.config.experiment import Experiment
from hpoq.config.final_training import FinalTrainingConfig
from hpoq.config.run_mode import get_final_training_run_mode
from hpoq.core.coordination.final_registry import FinalRegistry, entry_field
from hpoq.core.coordination.variant_counter import VariantCounter
from hpoq.core.final_runs import FinalRun, final_runs, highest_known_final_variant
from hpoq.core.final_trainings import job_of, planned_finals
from hpoq.core.fingerprints import final_exec_fingerprint, final_spec_fingerprint
from hpoq.core.job_inputs import content_store, prepare_inputs, publish_inputs
from hpoq.core.jobs import (
    QUEUE_TRAIN,
    TASK_RUN_FINAL_TRAINING,
    FinalTrainingJob,
    ParamValue,
    new_job_id,
)
from hpoq.core.retrieval import BestTrial, retrieve_best_trials
from hpoq.core.run_plan import Action, decide
from hpoq.core.variants import VariantRef, final_base_name, variant_study_name
from hpoq.errors import InputError, NothingToDo, ServiceError
from hpoq.producer.services import Services
from hpoq.producer.submit import select_backbones

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient
    from redis.lock import Lock

log = logging.getLogger(__name__)
PLAN_LOCK_TIMEOUT_S = 60
DEFAULT_EPOCHS = 3  # the built-in trainer's, for a search space without `epochs`
IN_FLIGHT_ACTION = "in_flight"


@dataclass(frozen=True)
class FinalPlanItem:
    backbone: str
    name: str
    variant: int
    seed: int
    action: str  # created, continued, reused, in_flight
    spec_fp: str
    exec_fp: str
    source_study_name: str
    source_trial_number: int
    job_id: str | None = None
    run_id: str | None = None  # the finished run that is reused

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FinalPlan:
    items: list[FinalPlanItem] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # backbones without a best trial
    warnings: list[str] = field(default_factory=list)

    @property
    def job_ids(self) -> list[str]:
        return [i.job_id for i in self.items if i.job_id and i.action != IN_FLIGHT_ACTION]

    def to_json(self) -> dict[str, Any]:
        return {
            "final_trainings": [i.to_json() for i in self.items],
            "missing": self.missing,
            "warnings": self.warnings,
        }


def final_config(experiment: Experiment) -> FinalTrainingConfig:
    if experiment.final_training is None:
        source = experiment.source or experiment.name
        raise InputError(f"{source}: final_training: the experiment names no final-training file")
    return experiment.final_training


def execution_environment(experiment: Experiment, final: FinalTrainingConfig) -> dict[str, str]:
    """What exec_fp hashes besides the seed: precision, library versions, device kind (the
    trainer's configured device: `auto` trains on a GPU where the worker has one)."""
    precision = (final.precision or experiment.hpo.trainer.precision).value
    return {
        "precision": precision,
        "torch_version": _installed("torch"),
        "transformers_version": _installed("transformers"),
        "device": experiment.hpo.trainer.device,
    }


def _installed(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "absent"


def train_final(
    experiment: Experiment,
    services: Services,
    *,
    mode_override: str | RunMode | None = None,
    backbones: Sequence[str] | None = None,
) -> FinalPlan:
    """Plan and enqueue the final trainings; NothingToDo when no backbone has a best trial."""
    final = final_config(experiment)
    mode = get_final_training_run_mode(final, experiment.hpo, override=mode_override)
    names = select_backbones(experiment, backbones)
    if final.backbones is not None:
        names = [n for n in names if n in final.backbones]
    if not names:
        raise InputError(
            "--backbone: none of the backbones asked for is in the final-training file"
        )
    prepared = prepare_inputs(experiment)
    client = services.mlflow()
    result = retrieve_best_trials(
        experiment, services.runtime, scope="overall", backbones=names, client=client
    )
    plan = FinalPlan(missing=list(result.missing), warnings=list(result.warnings))
    if not result.best:
        raise NothingToDo(
            f"nothing to train: no backbone has a completed trial yet "
            f"({', '.join(names)}); run the sweep first (hpoq submit or hpoq run)"
        )
    sources = {
        best.backbone: (best, _trial_params(services, experiment, best)) for best in result.best
    }
    try:
        services.redis.ping()
    except Exception as exc:
        raise ServiceError(f"Redis is unreachable: {exc}") from None
    job_experiment = publish_inputs(prepared, content_store(services.runtime, client))
    planner = _Planner(job_experiment, services, client, mode)
    for backbone, (best, params) in sorted(sources.items()):
        if params is None:
            plan.warnings.append(
                f"{backbone}: the hyperparameters of trial {best.trial_number} of "
                f"{best.study_name} are not in its Optuna study; not trained"
            )
            continue
        plan.items += planner.plan_backbone(best, params)
    return plan


def _trial_params(
    services: Services, experiment: Experiment, best: BestTrial
) -> dict[str, ParamValue] | None:
    """The chosen trial's hyperparameters, from its Optuna study."""
    store = services.runtime.study_store(experiment.hpo.checkpoint)
    study = store.load(VariantRef(best.backbone, best.variant, best.study_name))
    if study is None:
        return None
    for trial in study.get_trials(deepcopy=False):
        if trial.number == best.trial_number:
            return dict(trial.params)
    return None


class _Planner:
    def __init__(
        self, experiment: Experiment, services: Services, client: MlflowClient, mode: RunMode
    ) -> None:
        self.experiment = experiment
        self.final = final_config(experiment)
        self.services = services
        self.client = client
        self.mode = mode
        self.registry = FinalRegistry(services.redis, services.keys)
        self.counter = VariantCounter(services.redis, services.keys)
        self.environment = execution_environment(experiment, self.final)

    def plan_backbone(self, best: BestTrial, params: dict[str, ParamValue]) -> list[FinalPlanItem]:
        backbone = self.experiment.hpo.backbone(best.backbone)
        spec_fp = final_spec_fingerprint(backbone, params, self.experiment.data, self.final)
        epochs = self.final.epochs or int(params.get("epochs", DEFAULT_EPOCHS))
        items = []
        with plan_lock(self.services, best.backbone):
            runs = final_runs(self.client, self.experiment, best.backbone)
            # Once per backbone: the plan lock's time is not spent asking again per seed.
            floor = highest_known_final_variant(self.services.runtime.layout, best.backbone, runs)
            for seed in self.final.seeds:
                exec_fp = final_exec_fingerprint(seed=seed, **self.environment)
                job = self._decide(best, params, spec_fp, exec_fp, seed, epochs, runs, floor)
                items.append(job)
        return items

    def _decide(
        self,
        best: BestTrial,
        params: dict[str, ParamValue],
        spec_fp: str,
        exec_fp: str,
        seed: int,
        epochs: int,
        runs: list[FinalRun],
        floor: int,
    ) -> FinalPlanItem:
        key = entry_field(best.backbone, spec_fp, exec_fp)
        entry = self.registry.get(key)
        queued = job_of(entry.job) if entry is not None else None
        matching = [r for r in runs if r.spec_fp == spec_fp and r.exec_fp == exec_fp]
        latest = max((r.variant for r in matching), default=0)
        if queued is not None:
            latest = max(latest, queued.variant)
        finished = [r for r in matching if r.variant == latest and r.status == "FINISHED"]
        action = decide(
            self.mode, has_variant=latest > 0, complete=bool(finished), auto_resume=True
        )

        def item(name: str, variant: int, action: str, **more: str | None) -> FinalPlanItem:
            return FinalPlanItem(
                backbone=best.backbone,
                name=name,
                variant=variant,
                seed=seed,
                action=action,
                spec_fp=spec_fp,
                exec_fp=exec_fp,
                source_study_name=best.study_name,
                source_trial_number=best.trial_number,
                job_id=more.get("job_id"),
                run_id=more.get("run_id"),
            )

        if action is Action.REUSED:
            name = variant_study_name(final_base_name(best.backbone), latest)
            return item(name, latest, action.value, run_id=finished[0].run_id)
        if action is Action.CONTINUED:
            in_flight = entry is not None and self.registry.in_flight(entry)
            if in_flight and queued is not None and queued.variant == latest:
                return item(queued.study_name, latest, IN_FLIGHT_ACTION, job_id=queued.job_id)
            variant = latest
        else:
            variant = self.counter.allocate(best.backbone, final_base_name(best.backbone), floor)
        job = self._job(best, params, spec_fp, exec_fp, seed, epochs, variant)
        self._send(key, job)
        return item(job.study_name, variant, action.value, job_id=job.job_id)

    def _job(
        self,
        best: BestTrial,
        params: dict[str, ParamValue],
        spec_fp: str,
        exec_fp: str,
        seed: int,
        epochs: int,
        variant: int,
    ) -> FinalTrainingJob:
        return FinalTrainingJob(
            job_id=new_job_id("final"),
            experiment=self.experiment,
            backbone=best.backbone,
            study_name=variant_study_name(final_base_name(best.backbone), variant),
            variant=variant,
            source_study_name=best.study_name,
            source_variant=best.variant,
            source_trial_number=best.trial_number,
            source_trial_id=best.trial_id,
            source_run_id=best.run_id,
            params=params,
            seed=seed,
            epochs=epochs,
            precision=self.environment["precision"],
            spec_fp=spec_fp,
            exec_fp=exec_fp,
        )

    def _send(self, key: str, job: FinalTrainingJob) -> None:
        send_final_job(self.services, self.registry, key, job)


def plan_lock(services: Services, backbone: str) -> Lock:
    """The backbone's plan lock: one producer at a time decides its final trainings."""
    lock: Lock = services.redis.lock(
        services.keys.final_plan_lock(backbone),
        timeout=PLAN_LOCK_TIMEOUT_S,
        blocking_timeout=PLAN_LOCK_TIMEOUT_S,
    )
    return lock


def send_final_job(
    services: Services, registry: FinalRegistry, key: str, job: FinalTrainingJob
) -> None:
    """Record the job as queued, then send it; a send that fails leaves it `failed`."""
    registry.put(key, "queued", job.model_dump_json())
    try:
        services.celery.send_task(
            TASK_RUN_FINAL_TRAINING, args=[job.to_payload()], queue=QUEUE_TRAIN, task_id=job.job_id
        )
    except Exception as exc:
        registry.put(key, "failed", job.model_dump_json(), error=f"not enqueued: {exc}")
        raise ServiceError(
            f"could not enqueue the final training {job.study_name}: {exc}"
        ) from None
    log.info("enqueued final training %s (seed %d)", job.study_name, job.seed)


def failed_final_jobs(
    services: Services, experiment: Experiment | None = None
) -> list[tuple[FinalTrainingJob, str | None]]:
    """Final trainings (of `experiment`) whose latest attempt failed, with their errors."""
    name = experiment.name if experiment is not None else None
    return [
        (p.job, p.error)
        for p in planned_finals(services.redis, services.keys, name)
        if p.state == "failed"
    ]


def retry_failed_final(services: Services, experiment: Experiment | None = None) -> FinalPlan:
    """Send again every final training whose latest attempt failed (same variant, new job
    id). Each is looked at again under its backbone's plan lock: one sent or finished since
    (a concurrent plan or retry, a late worker) is left alone."""
    registry = FinalRegistry(services.redis, services.keys)
    plan = FinalPlan()
    by_backbone: dict[str, list[FinalTrainingJob]] = {}
    for job, _ in failed_final_jobs(services, experiment):
        by_backbone.setdefault(job.backbone, []).append(job)
    if not by_backbone:
        return plan
    client = services.mlflow()
    for backbone, jobs in sorted(by_backbone.items()):
        with plan_lock(services, backbone):
            finished: set[str] = set()
            for experiment_of in {j.experiment.name: j.experiment for j in jobs}.values():
                finished |= {
                    r.name for r in final_runs(client, experiment_of, backbone, status="FINISHED")
                }
            for job in jobs:
                key = entry_field(job.backbone, job.spec_fp, job.exec_fp)
                entry = registry.get(key)
                current = job_of(entry.job) if entry is not None else None
                if entry is None or entry.state != "failed" or current is None:
                    continue
                if current.job_id != job.job_id:
                    continue  # sent again, or its worker's word changed, since it was listed
                if job.study_name in finished:  # trained by another delivery meanwhile
                    registry.put(key, "finished", entry.job)
                    continue
                again = job.model_copy(update={"job_id": new_job_id("final")})
                send_final_job(services, registry, key, again)
                plan.items.append(_retried(job, again.job_id))
    return plan


def _retried(job: FinalTrainingJob, job_id: str) -> FinalPlanItem:
    return FinalPlanItem(
        backbone=job.backbone,
        name=job.study_name,
        variant=job.variant,
        seed=job.seed,
        action="retried",
        spec_fp=job.spec_fp,
        exec_fp=job.exec_fp,
        source_study_name=job.source_study_name,
        source_trial_number=job.source_trial_number,
        job_id=job_id,
    )
