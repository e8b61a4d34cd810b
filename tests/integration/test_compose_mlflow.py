"""The compose `mlflow` service run as a local process, as compose runs it: its entrypoint
script with the environment compose gives it from an operator's .env. Only what a
container has and this machine does not is swapped: SQLite for PostgreSQL, a temporary
folder for the /mlartifacts volume, a free port on 127.0.0.1 for 0.0.0.0:5000 (published
as the operator's MLFLOW_PUBLIC_HOSTS), one web worker."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from hpoq.core.coordination.embedded import free_port
from tests.compose_env import interpolate, read_env_file
from tests.conftest import REPO_ROOT

ADMIN, PASSWORD = "admin", "Adm1n-pw-for-tests"
SECRET_KEY = "csrf-key-for-tests"
WORKER_HOST = "mlflow:5000"  # the Host header of every worker inside the compose network


def _service() -> dict[str, object]:
    raw = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    env_file = read_env_file(REPO_ROOT / ".env.example") | {
        "REDIS_PASSWORD": "r",
        "POSTGRES_PASSWORD": "p",
        "MLFLOW_ADMIN_PASSWORD": PASSWORD,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": SECRET_KEY,
        "FLOWER_PASSWORD": "f",
        "RABBITMQ_PASSWORD": "q",  # compose reads the rabbitmq profile's service too
        "HPOQ_NODE_NAME": "node",
    }
    service = interpolate(raw, env_file)["services"]["mlflow"]
    assert isinstance(service, dict)
    return service


def service_argv() -> list[str]:
    [entrypoint] = _service()["entrypoint"]  # type: ignore[misc]
    return ["sh", str(REPO_ROOT / str(entrypoint).removeprefix("/app/"))]


def service_env(root: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HPOQ_"))}
    env.update(_service()["environment"])  # type: ignore[arg-type]
    env.update(
        MLFLOW_BACKEND_STORE_URI=f"sqlite:///{root}/mlflow.db",
        MLFLOW_AUTH_DB_URI=f"sqlite:///{root}/auth.db",
        MLFLOW_ARTIFACTS_DESTINATION=str(root / "mlartifacts"),
        MLFLOW_HOST="127.0.0.1",
        MLFLOW_PORT=str(port),
        MLFLOW_PUBLIC_HOSTS=f"127.0.0.1:{port}",
        MLFLOW_WORKERS="1",
        TMPDIR=str(root),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    return env


def test_the_service_refuses_to_start_without_its_secret_key(tmp_path: Path) -> None:
    env = service_env(tmp_path, free_port())
    del env["MLFLOW_FLASK_SERVER_SECRET_KEY"]
    result = subprocess.run(service_argv(), env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "MLFLOW_FLASK_SERVER_SECRET_KEY" in result.stderr
    assert not (tmp_path / "auth.db").exists()  # it stopped before anything started


@dataclass
class Server:
    url: str
    artifacts: Path
    log: Path

    def get(
        self, path: str, *, host: str = WORKER_HOST, auth: str | None = f"{ADMIN}:{PASSWORD}"
    ) -> tuple[int, bytes]:
        request = urllib.request.Request(self.url + path, headers={"Host": host})
        if auth is not None:
            token = base64.b64encode(auth.encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    log = tmp_path / "mlflow.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            service_argv(),
            env=service_env(tmp_path, port),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    started = Server(f"http://127.0.0.1:{port}", tmp_path / "mlartifacts", log)
    try:
        deadline = time.monotonic() + 240
        while True:
            assert process.poll() is None, log.read_text(errors="replace")[-4000:]
            assert time.monotonic() < deadline, "no answer from the MLflow server"
            try:
                if started.get("/health", host="127.0.0.1", auth=None)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        yield started
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:  # nothing to keep: its files are temporary
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.mark.slow
def test_workers_and_producers_reach_the_server_with_credentials_and_artifacts_travel(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    search = "/api/2.0/mlflow/experiments/search?max_results=1"
    # The compose healthcheck: no credentials needed.
    assert server.get("/health", host="127.0.0.1:5000", auth=None)[0] == 200
    # A worker in the compose network: Host mlflow:5000 is allowed, credentials are not optional.
    assert server.get(search)[0] == 200
    assert server.get(search, auth=None)[0] == 401
    assert server.get(search, auth=f"{ADMIN}:wrong")[0] == 401
    # The host check is still on for names nobody configured.
    assert server.get(search, host="attacker.example:5000")[0] == 403

    # A producer with MLFLOW_TRACKING_USERNAME/PASSWORD logs an artifact through the
    # server's artifact store and reads it back.
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    client = MlflowClient(tracking_uri=server.url)
    with pytest.raises(MlflowException, match=r"401|[Uu]nauthori[sz]ed"):
        client.search_experiments(max_results=1)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    experiment_id = client.create_experiment("compose-artifacts")
    experiment = client.get_experiment(experiment_id)
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    run = client.create_run(experiment_id)
    source = tmp_path / "upload" / "checkpoint.bin"
    source.parent.mkdir()
    source.write_bytes(os.urandom(4096))
    client.log_artifact(run.info.run_id, str(source), artifact_path="checkpoint")
    client.set_terminated(run.info.run_id)

    stored = list(server.artifacts.rglob("checkpoint.bin"))
    assert [p.read_bytes() for p in stored] == [source.read_bytes()]
    downloaded = Path(
        client.download_artifacts(run.info.run_id, "checkpoint", str(tmp_path / "download"))
    )
    assert (downloaded / "checkpoint.bin").read_bytes() == source.read_bytes()
    # A worker downloads the same file by its artifact-store path, Host mlflow:5000.
    relative = stored[0].relative_to(server.artifacts).as_posix()
    code, body = server.get(f"/api/2.0/mlflow-artifacts/artifacts/{relative}")
    assert code == 200 and body == source.read_bytes()
    assert server.get(f"/api/2.0/mlflow-artifacts/artifacts/{relative}", auth=None)[0] == 401
