"""Connecting the producer to Redis, Celery and MLflow, in that order, before any work."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from hpoq.core.coordination.connection import connect
from hpoq.core.coordination.embedded import EmbeddedRedis
from hpoq.core.coordination.keys import RedisKeys
from hpoq.core.coordination.local_redis import SnapshotRedis, resolve_redis_url
from hpoq.core.runtime import Runtime

if TYPE_CHECKING:
    import redis
    from celery import Celery
    from mlflow.tracking import MlflowClient


@dataclass
class Services:
    runtime: Runtime
    redis_url: str
    redis: redis.Redis
    keys: RedisKeys
    celery: Celery
    embedded: EmbeddedRedis | None  # the embedded server this command must stop at its end

    @property
    def snapshot(self) -> bool:
        """Whether Redis is a read-only copy of a stopped embedded server's data."""
        return isinstance(self.embedded, SnapshotRedis)

    def mlflow(self) -> MlflowClient:
        from hpoq.core.tracking import make_client

        return make_client(self.runtime.mlflow_uri())

    def close(self) -> None:
        self.redis.close()
        self.celery.close()


def open_services(
    runtime: Runtime, *, start_embedded: bool = True, owned: bool = False, snapshot: bool = False
) -> Services:
    """Reach Redis (HPOQ_REDIS_URL or the embedded server) and build the Celery sender
    (on HPOQ_BROKER_URL, else that Redis).

    `owned`: the caller stops the embedded server when it ends (`hpoq run`; see
    core/coordination/local_redis.py). `snapshot` (readers, with `start_embedded=False`):
    a stopped embedded server's data is read from a copy, which the caller stops. The
    runtime's settings are already parsed, so a bad environment value has stopped the
    command before anything starts."""
    quiet_libraries()
    from hpoq.core.celery_app import create_app
    from hpoq.core.coordination.keys import redis_keys

    url, embedded = resolve_redis_url(runtime, start=start_embedded, owned=owned, snapshot=snapshot)
    try:
        client = connect(url)
        celery = create_app(url, broker=runtime.settings.broker(url))
        return Services(runtime, url, client, redis_keys(runtime), celery, embedded)
    except BaseException:
        if embedded is not None:
            embedded.stop()
        raise


def quiet_libraries() -> None:
    """Keep MLflow's and Optuna's per-call INFO lines out of the CLI's output."""
    import os

    import optuna

    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is imported
    # A run finished against a tracking server (publishing files) would print its URL on
    # stdout, where `--json` keeps one document.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
