"""Settings from the environment; secrets never printed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from hpoq.config.settings import Settings, load_settings, redact_url
from hpoq.errors import SettingsError

ENV_NAMES = (
    "HPOQ_REDIS_URL",
    "HPOQ_BROKER_URL",
    "HPOQ_OPTUNA_STORAGE",
    "HPOQ_OUTPUT_DIR",
    "HPOQ_PLATFORM",
    "HPOQ_MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_URI",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("HPOQ_") or name.upper() in ENV_NAMES:
            monkeypatch.delenv(name)


def test_unset_means_local_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert s.redis_url is None
    assert s.optuna_storage is None
    assert s.mlflow_tracking_uri is None
    assert s.platform is None
    assert s.output_dir == Path("outputs")
    assert s.output_root() == (tmp_path / "outputs").resolve()
    assert s.describe() == {
        "redis_url": None,
        "broker_url": None,
        "optuna_storage": None,
        "mlflow_tracking_uri": None,
        "output_dir": str((tmp_path / "outputs").resolve()),
        "platform": None,
    }


def test_hpoq_variables_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HPOQ_REDIS_URL", "redis://:s3cret@redis:6379/0")
    monkeypatch.setenv("HPOQ_OPTUNA_STORAGE", "postgresql://u:pw@db/optuna")
    monkeypatch.setenv("HPOQ_OUTPUT_DIR", str(tmp_path / "out"))
    monkeypatch.setenv("HPOQ_PLATFORM", "kaggle")
    s = Settings()
    assert s.redis_url is not None
    assert s.redis_url.get_secret_value() == "redis://:s3cret@redis:6379/0"
    assert s.optuna_storage is not None
    assert s.optuna_storage.get_secret_value() == "postgresql://u:pw@db/optuna"
    assert s.output_dir == tmp_path / "out"
    assert s.output_root() == (tmp_path / "out").resolve()
    assert s.platform == "kaggle"


def test_env_names_are_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("hpoq_platform", "colab")
    assert Settings().platform == "colab"


def test_mlflow_tracking_uri_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    s = Settings()
    assert s.mlflow_tracking_uri is not None
    assert s.mlflow_tracking_uri.get_secret_value() == "http://mlflow:5000"


def test_hpoq_prefixed_mlflow_uri_is_also_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPOQ_MLFLOW_TRACKING_URI", "http://other:5000")
    s = Settings()
    assert s.mlflow_tracking_uri is not None
    assert s.mlflow_tracking_uri.get_secret_value() == "http://other:5000"


def test_explicit_argument_beats_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPOQ_REDIS_URL", "redis://env:6379/0")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    s = Settings(redis_url="redis://arg:6379/0", mlflow_tracking_uri="sqlite:///arg.db")
    assert s.redis_url is not None
    assert s.redis_url.get_secret_value() == "redis://arg:6379/0"
    assert s.mlflow_tracking_uri is not None
    assert s.mlflow_tracking_uri.get_secret_value() == "sqlite:///arg.db"


def test_unrelated_env_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPOQ_SOMETHING_ELSE", "1")
    Settings()


def test_output_root_expands_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("HPOQ_OUTPUT_DIR", "~/hpoq-out")
    assert Settings().output_root() == (tmp_path / "hpoq-out").resolve()


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(ValidationError):
        s.platform = "x"  # type: ignore[misc]


SECRET_URLS = [
    ("redis://:s3cret@h:6379/0", "s3cret", "redis://:***@h:6379/0"),
    ("postgresql://u:p@h/db", "p", "postgresql://u:***@h/db"),
    (
        "postgresql+psycopg2://user:hunter2@db.example:5432/optuna",
        "hunter2",
        "postgresql+psycopg2://user:***@db.example:5432/optuna",
    ),
    ("rediss://default:tok-en_1@cache:6380", "tok-en_1", "rediss://default:***@cache:6380"),
    ("http://admin:pa%40ss@mlflow:5000", "pa%40ss", "http://admin:***@mlflow:5000"),
]


@pytest.mark.parametrize(("url", "secret", "redacted"), SECRET_URLS)
def test_redact_url(url: str, secret: str, redacted: str) -> None:
    assert redact_url(url) == redacted
    assert f":{secret}@" not in redact_url(url)


@pytest.mark.parametrize(("url", "secret", "_"), SECRET_URLS)
def test_settings_never_show_secrets(
    monkeypatch: pytest.MonkeyPatch, url: str, secret: str, _: str
) -> None:
    monkeypatch.setenv("HPOQ_REDIS_URL", url)
    monkeypatch.setenv("HPOQ_OPTUNA_STORAGE", url)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("HPOQ_BROKER_URL", url.replace(url.split("://")[0], "amqp", 1))
    s = Settings()
    described = s.describe()
    for key in ("redis_url", "broker_url", "optuna_storage", "mlflow_tracking_uri"):
        value = described[key]
        assert value is not None
        assert ":***@" in value
        assert f":{secret}@" not in value
    for text in (repr(s), str(s)):
        assert url not in text
        assert f":{secret}@" not in text
        assert "**********" in text


def test_redact_url_handles_several_urls_in_a_message() -> None:
    message = "cannot reach redis://:one@r:6379/0 nor postgresql://u:two@db/x (retrying)"
    redacted = redact_url(message)
    assert "one" not in redacted
    assert "two" not in redacted
    assert redacted == "cannot reach redis://:***@r:6379/0 nor postgresql://u:***@db/x (retrying)"


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost:6379/0",
        "sqlite:///outputs/mlflow.db",
        "http://mlflow:5000",
        "redis://user@host:6379",
        "no url here: just text",
    ],
)
def test_redact_url_leaves_urls_without_password_alone(url: str) -> None:
    assert redact_url(url) == url


def test_redact_url_hides_a_password_containing_at_sign() -> None:
    # redis-py and urllib split user info at the LAST '@': this password is 'p@ss'.
    redacted = redact_url("redis://:p@ss@h:6379/0")
    assert "ss@" not in redacted
    assert redacted == "redis://:***@h:6379/0"


def test_secretstr_repr_hides_value() -> None:
    secret = SecretStr("redis://:s3cret@h:6379/0")
    assert "s3cret" not in repr(secret)
    assert "s3cret" not in str(secret)
    assert "s3cret" not in f"{secret}"


# --- every variable parsed here: defaults, empty values, bad values -------------------------


def test_numeric_settings_have_their_defaults() -> None:
    s = load_settings()
    assert (s.visibility_timeout, s.lease_seconds, s.max_deliveries) == (43200, 60.0, 3)
    assert (s.debug, s.cheap_objective_sleep, s.cheap_bench_sleep) == (False, 0.0, 0.0)


@pytest.mark.parametrize(
    "name",
    [
        "HPOQ_REDIS_URL",
        "HPOQ_BROKER_URL",
        "HPOQ_OPTUNA_STORAGE",
        "HPOQ_OUTPUT_DIR",
        "HPOQ_PLATFORM",
        "MLFLOW_TRACKING_URI",
        "HPOQ_VISIBILITY_TIMEOUT",
        "HPOQ_LEASE_SECONDS",
        "HPOQ_MAX_DELIVERIES",
        "HPOQ_DEBUG",
        "HPOQ_CHEAP_OBJECTIVE_SLEEP",
    ],
)
def test_an_empty_value_counts_as_unset(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """compose passes `VAR=` for a variable the host does not set."""
    monkeypatch.setenv(name, "")
    assert load_settings() == Settings(_env_file=None)  # type: ignore[call-arg]
    monkeypatch.setenv(name, "   ")
    if name in ("HPOQ_REDIS_URL", "HPOQ_OPTUNA_STORAGE", "HPOQ_OUTPUT_DIR", "HPOQ_PLATFORM"):
        return  # free text: a blank is a (strange) value, refused where it is used
    if name == "MLFLOW_TRACKING_URI":
        return
    with pytest.raises(SettingsError, match=name):
        load_settings()


@pytest.mark.parametrize(
    ("name", "value", "expects"),
    [
        ("HPOQ_VISIBILITY_TIMEOUT", "abc", "a whole number of seconds above 0"),
        ("HPOQ_VISIBILITY_TIMEOUT", "0", "a whole number of seconds above 0"),
        ("HPOQ_VISIBILITY_TIMEOUT", "1.5", "a whole number of seconds above 0"),
        ("HPOQ_LEASE_SECONDS", "-1", "a number of seconds above 0"),
        ("HPOQ_LEASE_SECONDS", "nan", "a number of seconds above 0"),
        ("HPOQ_LEASE_SECONDS", "inf", "a number of seconds above 0"),
        ("HPOQ_MAX_DELIVERIES", "0", "a whole number of deliveries, 1 or more"),
        ("HPOQ_MAX_DELIVERIES", "three", "a whole number of deliveries, 1 or more"),
        ("HPOQ_DEBUG", "maybe", "a boolean"),
        ("HPOQ_CHEAP_BENCH_SLEEP", "soon", "a number of seconds 0 or more"),
        ("HPOQ_BROKER_URL", "kafka://h:9092", "a redis://, rediss://, amqp:// or amqps:// URL"),
        ("HPOQ_BROKER_URL", "127.0.0.1:5672", "a redis://, rediss://, amqp:// or amqps:// URL"),
        ("HPOQ_BROKER_URL", "amqp://", "a redis://, rediss://, amqp:// or amqps:// URL"),
    ],
)
def test_a_bad_value_names_the_variable_and_what_it_expects(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expects: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as exc:
        load_settings()
    message = str(exc.value)
    assert message.startswith(f"{name}={value!r}: expected {expects}")
    assert "\n" not in message and "pydantic" not in message


def test_the_broker_is_the_coordination_redis_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().broker("redis://r:6379/0") == "redis://r:6379/0"
    monkeypatch.setenv("HPOQ_BROKER_URL", "amqp://u:pw@rabbit:5672/hpoq")
    assert load_settings().broker("redis://r:6379/0") == "amqp://u:pw@rabbit:5672/hpoq"
    monkeypatch.setenv("HPOQ_BROKER_URL", "AMQPS://u:pw@rabbit:5671/hpoq")
    assert load_settings().broker_url is not None


def test_a_bad_broker_url_never_shows_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPOQ_BROKER_URL", "kafka://u:s3cret@h:9092")
    with pytest.raises(SettingsError, match="HPOQ_BROKER_URL") as exc:
        load_settings()
    assert "s3cret" not in str(exc.value)


def test_every_bad_variable_is_named_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPOQ_LEASE_SECONDS", "x")
    monkeypatch.setenv("HPOQ_MAX_DELIVERIES", "y")
    with pytest.raises(SettingsError) as exc:
        load_settings()
    message = str(exc.value)
    assert "HPOQ_LEASE_SECONDS='x'" in message and "HPOQ_MAX_DELIVERIES='y'" in message


def test_a_bad_value_never_shows_a_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPOQ_LEASE_SECONDS", "redis://:s3cret@h:6379/0")
    with pytest.raises(SettingsError) as exc:
        load_settings()
    assert "s3cret" not in str(exc.value)


def test_the_functions_other_modules_call_read_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hpoq.core.celery_app import visibility_timeout_s
    from hpoq.workers.context import lease_seconds
    from hpoq.workers.deliveries import max_deliveries

    assert (visibility_timeout_s(), lease_seconds(), max_deliveries()) == (43200, 60.0, 3)
    monkeypatch.setenv("HPOQ_VISIBILITY_TIMEOUT", "120")
    monkeypatch.setenv("HPOQ_LEASE_SECONDS", "2.5")
    monkeypatch.setenv("hpoq_max_deliveries", "7")  # names are case-insensitive
    assert (visibility_timeout_s(), lease_seconds(), max_deliveries()) == (120, 2.5, 7)
    monkeypatch.setenv("HPOQ_LEASE_SECONDS", "")
    assert lease_seconds() == 60.0
    monkeypatch.setenv("HPOQ_LEASE_SECONDS", "zero")
    with pytest.raises(SettingsError, match="HPOQ_LEASE_SECONDS"):
        lease_seconds()


def test_no_module_reads_the_environment_by_itself() -> None:
    """Every HPOQ_* variable is parsed in config/settings.py. Not hpoq's settings: the
    platform markers, CUDA_VISIBLE_DEVICES, and MLflow's own HTTP variables (core/retry.py
    only looks whether a person set them before setting its budget); writing is not
    reading."""
    import re

    src = Path(__file__).resolve().parents[2] / "src" / "hpoq"
    reads = re.compile(r"os\.environ\.get\(|os\.getenv\(|os\.environ\[[^\]]+\](?!\s*=)")
    allowed = {
        "config/settings.py",
        "core/platform.py",
        "core/retry.py",
        "producer/local_cluster.py",
    }
    offenders = [
        f"{path.relative_to(src)}:{number}: {line.strip()}"
        for path in src.rglob("*.py")
        if str(path.relative_to(src)) not in allowed
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if reads.search(line)
    ]
    assert offenders == []
