"""Which benchmark keys MLflow already holds a measurement for, asked for many keys at once.

A measurement is a FINISHED, active run in the benchmark experiment whose `benchmark_key` tag
is the key and that holds at least one metric.

- Database tracking URIs (`sqlite:`, `postgresql:`, `mysql:`, `mssql:`; hpoq's local default)
  are asked directly, through MLflow's own table models: the candidate keys go in
  `tags.value IN (...)` chunks, and only (key, run id) pairs come back. MLflow's search API
  cannot filter on a list of tag values, and it builds a full Run (tags, params, metrics)
  for every run it returns, which costs about 0.8 ms per run on SQLite: reading 10,000
  measured runs that way takes seconds, while this query takes tens of milliseconds.
- A tracking server (`http(s):`, or a database query that fails because MLflow's schema
  moved) gets the search API: one paged `LIKE` query per key suffix. Every key of one
  experiment shares its `:{data_fp}:{bench_fp}` suffix, so that is one query per experiment
  whatever the number of keys.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from hpoq.config.tags import BENCHMARK_KEY_TAG
from hpoq.core.benchmark_key import key_suffix_of
from hpoq.redaction import redact_url

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
# Bound parameters per statement: SQLite allows 32,766, but smaller statements plan faster.
CHUNK = 500

_engines: dict[str, Any] = {}
_engines_lock = threading.Lock()


def is_measurement(run: Run) -> bool:
    """Whether a FINISHED run tagged with a key holds a result (at least one metric)."""
    return bool(run.data.metrics)


def finished_keys(
    client: MlflowClient, experiment_name: str, keys: Collection[str]
) -> dict[str, str]:
    """Each of `keys` that has a measurement in `experiment_name` -> the run id of one."""
    wanted = sorted(set(keys))
    found = client.get_experiment_by_name(experiment_name)
    if not wanted or found is None:
        return {}
    experiment_id = str(found.experiment_id)
    uri = str(client.tracking_uri)
    if uri.split(":", 1)[0].split("+", 1)[0] in DATABASE_SCHEMES:
        try:
            return _query_tables(uri, experiment_id, wanted)
        except Exception as exc:  # a schema this version does not know: the search API
            log.warning(
                "measured-key query on MLflow's tables failed (%s); using the search API",
                redact_url(str(exc)).splitlines()[0],
            )
    return _search_api(client, experiment_id, wanted)


def _query_tables(uri: str, experiment_id: str, keys: list[str]) -> dict[str, str]:
    import sqlalchemy as sa
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlRun, SqlTag

    has_metric = sa.exists().where(SqlLatestMetric.run_uuid == SqlRun.run_uuid)
    measured: dict[str, str] = {}
    with _engine(uri).connect() as connection:
        for start in range(0, len(keys), CHUNK):
            query: Any = (
                sa.select(SqlTag.value, SqlTag.run_uuid)
                .join(SqlRun, SqlRun.run_uuid == SqlTag.run_uuid)
                .where(
                    SqlRun.experiment_id == int(experiment_id),
                    SqlRun.status == "FINISHED",
                    SqlRun.lifecycle_stage == "active",
                    SqlTag.key == BENCHMARK_KEY_TAG,
                    SqlTag.value.in_(keys[start : start + CHUNK]),
                    has_metric,
                )
                .order_by(SqlTag.value, SqlTag.run_uuid)  # the lowest run id of a key
            )
            for value, run_id in connection.execute(query):
                measured.setdefault(str(value), str(run_id))
    return measured


def _engine(uri: str) -> Any:
    """One engine per URI and process (an engine holds a connection pool)."""
    import sqlalchemy as sa

    with _engines_lock:
        engine = _engines.get(uri)
        if engine is None:
            if uri.startswith("sqlite"):
                # Wait for a writer instead of failing: workers write while this reads.
                engine = sa.create_engine(uri, connect_args={"timeout": 60})
            else:
                engine = sa.create_engine(uri, pool_pre_ping=True)
            _engines[uri] = engine
        return engine


def dispose_engines() -> None:
    """Close every pooled connection (tests, and before a fork)."""
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def _search_api(client: MlflowClient, experiment_id: str, keys: list[str]) -> dict[str, str]:
    from hpoq.core.mlflow_queries import query_runs_by_tags, quote_filter_value

    wanted = set(keys)
    measured: dict[str, str] = {}
    for suffix in sorted({key_suffix_of(k) for k in keys}):
        like = f"tags.{BENCHMARK_KEY_TAG} LIKE {quote_filter_value('%' + suffix)}"
        for run in query_runs_by_tags(client, [experiment_id], {}, extra_filter=like):
            key = run.data.tags.get(BENCHMARK_KEY_TAG)
            if key in wanted and is_measurement(run):
                # The lowest run id, as the table query picks: one answer for either path.
                measured[key] = min(measured.get(key, run.info.run_id), run.info.run_id)
    return measured
