"""docker-compose.yml cannot be brought up here (no Docker engine): validate it instead."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from hpoq.producer.cli import app
from tests.conftest import REPO_ROOT

COMPOSE = REPO_ROOT / "docker-compose.yml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def _variables(text: str) -> set[str]:
    return set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)(?::?[-?][^}]*)?\}", text))


def test_every_variable_used_is_in_env_example() -> None:
    declared = {
        line.split("=", 1)[0]
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert _variables(COMPOSE.read_text()) <= declared
    assert _variables(COMPOSE.read_text()), "the scan found no variables at all"


def test_every_secret_in_env_example_is_a_placeholder() -> None:
    for line in ENV_EXAMPLE.read_text().splitlines():
        if "PASSWORD" in line.split("=", 1)[0]:
            assert line.endswith("=change-me")


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return command if isinstance(command, list) else command.split()


def test_worker_commands_are_real_hpoq_commands(compose: dict[str, Any]) -> None:
    names = {c.name for c in app.registered_commands}
    workers = {n: s for n, s in compose["services"].items() if n.startswith("worker-gpu")}
    assert len(workers) >= 1
    for index, (name, service) in enumerate(sorted(workers.items())):
        argv = _command(service)
        assert argv[0] in names, f"{name}: {argv[0]} is not an hpoq command"
        assert argv[argv.index("--gpu") + 1] == str(index)
        [device] = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["device_ids"] == [str(index)]
        assert service["stop_grace_period"] and "hpoq-outputs:/outputs" in service["volumes"]
        assert service["environment"]["HPOQ_OUTPUT_DIR"] == "/outputs"


def test_flower_runs_the_workers_app_with_auth_and_no_persistence(compose: dict[str, Any]) -> None:
    import importlib.util

    flower = compose["services"]["flower"]
    argv = _command(flower)
    assert flower["entrypoint"] == ["celery"]
    app_module = argv[argv.index("-A") + 1]
    assert importlib.util.find_spec(app_module) is not None
    assert "flower" in argv and "--persistent=False" in argv
    assert any(a.startswith("--max_tasks=") for a in argv)
    assert flower["environment"]["FLOWER_BASIC_AUTH"] == "${FLOWER_USER}:${FLOWER_PASSWORD}"


def test_redis_is_persistent_never_evicts_and_needs_a_password(compose: dict[str, Any]) -> None:
    command = compose["services"]["redis"]["command"]
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    assert "--requirepass ${REDIS_PASSWORD}" in command
    assert "ports" not in compose["services"]["redis"]  # reachable inside the network only


def test_mlflow_server_requires_authentication(compose: dict[str, Any]) -> None:
    mlflow = compose["services"]["mlflow"]
    script = (REPO_ROOT / mlflow["entrypoint"][0].removeprefix("/app/")).read_text()
    assert "--app-name basic-auth" in script and "--backend-store-uri" in script
    assert "postgresql://" in mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"]


def test_published_ports_bind_to_the_configured_address(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("${HPOQ_BIND_ADDRESS}:"), name
    assert "HPOQ_BIND_ADDRESS=127.0.0.1" in ENV_EXAMPLE.read_text()


def test_dockerfile_installs_torch_before_the_project() -> None:
    text = (REPO_ROOT / "Dockerfile").read_text()
    assert text.index("torch") < text.index("pip install -e")
    assert 'ENTRYPOINT ["hpoq"]' in text


def test_postgres_creates_the_optuna_database() -> None:
    sql = (REPO_ROOT / "docker" / "postgres-init.sql").read_text()
    assert "CREATE DATABASE optuna" in sql
