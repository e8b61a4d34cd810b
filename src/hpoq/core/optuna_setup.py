"""Creating and opening variant studies with the configured sampler and pruner."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hpoq.config.hpo import HpoConfig, PrunerConfig, SamplerConfig
from hpoq.core.studies import BACKBONE_ATTR, VARIANT_ATTR, StudyStore
from hpoq.core.variants import VariantRef

if TYPE_CHECKING:
    import optuna

N_TRIALS_ATTR = "hpoq.n_trials"
JOB_ID_ATTR = "hpoq.job_id"
RUN_ID_ATTR = "hpoq.mlflow_run_id"
FINISHED_STATES = ("COMPLETE", "PRUNED")  # these count toward n_trials; FAIL does not


def build_sampler(config: SamplerConfig, variant: int) -> optuna.samplers.BaseSampler:
    """The configured sampler. With a seed, every trial draws from its own seed of
    (seed, variant, trial number) (`hpoq.core.trial_seeds`): concurrent asks differ, a new
    variant explores new points, a rerun of a trial number with the same history repeats
    its point. Without one, each process seeds from the operating system.

    TPE runs with `constant_liar=True` (Optuna 5's default, set here so the intent
    survives a change of default): a RUNNING trial counts as a bad result, so workers
    sampling while others train move away from the points already in flight; Optuna's
    TPESampler documentation recommends it for distributed optimisation."""
    import optuna

    def make(seed: int | None) -> optuna.samplers.BaseSampler:
        if config.type == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)

    if config.seed is None:
        return make(None)
    from hpoq.core.seeded_sampler import PerTrialSeedSampler

    return PerTrialSeedSampler(make, config.seed, variant)


def build_pruner(config: PrunerConfig) -> optuna.pruners.BasePruner:
    import optuna

    if config.type == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=config.n_startup_trials, n_warmup_steps=config.n_warmup_steps
    )


def create_variant_study(store: StudyStore, ref: VariantRef, hpo: HpoConfig) -> optuna.Study:
    """Create (or open, when it exists) the study of a variant, recording what it belongs to."""
    import optuna

    study = optuna.create_study(
        study_name=ref.study_name,
        storage=store.storage_for(ref.backbone, ref.study_name),
        direction=hpo.objective.direction.value,
        load_if_exists=True,
    )
    if study.user_attrs.get(BACKBONE_ATTR) != ref.backbone:
        study.set_user_attr(BACKBONE_ATTR, ref.backbone)
        study.set_user_attr(VARIANT_ATTR, ref.variant)
        study.set_user_attr(N_TRIALS_ATTR, hpo.n_trials)
    return study


def open_variant_study(store: StudyStore, ref: VariantRef, hpo: HpoConfig) -> optuna.Study:
    import optuna

    return optuna.load_study(
        study_name=ref.study_name,
        storage=store.storage_for(ref.backbone, ref.study_name),
        sampler=build_sampler(hpo.sampler, ref.variant),
        pruner=build_pruner(hpo.pruner),
    )


def count_finished(study: optuna.Study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def job_ids(study: optuna.Study) -> tuple[list[str], list[str]]:
    """Job ids of the finished trials (a trial without one, added by hand, gets its number)
    and of the RUNNING trials that have one, from one read of the study's trials."""
    finished: list[str] = []
    running: list[str] = []
    for t in study.get_trials(deepcopy=False):
        if t.state.name in FINISHED_STATES:
            finished.append(str(t.user_attrs.get(JOB_ID_ATTR, f"trial#{t.number}")))
        elif t.state.name == "RUNNING" and JOB_ID_ATTR in t.user_attrs:
            running.append(str(t.user_attrs[JOB_ID_ATTR]))
    return finished, running


def fail_trial(storage: optuna.storages.BaseStorage, study_name: str, number: int) -> bool:
    """Mark a RUNNING trial FAIL; False when it had finished already (whoever finished it
    first keeps its state). The storage decides atomically (journal order, row lock)."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    study_id = storage.get_study_id_from_name(study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
    try:
        return bool(storage.set_trial_state_values(trial_id, TrialState.FAIL))
    except UpdateFinishedTrialError:
        return False
