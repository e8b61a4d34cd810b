"""What a trial job asks of its services: one read of the variant's trials serves the
claim, and ending a run on a tracking server does not fetch the whole run to print a link."""

from __future__ import annotations

import io
from contextlib import redirect_stdout

import optuna
import pytest

from hpoq.core.optuna_setup import JOB_ID_ATTR, job_ids
from hpoq.core.tracking import QUIET_RUN_LINKS_ENV, make_client


def _unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """The variable unset for the test, and as it was afterwards (make_client sets it)."""
    monkeypatch.setenv(QUIET_RUN_LINKS_ENV, "placeholder")
    monkeypatch.delenv(QUIET_RUN_LINKS_ENV)


def test_job_ids_reads_finished_and_running_jobs_at_once() -> None:
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    done = study.ask()
    done.set_user_attr(JOB_ID_ATTR, "j-done")
    study.tell(done, 1.0)
    pruned = study.ask()
    pruned.set_user_attr(JOB_ID_ATTR, "j-pruned")
    study.tell(pruned, state=optuna.trial.TrialState.PRUNED)
    study.add_trial(optuna.trial.create_trial(value=2.0, params={}, distributions={}))
    running = study.ask()
    running.set_user_attr(JOB_ID_ATTR, "j-running")
    study.ask()  # RUNNING without a job id: not one of hpoq's jobs yet
    failed = study.ask()
    failed.set_user_attr(JOB_ID_ATTR, "j-failed")
    study.tell(failed, state=optuna.trial.TrialState.FAIL)

    assert job_ids(study) == (["j-done", "j-pruned", "trial#2"], ["j-running"])


def test_make_client_keeps_mlflow_from_printing_run_links(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """MLflow reads the run back from a tracking server only to print its link when the run
    ends (`_log_url`); with the variable set it neither prints nor reads."""
    from mlflow.environment_variables import MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT

    _unset(monkeypatch)
    make_client("http://127.0.0.1:1")  # no request is made until the client is used
    assert MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT.name == QUIET_RUN_LINKS_ENV
    assert MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT.get() is True


def test_a_value_a_person_set_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(QUIET_RUN_LINKS_ENV, "false")
    make_client("http://127.0.0.1:1")
    from mlflow.environment_variables import MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT

    assert MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT.get() is False


def test_set_terminated_on_a_server_reads_no_run_when_quiet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The MLflow behaviour the variable relies on: `set_terminated` on a REST store calls
    `get_run` only to print the link. Fails when MLflow changes it."""
    from mlflow.store.tracking.rest_store import RestStore

    _unset(monkeypatch)
    client = make_client("http://127.0.0.1:1")
    store = client._tracking_client.store
    assert isinstance(store, RestStore)
    calls: list[str] = []
    monkeypatch.setattr(store, "get_run", lambda run_id: calls.append(f"get_run {run_id}"))
    monkeypatch.setattr(store, "update_run_info", lambda run_id, **_: calls.append("update"))
    out = io.StringIO()
    with redirect_stdout(out):
        client.set_terminated("r1", status="FINISHED")
    assert calls == ["update"] and out.getvalue() == ""
