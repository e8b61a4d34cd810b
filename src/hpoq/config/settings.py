"""Settings from the environment.

Precedence, highest first: an explicit argument (CLI flag or function parameter), the
environment variable, the embedded local default. Unset means "use the local default":
an embedded Redis under the output directory, SQLite MLflow and a file-journal Optuna
storage per study.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from hpoq.redaction import redact_url

__all__ = ["Settings", "load_settings", "redact_url"]


# The password runs to the LAST '@' of the authority (urllib and redis-py split there).
class Settings(BaseSettings):
    """hpoq's environment. Secrets are SecretStr so they never print by accident."""

    model_config = SettingsConfigDict(env_prefix="HPOQ_", extra="ignore", frozen=True)

    redis_url: SecretStr | None = None
    optuna_storage: SecretStr | None = None
    output_dir: Path = Path("outputs")
    platform: str | None = Field(None, description="Override the detected platform name")
    mlflow_tracking_uri: SecretStr | None = Field(
        None, validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "HPOQ_MLFLOW_TRACKING_URI")
    )
    # Trial processes of this worker that share its device (`hpoq worker --slots K` sets it
    # for the worker it starts): each caps its GPU memory to its share.
    worker_slots: int = Field(1, ge=1, le=64)
    # CUDA's own variable (`hpoq worker --gpu N` sets it): with the host name, it names the
    # device whose turns a worker takes (unset: every GPU the host shows; empty: no GPU).
    cuda_visible_devices: str | None = Field(
        None, validation_alias=AliasChoices("CUDA_VISIBLE_DEVICES")
    )

    def output_root(self) -> Path:
        return self.output_dir.expanduser().resolve()

    def describe(self) -> dict[str, str | None]:
        """The settings with secrets redacted, for logs and `hpoq status`."""

        def show(value: SecretStr | None) -> str | None:
            return None if value is None else redact_url(value.get_secret_value())

        return {
            "redis_url": show(self.redis_url),
            "optuna_storage": show(self.optuna_storage),
            "mlflow_tracking_uri": show(self.mlflow_tracking_uri),
            "output_dir": str(self.output_root()),
            "platform": self.platform,
        }


def load_settings() -> Settings:
    return Settings()
