"""The resolved environment of one hpoq process: settings, output layout, stores."""

from __future__ import annotations

from dataclasses import dataclass

from hpoq.config.hpo import CheckpointConfig
from hpoq.config.settings import Settings, load_settings
from hpoq.core.paths import OutputLayout
from hpoq.core.platform import detect_platform
from hpoq.core.studies import StudyStore
from hpoq.core.tracking import tracking_uri


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    layout: OutputLayout

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Runtime:
        settings = settings or load_settings()
        platform = detect_platform(override=settings.platform)
        return cls(settings=settings, layout=OutputLayout(settings.output_root(), platform))

    def study_store(self, checkpoint: CheckpointConfig) -> StudyStore:
        shared = self.settings.optuna_storage
        return StudyStore(
            self.layout, checkpoint, shared.get_secret_value() if shared is not None else None
        )

    def mlflow_uri(self) -> str:
        return tracking_uri(self.settings, self.layout)
