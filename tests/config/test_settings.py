"""Settings from the environment; secrets never printed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from hpoq.config.settings import Settings, load_settings, redact_url

ENV_NAMES = (
    "HPOQ_REDIS_URL",
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
    s = Settings()
    described = s.describe()
    for key in ("redis_url", "optuna_storage", "mlflow_tracking_uri"):
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
