"""Settings from the environment: every variable hpoq reads is parsed here, and only here.

Precedence, highest first: an explicit argument (CLI flag or function parameter), the
environment variable, the embedded local default. Unset means "use the local default":
an embedded Redis under the output directory, SQLite MLflow and a file-journal Optuna
storage per study. An empty value counts as unset (compose passes `VAR=` for a variable
that is not set on the host).

A value that cannot be used raises SettingsError (exit 2) naming the variable and what it
expects; nothing has been started or written by then.

Not read here, on purpose: the markers of hosted notebook platforms (`COLAB_GPU`, ...,
see core/platform.py), `CUDA_VISIBLE_DEVICES` (CUDA's own, read by the GPU count) and
MLflow's `MLFLOW_HTTP_REQUEST_*` (MLflow reads them; hpoq sets them, see core/retry.py)
and `MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT` (set by core/tracking.py's make_client).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from hpoq.errors import SettingsError
from hpoq.redaction import redact_url

__all__ = ["Settings", "env_name", "load_settings", "redact_url"]

ENV_PREFIX = "HPOQ_"
MLFLOW_URI_ENV = "MLFLOW_TRACKING_URI"
DEFAULT_VISIBILITY_TIMEOUT_S = 12 * 3600
DEFAULT_LEASE_S = 60.0
DEFAULT_MAX_DELIVERIES = 3
BROKER_SCHEMES = ("redis", "rediss", "amqp", "amqps")
AMQP_SCHEMES = ("amqp", "amqps")


def _seconds(description: str) -> str:
    return f"a number of seconds {description}"


# The password runs to the LAST '@' of the authority (urllib and redis-py split there).
class Settings(BaseSettings):
    """hpoq's environment. Secrets are SecretStr so they never print by accident.

    Each field's description says what its variable expects; it is the error message.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", frozen=True, env_ignore_empty=True
    )
    # Trial processes of this worker that share its device (`hpoq worker --slots K` sets it
    # for the worker it starts): each caps its GPU memory to its share.
    worker_slots: int = Field(1, ge=1, le=64)
    # CUDA's own variable (`hpoq worker --gpu N` sets it): with the host name, it names the
    # device whose turns a worker takes (unset: every GPU the host shows; empty: no GPU).
    cuda_visible_devices: str | None = Field(
        None, validation_alias=AliasChoices("CUDA_VISIBLE_DEVICES")
    )

    redis_url: SecretStr | None = Field(None, description="a redis:// or rediss:// URL")
    # Where jobs queue (unset: the Redis above). Counters, leases, dead letters and events
    # stay in that Redis whichever broker carries the jobs.
    broker_url: SecretStr | None = Field(
        None, description="a redis://, rediss://, amqp:// or amqps:// URL (RabbitMQ)"
    )
    optuna_storage: SecretStr | None = Field(None, description="an Optuna storage URL")
    output_dir: Path = Field(Path("outputs"), description="a directory path")
    platform: str | None = Field(None, description="a platform name for output paths")
    mlflow_tracking_uri: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices(MLFLOW_URI_ENV, "HPOQ_MLFLOW_TRACKING_URI"),
        description="an MLflow tracking URI",
    )
    visibility_timeout: int = Field(
        DEFAULT_VISIBILITY_TIMEOUT_S,
        gt=0,
        description="a whole number of seconds above 0 (keep it above the longest job)",
    )
    lease_seconds: float = Field(
        DEFAULT_LEASE_S, gt=0, description=_seconds("above 0 (a claim's lease)")
    )
    max_deliveries: int = Field(
        DEFAULT_MAX_DELIVERIES, ge=1, description="a whole number of deliveries, 1 or more"
    )
    debug: bool = Field(False, description="a boolean (1/0, true/false, yes/no)")
    # Test workloads (hpoq.workers.objectives.cheap, hpoq.workers.bench.cheap).
    cheap_objective_sleep: float = Field(0.0, ge=0, description=_seconds("0 or more"))
    cheap_bench_sleep: float = Field(0.0, ge=0, description=_seconds("0 or more"))

    @field_validator("broker_url")
    @classmethod
    def _broker_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            scheme, sep, rest = value.get_secret_value().partition("://")
            if not sep or not rest or scheme.lower() not in BROKER_SCHEMES:
                raise ValueError("unknown broker URL scheme")
        return value

    @field_validator("lease_seconds", "cheap_objective_sleep", "cheap_bench_sleep")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    def broker(self, redis_url: str) -> str:
        """The broker's URL: HPOQ_BROKER_URL, else `redis_url` (the coordination Redis)."""
        return redis_url if self.broker_url is None else self.broker_url.get_secret_value()

    def output_root(self) -> Path:
        return self.output_dir.expanduser().resolve()

    def describe(self) -> dict[str, str | None]:
        """The settings with secrets redacted, for logs and `hpoq status`."""

        def show(value: SecretStr | None) -> str | None:
            return None if value is None else redact_url(value.get_secret_value())

        return {
            "redis_url": show(self.redis_url),
            "broker_url": show(self.broker_url),
            "optuna_storage": show(self.optuna_storage),
            "mlflow_tracking_uri": show(self.mlflow_tracking_uri),
            "output_dir": str(self.output_root()),
            "platform": self.platform,
        }


def env_name(field: str) -> str:
    """The environment variable behind a Settings field."""
    return MLFLOW_URI_ENV if field == "mlflow_tracking_uri" else ENV_PREFIX + field.upper()


_READ_BY_SETTINGS = {env_name(name) for name in Settings.model_fields} | {MLFLOW_URI_ENV}
_cache: dict[tuple[tuple[str, str], ...], Settings] = {}


def _snapshot() -> tuple[tuple[str, str], ...]:
    """The variables Settings reads (names compared case-insensitively, as it does)."""
    return tuple(
        sorted(
            (name.upper(), value)
            for name, value in os.environ.items()
            if name.upper().startswith(ENV_PREFIX) or name.upper() in _READ_BY_SETTINGS
        )
    )


def load_settings() -> Settings:
    """The settings of the current environment. Raises SettingsError for a bad value.

    Parsed once per distinct environment (functions such as `lease_seconds()` call this
    on every job), and again whenever a variable changes.
    """
    key = _snapshot()
    found = _cache.get(key)
    if found is None:
        try:
            found = Settings()
        except ValidationError as exc:
            raise SettingsError(_describe_error(exc)) from None
        if len(_cache) > 64:
            _cache.clear()
        _cache[key] = found
    return found


def _describe_error(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        info = Settings.model_fields.get(field)
        name = env_name(field) if info is not None else field
        expected = info.description if info is not None else error["msg"]
        shown = redact_url(str(error.get("input", "")))
        lines.append(f"{name}={shown!r}: expected {expected}")
    return "; ".join(lines) or str(exc)


def debug_enabled() -> bool:
    """HPOQ_DEBUG, for the error printer: False when the settings themselves are bad."""
    try:
        return load_settings().debug
    except SettingsError:
        return False
