"""Planning and enqueueing a sweep: the run-mode table per backbone, variants, trial jobs.

Everything is validated and every service is reached before the first allocation, so bad
input leaves nothing behind: no allocated number, no study, no job. The files the jobs
need (data, local model directories) are hashed before Redis is touched and published to
the MLflow artifact store before the first allocation; jobs carry their content
addresses, never a path of this host.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from hpoq.config.base import RunMode
from hpoq.config.experiment import Experiment
from hpoq.config.run_mode import get_run_mode
from hpoq.core.content_store import ContentStore
from hpoq.core.coordination.active_variants import ActiveVariants
from hpoq.core.coordination.budget import TrialBudget
from hpoq.core.coordination.keys import RedisKeys
from hpoq.core.coordination.variant_counter import VariantCounter
from hpoq.core.fingerprints import study_key_hash
from hpoq.core.job_inputs import (
    PreparedInputs,
    content_store,
    prepare_inputs,
    publish_inputs,
)
from hpoq.core.jobs import QUEUE_HPO, TASK_RUN_TRIAL, TrialJob, new_job_id
from hpoq.core.optuna_setup import count_finished, create_variant_study
from hpoq.core.run_plan import Action, decide
from hpoq.core.runtime import Runtime
from hpoq.core.studies import StudyStore
from hpoq.core.variant_discovery import highest_known_variant
from hpoq.core.variants import VariantRef, base_study_name, variant_study_name
from hpoq.core.warm_start import enqueue_previous_best
from hpoq.errors import InputError, ServiceError

if TYPE_CHECKING:
    import redis
    from celery import Celery
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)
ENQUEUE_LOCK_TIMEOUT_S = 60


@dataclass(frozen=True)
class SubmitResult:
    backbone: str
    study_name: str
    variant: int
    action: str
    trials_enqueued: int
    job_ids: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def select_backbones(experiment: Experiment, names: Sequence[str] | None) -> list[str]:
    configured = [b.name for b in experiment.hpo.backbones]
    if not names:
        return configured
    unknown = [n for n in names if n not in configured]
    if unknown:
        raise InputError(
            f"--backbone: unknown {', '.join(map(repr, unknown))}; configured: "
            f"{', '.join(configured)}"
        )
    return list(dict.fromkeys(names))


def variant_targets(
    experiment: Experiment, store: StudyStore, names: Sequence[str], number: int, mode: RunMode
) -> dict[str, VariantRef]:
    """Variant `number` of each backbone in `names`; InputError (nothing written) when one
    has no such variant or the run mode asks for a new variant."""
    if mode is RunMode.FORCE_NEW:
        raise InputError("--variant tops up an existing variant; it cannot go with force_new")
    targets = {}
    for name in names:
        base = base_study_name(experiment.hpo.checkpoint.study_name, name)
        refs = store.list_variants(name, base)
        found = [ref for ref in refs if ref.variant == number]
        if not found:
            have = ", ".join(str(r.variant) for r in refs) or "none"
            raise InputError(
                f"--variant {number}: backbone {name!r} has no such variant (it has: {have})"
            )
        targets[name] = found[0]
    return targets


class Submitter:
    """Submits an experiment's HPO variants. One instance per command."""

    def __init__(
        self,
        experiment: Experiment,
        runtime: Runtime,
        redis_client: redis.Redis,
        keys: RedisKeys,
        celery: Celery,
        mlflow: MlflowClient | None = None,
    ) -> None:
        self.experiment = experiment
        self.runtime = runtime
        self.redis = redis_client
        self.keys = keys
        self.celery = celery
        self.mlflow = mlflow
        self.store: StudyStore = runtime.study_store(experiment.hpo.checkpoint)
        self.counter = VariantCounter(redis_client, keys)
        self.budget = TrialBudget(redis_client, keys)
        # What the jobs carry: the experiment with content addresses (set by submit()).
        self.job_experiment: Experiment | None = None
        self.variants = ActiveVariants(redis_client, keys)

    def submit(
        self,
        *,
        mode_override: str | RunMode | None = None,
        backbones: Sequence[str] | None = None,
        inputs: PreparedInputs | None = None,
        variant: int | None = None,
    ) -> list[SubmitResult]:
        """Submit per the run mode; with `variant`, top up that variant of each backbone
        instead (resume semantics: continue it if incomplete, else use it as is).
        `inputs`: the experiment's files hashed already (prepare_inputs), else here."""
        mode = get_run_mode(self.experiment.hpo, override=mode_override)
        names = select_backbones(self.experiment, backbones)
        bases = {
            name: base_study_name(self.experiment.hpo.checkpoint.study_name, name) for name in names
        }
        # A file that cannot be read fails here, before anything is written.
        prepared = inputs if inputs is not None else prepare_inputs(self.experiment)
        targets: dict[str, VariantRef] = {}
        if variant is not None:
            targets = variant_targets(self.experiment, self.store, names, variant, mode)
        try:
            self.redis.ping()
        except Exception as exc:
            raise ServiceError(f"Redis is unreachable: {exc}") from None
        self.job_experiment = publish_inputs(prepared, self._content_store())
        return [self._submit_backbone(name, bases[name], mode, targets.get(name)) for name in names]

    def _content_store(self) -> ContentStore:
        from hpoq.core.tracking import make_client

        client = self.mlflow or make_client(self.runtime.mlflow_uri())
        return content_store(self.runtime, client)

    def _submit_backbone(
        self, backbone: str, base: str, mode: RunMode, target: VariantRef | None = None
    ) -> SubmitResult:
        hpo = self.experiment.hpo
        if target is not None:
            latest: VariantRef | None = target
            mode = RunMode.RESUME_IF_INCOMPLETE
        else:
            refs = self.store.list_variants(backbone, base)
            latest = refs[-1] if refs else None
        complete = False
        if latest is not None:
            study = self.store.load(latest)
            complete = study is not None and count_finished(study) >= hpo.n_trials
        action = decide(
            mode,
            has_variant=latest is not None,
            complete=complete,
            auto_resume=hpo.checkpoint.auto_resume,
        )
        if action is Action.CREATED:
            ref = self._new_variant(backbone, base, force=mode is RunMode.FORCE_NEW)
        else:
            assert latest is not None
            ref = latest
        if action is Action.REUSED:
            return SubmitResult(backbone, ref.study_name, ref.variant, action.value, 0)
        job_ids = self._enqueue_missing(ref)
        return SubmitResult(
            backbone, ref.study_name, ref.variant, action.value, len(job_ids), job_ids
        )

    def _new_variant(self, backbone: str, base: str, *, force: bool) -> VariantRef:
        hpo = self.experiment.hpo
        if not force:
            # First variant of a backbone: creating it is idempotent, no number to allocate.
            ref = VariantRef(backbone, 1, base)
            create_variant_study(self.store, ref, hpo)
            return ref
        floor = highest_known_variant(
            self.store,
            backbone,
            base,
            mlflow=self.mlflow,
            experiment_name=self.experiment.hpo_experiment_name,
            tags=self.experiment.tags,
        )
        number = self.counter.allocate(backbone, base, floor)
        ref = VariantRef(backbone, number, variant_study_name(base, number))
        study = create_variant_study(self.store, ref, hpo)
        log.info("allocated variant %d of %s: %s", number, backbone, ref.study_name)
        if hpo.warm_start == "previous_best":
            # Before its jobs are enqueued, so that the first ask pops it.
            enqueue_previous_best(self.store, hpo, study, ref, base)
        return ref

    def _enqueue_missing(self, ref: VariantRef) -> list[str]:
        """Enqueue one job per trial the variant still lacks, counting jobs already queued."""
        hpo = self.experiment.hpo
        study_key = study_key_hash(ref.backbone, ref.study_name)
        lock = self.redis.lock(
            self.keys.enqueue_lock(study_key),
            timeout=ENQUEUE_LOCK_TIMEOUT_S,
            blocking_timeout=ENQUEUE_LOCK_TIMEOUT_S,
        )
        with lock:
            study = self.store.load(ref)
            optuna_finished = count_finished(study) if study is not None else 0
            status = self.budget.status(study_key, lost_after_s=hpo.stale_trial_grace_seconds)
            finished = max(status.finished, optuna_finished)
            missing = max(0, hpo.n_trials - finished - status.pending)
            jobs = [self._job(ref) for _ in range(missing)]
            job_ids = [job.job_id for job in jobs]
            # The reaper watches the variant from now on (a failed or lost trial is replaced
            # from this job), and the jobs are pending before they are sent.
            template = jobs[0] if jobs else self._job(ref)
            self.variants.register(study_key, template.model_dump_json(), job_ids)
            sent: list[str] = []
            try:
                for job in jobs:
                    self.celery.send_task(
                        TASK_RUN_TRIAL,
                        args=[job.to_payload()],
                        queue=QUEUE_HPO,
                        task_id=job.job_id,
                    )
                    sent.append(job.job_id)
            except Exception as exc:
                self.budget.remove_pending(study_key, job_ids[len(sent) :])
                raise ServiceError(
                    f"enqueued {len(sent)} of {len(jobs)} trial jobs for {ref.study_name}: {exc}"
                ) from None
        return job_ids

    def _job(self, ref: VariantRef) -> TrialJob:
        assert self.job_experiment is not None, "submit() publishes the inputs first"
        return TrialJob(
            job_id=new_job_id("trial"),
            experiment=self.job_experiment,
            backbone=ref.backbone,
            study_name=ref.study_name,
            variant=ref.variant,
        )
