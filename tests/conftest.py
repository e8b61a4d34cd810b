"""Shared fixtures: a real Redis (HPOQ_TEST_REDIS_URL, else an embedded server started for
the session), fakeredis for fast contract tests, and an isolated hpoq environment."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis

from hpoq.core.coordination.embedded import EmbeddedRedis

if TYPE_CHECKING:
    from tests.integration.brokers import Broker

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "config"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis. Never skipped: without one configured, the test session starts one."""
    configured = os.environ.get("HPOQ_TEST_REDIS_URL")
    if configured:
        yield configured
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def real_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def fake_redis() -> Iterator[redis.Redis]:
    import fakeredis

    client = fakeredis.FakeRedis(decode_responses=True)
    yield client
    client.flushall()


@pytest.fixture(params=["fakeredis", "real"])
def any_redis(request: pytest.FixtureRequest) -> redis.Redis:
    """The same contract suite runs against fakeredis and a real server."""
    name = "fake_redis" if request.param == "fakeredis" else "real_redis"
    client: redis.Redis = request.getfixturevalue(name)
    return client


@pytest.fixture
def hpoq_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated output directory; no HPOQ_* or MLflow variables leak in from outside."""
    for name in list(os.environ):
        if name.startswith("HPOQ_") and name != "HPOQ_TEST_REDIS_URL":
            monkeypatch.delenv(name)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    output = tmp_path / "outputs"
    monkeypatch.setenv("HPOQ_OUTPUT_DIR", str(output))
    monkeypatch.setenv("HPOQ_PLATFORM", "local")
    return output


@pytest.fixture
def config_copy(tmp_path: Path) -> Path:
    """A writable copy of the shipped config/ tree; returns its experiment/ folder's parent."""
    target = tmp_path / "project" / "config"
    shutil.copytree(CONFIG_DIR, target)
    return target


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards. Skipped when no server answers at
    HPOQ_TEST_POSTGRES_URL (default: the local trust-auth server on 127.0.0.1:5432)."""
    import uuid

    import sqlalchemy

    server = os.environ.get("HPOQ_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
    admin = sqlalchemy.create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    name = f"hpoq_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    except sqlalchemy.exc.OperationalError as exc:
        admin.dispose()
        pytest.skip(f"no PostgreSQL server at {server}: {exc.orig}")
    try:
        yield f"{server}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite store with its schema created, made once per session: creating the
    schema (MLflow's migrations) takes seconds, copying the file milliseconds."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments(max_results=1)
    return path


@pytest.fixture
def amqp_url() -> Iterator[str]:
    """A private virtual host on the test RabbitMQ (tests/integration/brokers.py). Skipped
    when no server answers or no virtual host can be made."""
    from hpoq.redaction import redact_url
    from tests.integration.brokers import AMQP_SERVER, amqp_answers, private_vhost

    if not amqp_answers():
        pytest.skip(f"no RabbitMQ at {redact_url(AMQP_SERVER)}")
    with private_vhost() as url:
        if url is None:
            pytest.skip("cannot make a private RabbitMQ virtual host (no rabbitmqctl or API)")
        yield url


@pytest.fixture(params=["redis", "amqp"])
def broker(request: pytest.FixtureRequest, redis_url: str) -> Broker:
    """The same test on each broker: the test Redis itself, and RabbitMQ where it answers."""
    from tests.integration.brokers import Broker

    if request.param == "redis":
        return Broker("redis", redis_url)
    return Broker("amqp", request.getfixturevalue("amqp_url"))
