"""StudyStore keeps a study's storage open between jobs and sees trials other processes add,
and a storage file that was replaced is reopened rather than read from the old position."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import optuna
import pytest

from hpoq.config.hpo import CheckpointConfig
from hpoq.core.paths import OutputLayout
from hpoq.core.studies import StudyStore
from hpoq.core.variants import VariantRef

REF = VariantRef("tiny", 1, "hpo_tiny")


def make_store(root: Path, storage_path: str) -> StudyStore:
    checkpoint = CheckpointConfig.model_validate({"storage_path": storage_path})
    return StudyStore(OutputLayout(root=root, platform="local"), checkpoint)


def add_trials(root: Path, storage_path: str, values: list[float]) -> None:
    """Another process (a worker) adds finished trials to the study."""
    store = make_store(root, storage_path)
    study = optuna.load_study(
        study_name=REF.study_name, storage=store.storage_for("tiny", REF.study_name)
    )
    for value in values:
        study.add_trial(optuna.trial.create_trial(value=value, params={}, distributions={}))


@pytest.fixture(params=["{study_name}/study.journal", "{study_name}/study.db"])
def storage_path(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def create(store: StudyStore) -> optuna.Study:
    return optuna.create_study(
        study_name=REF.study_name, storage=store.storage_for("tiny", REF.study_name)
    )


def test_one_storage_serves_every_job_and_sees_other_processes_trials(
    tmp_path: Path, storage_path: str
) -> None:
    store = make_store(tmp_path, storage_path)
    create(store)
    first = store.storage_for("tiny", REF.study_name)
    context = multiprocessing.get_context("spawn")
    for round_ in range(3):
        writer = context.Process(
            target=add_trials, args=(tmp_path, storage_path, [float(round_)] * 2)
        )
        writer.start()
        writer.join(60)
        assert writer.exitcode == 0
        assert store.storage_for("tiny", REF.study_name) is first
        study = store.load(REF)
        assert study is not None
        assert len(study.get_trials(deepcopy=False)) == 2 * (round_ + 1)


def test_a_replaced_storage_file_is_opened_afresh(tmp_path: Path, storage_path: str) -> None:
    store = make_store(tmp_path, storage_path)
    old = create(store)
    for value in (1.0, 2.0, 3.0):
        old.add_trial(optuna.trial.create_trial(value=value, params={}, distributions={}))
    first = store.storage_for("tiny", REF.study_name)

    # The outputs are wiped and the same study name starts again, with one trial.
    store.storage_file("tiny", REF.study_name).unlink()
    fresh = make_store(tmp_path, storage_path)
    create(fresh).add_trial(optuna.trial.create_trial(value=9.0, params={}, distributions={}))

    assert store.storage_for("tiny", REF.study_name) is not first
    study = store.load(REF)
    assert study is not None
    assert [t.value for t in study.get_trials(deepcopy=False)] == [9.0]
