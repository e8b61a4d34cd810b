"""docker-compose.yml, the Dockerfile and what they read, checked without a Docker engine:
the compose file is interpolated as compose does (tests/compose_env.py) and validated
against the Compose Specification's schema (tests/compose_spec/, Apache-2.0), then each
promise of the cluster is checked: healthchecks and the start order that waits on them,
secrets required, optional values defaulted, images and packages pinned, non-root writes."""

from __future__ import annotations

import json
import re
import tomllib
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from hpoq.config.settings import Settings
from hpoq.producer.cli import app
from tests.compose_env import InterpolationError, expressions, interpolate, read_env_file
from tests.conftest import REPO_ROOT

COMPOSE = REPO_ROOT / "docker-compose.yml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
DOCKERFILE = REPO_ROOT / "Dockerfile"
CONSTRAINTS = REPO_ROOT / "docker" / "constraints.txt"
SCHEMA = REPO_ROOT / "tests" / "compose_spec" / "compose-spec.json"
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())

# Without these compose must refuse to start: secrets, and the host name workers carry.
REQUIRED = {
    "REDIS_PASSWORD",
    "POSTGRES_PASSWORD",
    "MLFLOW_ADMIN_PASSWORD",
    "MLFLOW_FLASK_SERVER_SECRET_KEY",
    "FLOWER_PASSWORD",
    "HPOQ_NODE_NAME",
    "RABBITMQ_PASSWORD",
}
# Optional, and empty by default: hpoq reads an empty value as unset (config/settings.py).
EMPTY_MEANS_UNSET = {"HPOQ_BROKER_URL"}
BUILT_IMAGE = f"hpoq:{PYPROJECT['project']['version']}"
# A release, never a moving tag: x.y.z, or x.y for PostgreSQL (its releases are numbered so).
EXACT_TAG = re.compile(r"^(postgres:\d+\.\d+|[a-z0-9./-]+:\d+\.\d+\.\d+)(-[a-z0-9.-]+)?$")


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def filled_env(**overrides: str) -> dict[str, str]:
    """.env.example with every required value filled in, as an operator's .env."""
    env = read_env_file(ENV_EXAMPLE) | {name: f"{name.lower()}-value" for name in REQUIRED}
    env.update(overrides)
    return {k: v for k, v in env.items() if v != "<unset>"}


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any]) -> dict[str, Any]:
    """The file as compose sees it with a complete .env."""
    result = interpolate(raw, filled_env())
    assert isinstance(result, dict)
    return result


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return command if isinstance(command, list) else command.split()


# --- the file and its variables --------------------------------------------------------


def test_the_file_is_valid_against_the_compose_specification(
    raw: dict[str, Any], compose: dict[str, Any]
) -> None:
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft201909Validator(schema)
    for document in (raw, compose):
        errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(document)]
        assert errors == []
    # The schema does catch mistakes (a misspelt healthcheck key).
    broken = json.loads(json.dumps(compose))
    broken["services"]["redis"]["healthcheck"]["intervall"] = "1s"
    assert not validator.is_valid(broken)


def test_every_variable_is_required_or_has_a_default() -> None:
    text = COMPOSE.read_text()
    found = expressions(text)
    assert found, "the scan found no variables at all"
    required: set[str] = set()
    for match in found:
        name, op, arg = match.group("braced"), match.group("op"), match.group("arg")
        assert name, f"bare ${match.group('named')}: write ${{NAME:?...}} or ${{NAME:-...}}"
        assert op in (":?", ":-"), f"${{{name}}} has no default and no guard"
        assert arg or name in EMPTY_MEANS_UNSET, f"${{{name}{op}}} needs a message or a default"
        if op == ":?":
            required.add(name)
            assert name in arg, f"the message for {name} must name it: {arg!r}"
    assert required == REQUIRED
    optional = {m.group("braced") for m in found if m.group("op") == ":-"}
    assert not optional & REQUIRED, "a variable is required in one place, defaulted in another"


def test_env_example_declares_every_variable_and_ships_no_working_secret() -> None:
    example = read_env_file(ENV_EXAMPLE)
    found = expressions(COMPOSE.read_text())
    assert {m.group("braced") for m in found} == set(example)
    for name in REQUIRED:
        assert example[name] == "", f"{name} must be empty in .env.example"
    # An optional value in .env.example is the default compose uses when the line is gone.
    for match in found:
        if match.group("op") == ":-":
            assert example[match.group("braced")] == match.group("arg")


