"""MLflow connection: the tracking URI, experiments by name, a client.

`MLFLOW_TRACKING_URI` wins when set (as MLflow users expect); otherwise a SQLite store
under the output directory. Imports mlflow lazily: the CLI stays fast.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from hpoq.config.settings import Settings
from hpoq.core.paths import OutputLayout
from hpoq.errors import ServiceError
from hpoq.redaction import redact_url

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


def tracking_uri(settings: Settings, layout: OutputLayout) -> str:
    if settings.mlflow_tracking_uri is not None:
        return settings.mlflow_tracking_uri.get_secret_value()
    layout.root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{layout.mlflow_db()}"


def is_tracking_server(uri: str) -> bool:
    return uri.split(":", 1)[0].lower() in ("http", "https")


def artifact_root(layout: OutputLayout, uri: str) -> str | None:
    """Where new experiments keep their artifacts. A tracking server keeps them in its own
    artifact root (`mlflow-artifacts:` when it serves artifacts), which every host reaches
    through the server: None lets it choose. Any other store (the local SQLite default)
    gets a folder under the output directory."""
    if is_tracking_server(uri):
        return None
    return (layout.root / "mlartifacts").as_uri()


_initialised: set[str] = set()

# MLflow's client prints a run's link whenever a run ends on a tracking server, and reads
# the whole run (params, metrics, tags) from the server for it: one more request per trial,
# the heaviest the server answers (benchmarks/bench_ceiling.py).
QUIET_RUN_LINKS_ENV = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"


def make_client(uri: str) -> MlflowClient:
    """A client for `uri`. A SQLite store is created under a file lock: MLflow migrates the
    schema on first open, and several processes migrating one file at once corrupt it.
    MLflow's run links are not printed (QUIET_RUN_LINKS_ENV), unless a person set it."""
    from mlflow.tracking import MlflowClient

    os.environ.setdefault(QUIET_RUN_LINKS_ENV, "true")

    if uri.startswith("sqlite:///") and uri not in _initialised:
        database = Path(uri.removeprefix("sqlite:///"))
        with file_lock(database.with_name(database.name + ".init.lock")):
            client = MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)
            _use_wal(database)
        _initialised.add(uri)
        return client
    return MlflowClient(tracking_uri=uri)


def _use_wal(database: Path) -> None:
    """Write-ahead logging: readers stop blocking the writer, and each of a trial's MLflow
    writes costs about half as much (the mode is stored in the file, so once is enough)."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(database, timeout=60)) as connection:
        connection.execute("PRAGMA journal_mode=WAL")


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock held for the duration of the block."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_experiment(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    """The experiment's id, creating it when missing (safe when several processes race).
    A briefly unreachable server is retried (bounded); then ServiceError."""
    from mlflow.exceptions import MlflowException

    from hpoq.core.retry import retry_call

    def lookup_or_create() -> str:
        found = client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(client.create_experiment(name, artifact_location=artifact_location))
        except MlflowException:
            # Another process created it between our lookup and create.
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
            return str(found.experiment_id)

    try:
        return retry_call(
            lookup_or_create,
            what=f"MLflow experiment {name!r}",
            retry_on=(MlflowException, OSError),
        )
    except MlflowException as exc:
        raise ServiceError(
            f"MLflow: cannot open experiment {name!r}: {redact_url(str(exc))}"
        ) from exc


def find_experiment_id(client: MlflowClient, name: str) -> str | None:
    """The experiment's id, or None when it does not exist yet (read-only)."""
    found = client.get_experiment_by_name(name)
    return None if found is None else str(found.experiment_id)
