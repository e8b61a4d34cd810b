"""MLflow search helpers on a real SQLite tracking store: quoting, paging, best run, ties."""

from __future__ import annotations

import random
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from mlflow.entities import Metric, Run
from mlflow.tracking import MlflowClient
from mlflow.utils.search_utils import SearchUtils

from hpoq.config.base import Direction
from hpoq.config.tags import TagsRegistry
from hpoq.core import mlflow_queries
from hpoq.core.mlflow_queries import (
    SearchStrategy,
    UnquotableValueError,
    default_strategy,
    find_best_run_by_metric,
    format_filter_number,
    group_runs_by_variant,
    query_runs_by_tags,
    quote_filter_value,
    quote_identifier,
    tag_filter,
)

METRIC = "macro-f1"


@pytest.fixture(scope="module")
def empty_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated MLflow database per module; each test works on a copy (migrations are slow)."""
    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def client(tmp_path: Path, empty_db: Path) -> MlflowClient:
    db = tmp_path / "mlflow.db"
    shutil.copy(empty_db, db)
    return MlflowClient(tracking_uri=f"sqlite:///{db}")


def log_run(
    client: MlflowClient,
    experiment_id: str,
    tags: Mapping[str, str],
    metrics: Mapping[str, float] | None = None,
    status: str = "FINISHED",
) -> str:
    run = client.create_run(experiment_id, tags=dict(tags))
    if metrics:
        client.log_batch(run.info.run_id, metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()])
    client.set_terminated(run.info.run_id, status=status)
    return str(run.info.run_id)


def bulk_log_runs(
    client: MlflowClient, experiment_id: str, rows: list[tuple[dict[str, str], float]]
) -> None:
    """FINISHED runs written straight into MLflow's tables through its own ORM models, in one
    transaction: a thousand runs through the client take tens of seconds on SQLite."""
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlRun, SqlTag
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore(client.tracking_uri, str(Path(client.tracking_uri[10:]).parent))
    with store.ManagedSessionMaker(read_only=False) as session:
        for i, (tags, value) in enumerate(rows):
            run_id = uuid.uuid4().hex
            session.add(
                SqlRun(
                    run_uuid=run_id,
                    name=run_id,
                    experiment_id=int(experiment_id),
                    status="FINISHED",
                    start_time=i,
                    end_time=i,
                    lifecycle_stage="active",
                    source_type="LOCAL",
                    source_name="",
                    user_id="test",
                    artifact_uri="",
                )
            )
            session.flush()
            session.add_all(SqlTag(key=k, value=v, run_uuid=run_id) for k, v in tags.items())
            for model in (SqlMetric, SqlLatestMetric):
                session.add(
                    model(
                        key=METRIC, value=value, timestamp=i, step=0, is_nan=False, run_uuid=run_id
                    )
                )


def parsed_value(literal: str) -> object:
    [clause] = SearchUtils.parse_search_filter(f"tags.k = {literal}")
    return clause["value"]


# --- quoting ---------------------------------------------------------------------------

NASTY = [
    "plain",
    "it's",
    'say "hi"',
    "x' OR tags.y = 'z",
    "ends with backslash\\",
    "a\\'b",
    "''",
    "semi;colon -- comment /* c */",
    "new\nline",
    "",
    "unicode é ü",
    "`tick`",
    "%_like",
]


@pytest.mark.parametrize("value", NASTY)
def test_quoted_values_parse_back_exactly(value: str) -> None:
    literal = quote_filter_value(value)
    assert parsed_value(literal) == value
    # ...also in the middle of a longer filter, where a leaking quote would swallow clauses.
    parsed = SearchUtils.parse_search_filter(f"tags.a = {literal} AND tags.b = 'after'")
    assert [(c["key"], c["value"]) for c in parsed] == [("a", value), ("b", "after")]


@pytest.mark.parametrize("value", ["both ' and \"", "'\"", "x'y\"z"])
def test_value_with_both_quotes_is_refused(value: str) -> None:
    with pytest.raises(UnquotableValueError):
        quote_filter_value(value)
    clauses, client_only = tag_filter({"k": value, "ok": "fine"})
    assert clauses == "tags.`ok` = 'fine'"
    assert client_only == {"k": value}


def test_usual_sql_and_backslash_escapes_would_match_the_wrong_value() -> None:
    """Why quote_filter_value never escapes: MLflow keeps the escape characters."""
    assert parsed_value("'it''s'") == "it''s"
    assert parsed_value("'it\\'s'") == "it\\'s"


@pytest.mark.parametrize("name", ["macro-f1", "eval/f1 score", "it's", "a.b"])
def test_identifiers_are_backticked(name: str) -> None:
    literal = quote_identifier(name)
    [clause] = SearchUtils.parse_search_filter(f"metrics.{literal} > 0")
    assert clause["key"] == name
    assert SearchUtils.parse_order_by_for_search_runs(f"metrics.{literal} DESC")[1] == name


@pytest.mark.parametrize("name", ["a`b", 'a"b', ""])
def test_unsafe_identifiers_are_refused(name: str) -> None:
    with pytest.raises(UnquotableValueError):
        quote_identifier(name)


@pytest.mark.parametrize(
    "value", [0.87, -0.5, 1e20, -1e-300, 1.7976931348623157e308, 5e-324, 0.1 + 0.2, 3.0]
)
def test_numbers_round_trip_through_the_filter_parser(value: float) -> None:
    literal = format_filter_number(value)
    assert literal is not None
    [clause] = SearchUtils.parse_search_filter(f"metrics.m = {literal}")
    assert float(clause["value"]) == value


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_have_no_literal(value: float) -> None:
    assert format_filter_number(value) is None


# --- query_runs_by_tags ----------------------------------------------------------------


def test_tag_value_with_a_quote_matches_exactly_and_not_its_near_misses(
    client: MlflowClient,
) -> None:
    experiment_id = client.create_experiment('it\'s a "quoted" experiment')
    values = ["it's", "it''s", "it\\'s", "its", 'it"s', "IT'S", "it's ", "both ' and \""]
    ids = {value: log_run(client, experiment_id, {"k": value}) for value in values}
    for value in values:  # the unquotable one falls back to the client-side check
        found = list(query_runs_by_tags(client, [experiment_id], {"k": value}))
        assert [run.info.run_id for run in found] == [ids[value]], value


def test_status_and_every_required_tag_are_enforced(client: MlflowClient) -> None:
    experiment_id = client.create_experiment("status")
    wanted = log_run(client, experiment_id, {"a": "1", "b": "2"})
    log_run(client, experiment_id, {"a": "1", "b": "2"}, status="KILLED")
    log_run(client, experiment_id, {"a": "1", "b": "3"})
    log_run(client, experiment_id, {"a": "1"})
    found = list(query_runs_by_tags(client, [experiment_id], {"a": "1", "b": "2"}))
    assert [run.info.run_id for run in found] == [wanted]
    any_status = query_runs_by_tags(client, [experiment_id], {"b": "2"}, status=None)
    assert len(list(any_status)) == 2


@pytest.fixture(scope="module")
def big_experiment(
    tmp_path_factory: pytest.TempPathFactory, empty_db: Path
) -> tuple[MlflowClient, str, int]:
    """1,050 FINISHED runs sharing one metric value (more than one 1,000-run page), plus noise.

    Most are bulk-inserted; the tie-break winner (lowest `n`) and a few others are logged
    through the client, in the middle of the rest, so both kinds of rows are searched.
    """
    db = tmp_path_factory.mktemp("big") / "mlflow.db"
    shutil.copy(empty_db, db)
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment_id = client.create_experiment("big")
    numbers = list(range(1050))
    random.Random(7).shuffle(numbers)
    by_client = {0, 1, 2}
    rows = [({"group": "g", "n": str(n)}, 0.5) for n in numbers if n not in by_client]
    bulk_log_runs(client, experiment_id, rows[:500])
    for n in sorted(by_client, reverse=True):
        log_run(client, experiment_id, {"group": "g", "n": str(n)}, {METRIC: 0.5})
    bulk_log_runs(client, experiment_id, rows[500:])
    log_run(client, experiment_id, {"group": "other", "n": "x"}, {METRIC: 0.9})
    return client, experiment_id, 1050


def test_more_than_a_page_of_runs_is_all_seen(
    big_experiment: tuple[MlflowClient, str, int],
) -> None:
    client, experiment_id, count = big_experiment
    runs = list(query_runs_by_tags(client, [experiment_id], {"group": "g"}))
    assert len(runs) == count
    assert {run.data.tags["n"] for run in runs} == {str(n) for n in range(count)}
    small_pages = query_runs_by_tags(client, [experiment_id], {"group": "g"}, page_size=400)
    assert len({run.info.run_id for run in small_pages}) == count


@pytest.fixture(params=["order_by", "narrow"])
def strategy(request: pytest.FixtureRequest) -> SearchStrategy:
    return request.param  # type: ignore[no-any-return]


def test_every_tie_is_seen_beyond_a_page(
    big_experiment: tuple[MlflowClient, str, int], strategy: SearchStrategy
) -> None:
    client, experiment_id, _ = big_experiment
    best = find_best_run_by_metric(
        client,
        [experiment_id],
        {"group": "g"},
        METRIC,
        Direction.MAXIMIZE,
        tie_break=lambda run: int(run.data.tags["n"]),
        strategy=strategy,
    )
    assert best is not None
    assert best.data.tags["n"] == "0"


# --- find_best_run_by_metric -----------------------------------------------------------


def _best_n(
    client: MlflowClient,
    experiment_id: str,
    direction: Direction,
    strategy: SearchStrategy,
    **kw: Any,
) -> str | None:
    best = find_best_run_by_metric(
        client,
        [experiment_id],
        {"g": "x"},
        METRIC,
        direction,
        tie_break=lambda run: int(run.data.tags["n"]),
        strategy=strategy,
        **kw,
    )
    return None if best is None else str(best.data.tags["n"])


@pytest.mark.parametrize(
    ("direction", "expected"), [(Direction.MAXIMIZE, "3"), (Direction.MINIMIZE, "4")]
)
def test_best_value_wins_in_either_direction(
    client: MlflowClient, direction: Direction, expected: str, strategy: SearchStrategy
) -> None:
    experiment_id = client.create_experiment("dir")
    values = {"1": 0.2, "2": 0.7, "3": 0.9, "4": -0.4, "5": 0.0}
    for n, value in values.items():
        log_run(client, experiment_id, {"g": "x", "n": n}, {METRIC: value})
    log_run(client, experiment_id, {"g": "x", "n": "6"}, {METRIC: 5.0}, status="KILLED")
    log_run(client, experiment_id, {"g": "x", "n": "7"}, {"other": 5.0})
    assert _best_n(client, experiment_id, direction, strategy) == expected


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ties_and_values_spread_over_many_pages(
    client: MlflowClient, seed: int, strategy: SearchStrategy
) -> None:
    experiment_id = client.create_experiment("ties")
    rows = [(n, 0.8) for n in range(25)] + [(n, round(0.3 + n / 1000, 3)) for n in range(25, 60)]
    random.Random(seed).shuffle(rows)
    for n, value in rows:
        log_run(client, experiment_id, {"g": "x", "n": str(n + 10)}, {METRIC: value})
    # page_size 4: the ties span several pages (and narrowing takes several rounds).
    assert _best_n(client, experiment_id, Direction.MAXIMIZE, strategy, page_size=4) == "10"
    assert _best_n(client, experiment_id, Direction.MINIMIZE, strategy, page_size=4) == "35"


def test_rejected_runs_are_skipped_and_nan_never_wins(
    client: MlflowClient, strategy: SearchStrategy
) -> None:
    experiment_id = client.create_experiment("accept")
    log_run(client, experiment_id, {"g": "x", "n": "1"}, {METRIC: float("nan")})
    log_run(client, experiment_id, {"g": "x", "n": "2", "bad": "1"}, {METRIC: 0.99})
    log_run(client, experiment_id, {"g": "x", "n": "3"}, {METRIC: 0.5})
    log_run(client, experiment_id, {"g": "x", "n": "4", "bad": "1"}, {METRIC: 0.1})

    def accept(run: Run) -> bool:
        return "bad" not in run.data.tags

    for direction in Direction:
        best = _best_n(client, experiment_id, direction, strategy, accept=accept, page_size=1)
        assert best == "3"


def test_no_usable_run_gives_none(client: MlflowClient, strategy: SearchStrategy) -> None:
    experiment_id = client.create_experiment("none")
    log_run(client, experiment_id, {"g": "x", "n": "1"}, {"other": 1.0})
    assert _best_n(client, experiment_id, Direction.MAXIMIZE, strategy) is None


def test_without_a_number_literal_every_run_is_read(
    client: MlflowClient, monkeypatch: pytest.MonkeyPatch, strategy: SearchStrategy
) -> None:
    experiment_id = client.create_experiment("walk")
    for n, value in [(5, 0.7), (2, 0.7), (9, 0.7), (1, 0.6)]:
        log_run(client, experiment_id, {"g": "x", "n": str(n)}, {METRIC: value})
    monkeypatch.setattr(mlflow_queries, "format_filter_number", lambda value: None)
    assert _best_n(client, experiment_id, Direction.MAXIMIZE, strategy, page_size=1) == "2"


def test_extra_filter_narrows_the_search(client: MlflowClient, strategy: SearchStrategy) -> None:
    experiment_id = client.create_experiment("extra")
    log_run(client, experiment_id, {"g": "x", "n": "1", "v": "1"}, {METRIC: 0.9})
    log_run(client, experiment_id, {"g": "x", "n": "2", "v": "2"}, {METRIC: 0.8})
    best = _best_n(
        client, experiment_id, Direction.MAXIMIZE, strategy, extra_filter="tags.v != '1'"
    )
    assert best == "2"


def test_default_strategy_follows_the_store(client: MlflowClient) -> None:
    assert default_strategy(client) == "narrow"
    assert default_strategy(MlflowClient(tracking_uri="http://127.0.0.1:1")) == "order_by"


# --- group_runs_by_variant -------------------------------------------------------------


def test_runs_are_grouped_by_their_variant_number(client: MlflowClient) -> None:
    tags = TagsRegistry()
    experiment_id = client.create_experiment("group")
    for variant in ["1", "2", "2", "10", "02", "x"]:
        log_run(client, experiment_id, {tags.process.variant: variant})
    log_run(client, experiment_id, {})
    runs: list[Run] = list(query_runs_by_tags(client, [experiment_id], {}))
    grouped = group_runs_by_variant(runs, tags)
    assert {k: len(v) for k, v in grouped.items()} == {1: 1, 2: 2, 10: 1}