def test_compose_refuses_to_start_naming_the_missing_secret(raw: dict[str, Any]) -> None:
    for env in ({}, read_env_file(ENV_EXAMPLE)):  # no .env at all; .env.example unchanged
        with pytest.raises(InterpolationError, match="required variable") as refused:
            interpolate(raw, env)
        assert any(f"variable {name} is missing" in str(refused.value) for name in REQUIRED)
    for name in sorted(REQUIRED):
        for missing in ("<unset>", ""):
            with pytest.raises(InterpolationError) as refused:
                interpolate(raw, filled_env(**{name: missing}))
            assert f"required variable {name} is missing a value: set {name}" in str(refused.value)


def test_optional_values_default_and_nothing_passes_through_empty(raw: dict[str, Any]) -> None:
    minimal = interpolate(raw, {name: f"{name.lower()}-value" for name in REQUIRED})
    for name, service in minimal["services"].items():
        for key, value in (service.get("environment") or {}).items():
            assert value not in ("", None) or key in EMPTY_MEANS_UNSET, f"{name}: {key} is empty"
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name}: {port}"
        if "stop_grace_period" in service:
            assert service["stop_grace_period"] == "3600s"
    worker = minimal["services"]["worker-gpu0"]["environment"]
    assert worker["HPOQ_VISIBILITY_TIMEOUT"] == "43200"
    assert worker["MLFLOW_TRACKING_USERNAME"] == "admin"
    assert worker["HPOQ_BROKER_URL"] == ""
    assert Settings(_env_file=None, **_settings_env(worker)).broker_url is None  # type: ignore[call-arg]


# --- start order and health ------------------------------------------------------------


