"""The platform name used in output paths (local, colab, kaggle, azureml)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from hpoq.config.base import check_safe_name
from hpoq.errors import UnsafeNameError

# Each hosted notebook platform sets one of these in every kernel it starts.
_MARKERS: tuple[tuple[str, str], ...] = (
    ("colab", "COLAB_RELEASE_TAG"),
    ("colab", "COLAB_GPU"),
    ("kaggle", "KAGGLE_KERNEL_RUN_TYPE"),
    ("kaggle", "KAGGLE_URL_BASE"),
    ("azureml", "AZUREML_RUN_ID"),
    ("azureml", "AZUREML_EXPERIMENT_ID"),
)


def detect_platform(environ: Mapping[str, str] | None = None, override: str | None = None) -> str:
    """`override` (HPOQ_PLATFORM) when given, else the first platform whose marker is set."""
    env = os.environ if environ is None else environ
    chosen = override or env.get("HPOQ_PLATFORM")
    if chosen:
        try:
            return check_safe_name(chosen)
        except ValueError as exc:
            raise UnsafeNameError(f"HPOQ_PLATFORM: {exc}") from None
    for name, marker in _MARKERS:
        if env.get(marker):
            return name
    return "local"
