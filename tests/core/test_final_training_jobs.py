"""Final-training jobs and fingerprints: spec_fp names what defines the model, exec_fp how
it is executed; a job whose names or spec_fp do not fit its experiment is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hpoq.config.final_training import FinalTrainingConfig
from hpoq.core.fingerprints import (
    final_exec_fingerprint,
    final_spec_fingerprint,
    trial_key_hash,
)
from hpoq.core.jobs import BenchmarkJob, FinalTrainingJob, parse_job
from hpoq.errors import InputError
from tests.factories import benchmark_job, make_experiment, unpublished_job_experiment

PARAMS = {"learning_rate": 0.001, "batch_size": 8, "epochs": 2}
ENV = {
    "precision": "fp32",
    "torch_version": "2.13.0",
    "transformers_version": "5",
    "device": "auto",
}


def final_payload(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    experiment = unpublished_job_experiment(make_experiment(tmp_path, final_training={}))
    assert experiment.final_training is not None
    backbone = experiment.hpo.backbone("tiny")
    job = FinalTrainingJob(
        job_id="final-1",
        experiment=experiment,
        backbone="tiny",
        study_name="final_tiny_v3",
        variant=3,
        source_study_name="hpo_tiny_v2",
        source_variant=2,
        source_trial_number=1,
        source_trial_id=trial_key_hash("tiny", "hpo_tiny_v2", 1),
        source_run_id=None,
        params=PARAMS,
        seed=0,
        epochs=2,
        precision="fp32",
        spec_fp=final_spec_fingerprint(
            backbone, PARAMS, experiment.data, experiment.final_training
        ),
        exec_fp=final_exec_fingerprint(seed=0, **ENV),
    )
    return job.to_payload() | changes


def test_a_genuine_final_job_round_trips(tmp_path: Path) -> None:
    good = final_payload(tmp_path)
    assert parse_job(good, FinalTrainingJob).to_payload() == good


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"study_name": "final_tiny_v2"}, "study_name"),
        ({"study_name": "hpo_tiny_v3"}, "study_name"),
        ({"source_study_name": "hpo_other_v2"}, "source_study_name"),
        ({"params": {**PARAMS, "learning_rate": 0.5}}, "spec_fp"),
        ({"spec_fp": "0" * 16}, "spec_fp"),
        ({"exec_fp": "../../etc"}, "exec_fp"),
        ({"epochs": 0}, "epochs"),
        ({"precision": "fp8"}, "precision"),
        ({"backbone": "other"}, "backbone"),
    ],
)
def test_a_forged_final_job_is_refused(tmp_path: Path, change: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError, match=field):
        parse_job(final_payload(tmp_path, **change), FinalTrainingJob)


def test_a_final_job_needs_an_experiment_with_a_final_training_config(tmp_path: Path) -> None:
    payload = final_payload(tmp_path)
    payload["experiment"]["final_training"] = None
    with pytest.raises(InputError, match="no final_training config"):
        parse_job(payload, FinalTrainingJob)


def test_a_benchmark_job_may_name_a_final_model(tmp_path: Path) -> None:
    experiment = make_experiment(tmp_path, final_training={})
    job = benchmark_job(experiment, backbone="tiny", study_name="final_tiny_v2", variant=2)
    assert parse_job(job.to_payload(), BenchmarkJob).study_name == "final_tiny_v2"
    with pytest.raises(ValueError, match="study_name"):
        benchmark_job(experiment, backbone="tiny", study_name="final_tiny_v2", variant=3)


def test_spec_fp_follows_what_defines_the_model_and_nothing_else(tmp_path: Path) -> None:
    experiment = make_experiment(tmp_path, final_training={})
    backbone = experiment.hpo.backbone("tiny")
    base = FinalTrainingConfig()

    def spec(params: dict[str, Any] = PARAMS, final: FinalTrainingConfig = base) -> str:
        return final_spec_fingerprint(backbone, params, experiment.data, final)

    assert spec() == spec(dict(reversed(PARAMS.items())))  # canonical: order does not count
    assert spec() != spec({**PARAMS, "learning_rate": 0.002})  # another best trial
    assert spec() != spec(final=FinalTrainingConfig(epochs=5))
    assert spec() != spec(final=FinalTrainingConfig(train_on_validation=False))
    # Seeds, precision, backbones and the run mode say how or which, not what.
    same = FinalTrainingConfig(seeds=[4, 5], precision="bf16", backbones=["tiny"])
    assert spec() == spec(final=same)
    other_data = experiment.data.model_copy(update={"version": "2"})
    assert spec() != final_spec_fingerprint(backbone, PARAMS, other_data, base)


def test_exec_fp_follows_seed_precision_versions_and_device() -> None:
    first = final_exec_fingerprint(seed=0, **ENV)
    assert first == final_exec_fingerprint(seed=0, **ENV)
    assert (
        len(
            {
                first,
                final_exec_fingerprint(seed=1, **ENV),
                final_exec_fingerprint(seed=0, **(ENV | {"precision": "bf16"})),
                final_exec_fingerprint(seed=0, **(ENV | {"torch_version": "2.14.0"})),
                final_exec_fingerprint(seed=0, **(ENV | {"transformers_version": "6"})),
                final_exec_fingerprint(seed=0, **(ENV | {"device": "cuda"})),
            }
        )
        == 6
    )