def test_redis_postgres_mlflow_and_rabbitmq_have_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("redis", "postgres", "mlflow", "rabbitmq"):
        check = services[name]["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert check["retries"] >= 3 and check["interval"] and check["start_period"], name
    redis_check = " ".join(services["redis"]["healthcheck"]["test"])
    # The password comes from the container's environment, never the command line.
    assert 'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli ping' in redis_check
    assert "redis_password-value" not in redis_check
    postgres_check = services["postgres"]["healthcheck"]["test"]
    assert postgres_check[1] == "pg_isready" and "127.0.0.1" in postgres_check  # TCP: past init
    assert "http://127.0.0.1:5000/health" in " ".join(services["mlflow"]["healthcheck"]["test"])
    assert "rabbitmq-diagnostics" in services["rabbitmq"]["healthcheck"]["test"]


def test_services_start_once_what_they_need_is_healthy(compose: dict[str, Any]) -> None:
    services = compose["services"]
    needs = {
        "mlflow": {"postgres"},
        "flower": {"redis"},
        **{n: {"redis", "postgres", "mlflow"} for n in services if n.startswith("worker-")},
    }
    for name, wanted in needs.items():
        depends = services[name]["depends_on"]
        assert isinstance(depends, dict), f"{name}: depends_on only orders the start"
        assert set(depends) == wanted, name
        for target, condition in depends.items():
            assert condition == {"condition": "service_healthy"}, (name, target)
            assert "healthcheck" in services[target], target


# --- what each service runs ------------------------------------------------------------


def test_workers_are_named_by_host_and_gpu_and_send_task_events(
    raw: dict[str, Any], compose: dict[str, Any]
) -> None:
    names = {c.name for c in app.registered_commands}
    workers = {n: s for n, s in compose["services"].items() if n.startswith("worker-gpu")}
    assert len(workers) >= 1
    for index, (name, service) in enumerate(sorted(workers.items())):
        argv = _command(service)
        assert argv[0] in names, f"{name}: {argv[0]} is not an hpoq command"
        assert argv[argv.index("--gpu") + 1] == str(index)
        assert "--task-events" in argv, f"{name}: Flower would miss its first jobs"
        # The host's numbering inside the container: `--gpu N` is the host's GPU N.
        [device] = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["count"] == "all" and "device_ids" not in device
        assert service["stop_grace_period"] and "hpoq-outputs:/outputs" in service["volumes"]
        assert service["environment"]["HPOQ_OUTPUT_DIR"] == "/outputs"
        assert service["hostname"] == "hpoq_node_name-value"
        env = service["environment"]
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert env["MLFLOW_TRACKING_PASSWORD"] == "mlflow_admin_password-value"
        assert env["HPOQ_REDIS_URL"] == "redis://:redis_password-value@redis:6379/0"
    assert "${HPOQ_NODE_NAME:?" in raw["x-worker"]["hostname"]


def test_flower_runs_the_workers_app_with_auth_and_no_persistence(compose: dict[str, Any]) -> None:
    import importlib.util

    flower = compose["services"]["flower"]
    argv = _command(flower)
    assert flower["entrypoint"] == ["celery"]
    app_module = argv[argv.index("-A") + 1]
    assert importlib.util.find_spec(app_module) is not None
    assert "flower" in argv and "--persistent=False" in argv
    assert any(a.startswith("--max_tasks=") for a in argv)
    assert flower["environment"]["FLOWER_BASIC_AUTH"] == "admin:flower_password-value"


def test_redis_is_persistent_never_evicts_and_needs_a_password(compose: dict[str, Any]) -> None:
    redis_service = compose["services"]["redis"]
    command = " ".join(_command(redis_service))
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    assert '--requirepass "$REDIS_PASSWORD"' in command  # from the container's environment
    assert redis_service["environment"]["REDIS_PASSWORD"] == "redis_password-value"


def test_mlflow_server_requires_authentication_and_knows_its_hosts(
    compose: dict[str, Any],
) -> None:
    mlflow = compose["services"]["mlflow"]
    script = (REPO_ROOT / mlflow["entrypoint"][0].removeprefix("/app/")).read_text()
    assert "--app-name basic-auth" in script and "--backend-store-uri" in script
    assert "--serve-artifacts" in script and "--allowed-hosts" in script
    assert "mlflow:5000" in script  # the name workers use inside the compose network
    env = mlflow["environment"]
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://")
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"] == "mlflow_flask_server_secret_key-value"
    assert env["MLFLOW_ARTIFACTS_DESTINATION"] == "/mlartifacts"
    assert "mlflow-artifacts:/mlartifacts" in mlflow["volumes"]
    assert env["MLFLOW_PUBLIC_HOSTS"] == "127.0.0.1:5000"


def test_producer_ports_are_published_on_the_bind_address_only(raw: dict[str, Any]) -> None:
    published = {
        name: service["ports"] for name, service in raw["services"].items() if "ports" in service
    }
    expected = {"redis": 6379, "postgres": 5432, "mlflow": 5000, "flower": 5555, "rabbitmq": 5672}
    assert set(published) == set(expected)
    for name, port in expected.items():
        assert published[name] == [f"${{HPOQ_BIND_ADDRESS:-127.0.0.1}}:{port}:{port}"]


def test_images_are_pinned(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service["image"]
        if "build" in service:
            assert image == BUILT_IMAGE, name
        else:
            assert EXACT_TAG.match(image), f"{name}: {image} is not an exact version"


def _settings_env(environment: dict[str, str]) -> dict[str, Any]:
    """A service's HPOQ_* environment as Settings keyword arguments."""
    return {
        key.removeprefix("HPOQ_").lower(): value
        for key, value in environment.items()
        if key.startswith("HPOQ_") and value != "" and key != "HPOQ_OUTPUT_DIR"
    }


def test_rabbitmq_is_an_optional_broker_the_workers_take_from_the_env(raw: dict[str, Any]) -> None:
    url = "amqp://hpoq:rabbitmq_password-value@rabbitmq:5672/hpoq"
    chosen = interpolate(raw, filled_env(HPOQ_BROKER_URL=url, HPOQ_VISIBILITY_TIMEOUT="86400"))
    rabbit = chosen["services"]["rabbitmq"]
    assert rabbit["profiles"] == ["rabbitmq"]  # off unless asked for
    assert [n for n, s in chosen["services"].items() if "profiles" in s] == ["rabbitmq"]
    env = rabbit["environment"]
    assert env["RABBITMQ_DEFAULT_PASS"] == "rabbitmq_password-value"
    assert (env["RABBITMQ_DEFAULT_USER"], env["RABBITMQ_DEFAULT_VHOST"]) == ("hpoq", "hpoq")
    # consumer_timeout (ms) = the longest job: a long trial's channel is never closed.
    assert env["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"] == "-rabbit consumer_timeout 86400000"
    assert "rabbitmq-data:/var/lib/rabbitmq" in rabbit["volumes"]
    for name in ("worker-gpu0", "worker-gpu1", "flower"):
        service_env = chosen["services"][name]["environment"]
        assert service_env["HPOQ_BROKER_URL"] == url, name
        settings = Settings(_env_file=None, **_settings_env(service_env))  # type: ignore[call-arg]
        assert settings.broker_url is not None and settings.broker_url.get_secret_value() == url


def test_postgres_creates_the_optuna_and_auth_databases(compose: dict[str, Any]) -> None:
    sql = (REPO_ROOT / "docker" / "postgres-init.sql").read_text()
    assert "CREATE DATABASE optuna" in sql and "CREATE DATABASE mlflow_auth" in sql
    env = compose["services"]["mlflow"]["environment"]
    assert env["MLFLOW_AUTH_DB_URI"].endswith("/mlflow_auth")


# --- the image -------------------------------------------------------------------------


def _dockerfile() -> str:
    return DOCKERFILE.read_text()


def _arg(name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", _dockerfile(), re.MULTILINE)
    assert match, f"ARG {name} missing"
    return match.group(1)


def test_the_base_image_and_torch_are_pinned_consistently_with_the_train_extra() -> None:
    text = _dockerfile()
    [base] = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert EXACT_TAG.match(base), base
    torch_version = _arg("TORCH_VERSION")
    assert re.fullmatch(r"\d+\.\d+\.\d+", torch_version)
    train = [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"]["train"]]
    [torch] = [r for r in train if r.name == "torch"]
    assert torch.specifier.contains(torch_version), f"torch=={torch_version} vs {torch}"
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu\d+", _arg("TORCH_INDEX_URL"))
    assert '"torch==${TORCH_VERSION}"' in text
    assert text.index("torch==") < text.index("--constraint docker/constraints.txt")


def test_every_python_package_of_the_image_is_pinned() -> None:
    pins: dict[str, str] = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version and re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", version), line
            pins[canonicalize_name(name)] = version
    assert "torch" not in pins, "torch comes from the CUDA index at the Dockerfile's pin"
    extras = PYPROJECT["project"]["optional-dependencies"]
    wanted = [*PYPROJECT["project"]["dependencies"], *extras["train"], *extras["monitor"]]
    wanted += extras["server"]
    for line in wanted:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        if name == "torch":
            continue
        assert name in pins, f"{name} is not pinned in {CONSTRAINTS.name}"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} vs {line}"
    assert "flask-wtf" in pins  # mlflow[auth]: the basic-auth app needs it
    assert "'.[train,monitor,server]'" in _dockerfile()


def test_the_image_runs_as_a_user_that_owns_what_it_writes(compose: dict[str, Any]) -> None:
    text = _dockerfile()
    [user] = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert user not in ("root", "0")
    chown = re.search(r"chown -R (\S+):\S+ (.+)$", text, re.MULTILINE)
    assert chown and chown.group(1) == user
    owned = chown.group(2).split()
    assert text.index("chown") < text.index(f"USER {user}")
    # Every volume mounted into the image's services is a directory the user owns.
    for name, service in compose["services"].items():
        if service.get("image") != BUILT_IMAGE:
            continue
        for volume in service.get("volumes", []):
            target = volume.split(":")[1]
            assert target in owned, f"{name}: {target} is not writable by {user}"
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(re.findall(r"^ENV (.+)$", text, re.M))))
    assert env["HPOQ_OUTPUT_DIR"] in owned
    assert env["HF_HOME"].startswith(env["HPOQ_OUTPUT_DIR"] + "/")
    assert re.search(r"^WORKDIR /home/", text[text.index(f"USER {user}") :], re.MULTILINE)
    assert 'ENTRYPOINT ["hpoq"]' in text


def test_dockerignore_keeps_secrets_outputs_and_environments_out() -> None:
    lines = set((REPO_ROOT / ".dockerignore").read_text().splitlines())
    assert {".env", ".git", ".venv", "outputs", "mlruns", "data/generated"} <= lines
