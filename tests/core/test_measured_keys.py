"""Which benchmark keys MLflow holds a measurement for: the table query of database stores
and the search API of tracking servers give the same answer, on SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from hpoq.config.tags import BENCHMARK_KEY_TAG
from hpoq.core import measured_keys
from hpoq.core.benchmark_key import key_suffix_of
from hpoq.core.measured_keys import CHUNK, finished_keys

EXPERIMENT = "bench-exp"
SUFFIX = ":d0d0d0d0:b1b1b1b1"
OTHER_SUFFIX = ":d0d0d0d0:c2c2c2c2"


def key(n: int, suffix: str = SUFFIX) -> str:
    return f"distilbert:hpo_distilbert:run{n}:trial{n}{suffix}"


@pytest.fixture(scope="module")
def empty_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def client(
    request: pytest.FixtureRequest, tmp_path: Path, empty_db: Path
) -> Iterator[MlflowClient]:
    if request.param == "sqlite":
        db = tmp_path / "mlflow.db"
        shutil.copy(empty_db, db)
        uri = f"sqlite:///{db}"
    else:
        uri = request.getfixturevalue("postgres_url")
    yield MlflowClient(tracking_uri=uri)
    measured_keys.dispose_engines()


def log(
    client: MlflowClient,
    experiment_id: str,
    benchmark_key: str,
    *,
    metrics: bool = True,
    status: str = "FINISHED",
) -> str:
    run = client.create_run(experiment_id, tags={BENCHMARK_KEY_TAG: benchmark_key})
    run_id = str(run.info.run_id)
    if metrics:
        client.log_batch(run_id, metrics=[Metric("fp32_bs1_latency_p50_ms", 1.5, 0, 0)])
    client.set_terminated(run_id, status=status)
    return run_id


def both_paths(client: MlflowClient, keys: list[str], name: str = EXPERIMENT) -> dict[str, str]:
    """The table query's answer, checked equal to the search API's."""
    direct = finished_keys(client, name, keys)
    experiment = client.get_experiment_by_name(name)
    searched = (
        {}
        if experiment is None
        else measured_keys._search_api(client, experiment.experiment_id, sorted(set(keys)))
    )
    assert direct == searched
    return direct


def test_only_finished_active_runs_with_metrics_of_the_asked_keys_count(
    client: MlflowClient,
) -> None:
    exp = client.create_experiment(EXPERIMENT)
    other_exp = client.create_experiment("other-exp")
    measured = log(client, exp, key(1))
    log(client, exp, key(2), metrics=False)  # tagged, finished, but holds no result
    log(client, exp, key(3), status="FAILED")
    log(client, exp, key(4), metrics=True, status="KILLED")
    deleted = log(client, exp, key(5))
    client.delete_run(deleted)
    log(client, other_exp, key(6))  # another experiment
    log(client, exp, key(7, OTHER_SUFFIX))  # another benchmark config: asked for below
    log(client, exp, key(8))  # measured but not asked for
    asked = [key(n) for n in range(1, 7)] + [key(7, OTHER_SUFFIX), key(99)]

    found = both_paths(client, asked)

    assert found == {key(1): measured, key(7, OTHER_SUFFIX): found[key(7, OTHER_SUFFIX)]}


def test_more_keys_than_one_chunk_are_all_answered(client: MlflowClient) -> None:
    exp = client.create_experiment(EXPERIMENT)
    wanted = [key(n) for n in range(CHUNK + 40)]
    # Measured: the first and last of each chunk and a few in between.
    measured = {wanted[i] for i in (0, 1, CHUNK - 1, CHUNK, CHUNK + 39)}
    for k in sorted(measured):
        log(client, exp, k)

    assert set(both_paths(client, wanted)) == measured


def test_a_key_measured_twice_gives_one_of_its_runs(client: MlflowClient) -> None:
    exp = client.create_experiment(EXPERIMENT)
    runs = {log(client, exp, key(1)), log(client, exp, key(1))}

    found = both_paths(client, [key(1)])

    assert found == {key(1): min(runs)}  # the same one every time, whichever path


def test_no_keys_or_no_experiment_is_an_empty_answer(client: MlflowClient) -> None:
    assert finished_keys(client, "never-created", [key(1)]) == {}
    client.create_experiment(EXPERIMENT)
    assert finished_keys(client, EXPERIMENT, []) == {}


def test_a_failing_table_query_falls_back_to_the_search_api(
    client: MlflowClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    exp = client.create_experiment(EXPERIMENT)
    run_id = log(client, exp, key(1))

    def schema_moved(*_: object) -> dict[str, str]:
        raise RuntimeError("no such column: tags.value")

    monkeypatch.setattr(measured_keys, "_query_tables", schema_moved)

    assert finished_keys(client, EXPERIMENT, [key(1), key(2)]) == {key(1): run_id}
    assert "using the search API" in caplog.text


def test_a_tracking_server_uri_uses_the_search_api(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    class Experiment:
        experiment_id = "7"

    class Server:
        tracking_uri = "https://mlflow.example.com"

        def get_experiment_by_name(self, name: str) -> Experiment:
            return Experiment()

    def search(client: object, experiment_id: str, keys: list[str]) -> dict[str, str]:
        asked.extend(keys)
        return {}

    def tables(*_: object) -> dict[str, str]:
        raise AssertionError("a tracking server has no tables to query")

    monkeypatch.setattr(measured_keys, "_search_api", search)
    monkeypatch.setattr(measured_keys, "_query_tables", tables)

    finished_keys(Server(), EXPERIMENT, [key(2), key(1), key(1)])  # type: ignore[arg-type]

    assert asked == [key(1), key(2)]


@pytest.mark.parametrize(
    ("benchmark_key", "suffix"),
    [(key(1), SUFFIX), ("a:b:c", ":b:c"), ("no-colons", "no-colons")],
)
def test_key_suffix(benchmark_key: str, suffix: str) -> None:
    assert key_suffix_of(benchmark_key) == suffix
