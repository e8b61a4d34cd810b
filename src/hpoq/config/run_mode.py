"""The one place in hpoq that reads `run.mode`.

Every stage asks this module which mode applies; nothing else looks at the key.

Rules:
- A config without a mode gets `default` (reuse_if_exists unless the caller says otherwise).
- A benchmark or final-training config whose mode is null inherits the HPO config's mode.
- A mode given on the command line overrides the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from hpoq.config.base import RunMode
from hpoq.errors import InputError

__all__ = [
    "RunMode",
    "get_benchmark_run_mode",
    "get_final_training_run_mode",
    "get_run_mode",
    "is_force_new",
    "parse_run_mode",
]


def parse_run_mode(value: str | RunMode, field: str = "run.mode") -> RunMode:
    """Turn a string into a RunMode, naming `field` when it is not one."""
    try:
        return RunMode(value)
    except ValueError:
        allowed = ", ".join(m.value for m in RunMode)
        raise InputError(
            f"{field}: {value!r} is not a run mode (expected one of {allowed})"
        ) from None


def _configured_mode(config: Mapping[str, Any] | BaseModel | None) -> RunMode | None:
    if config is None:
        return None
    if isinstance(config, BaseModel):
        run = getattr(config, "run", None)
        mode = getattr(run, "mode", None) if run is not None else None
    else:
        run = config.get("run") or {}
        if not isinstance(run, Mapping):
            raise InputError("run: expected a mapping with a 'mode' key")
        mode = run.get("mode")
    return None if mode is None else parse_run_mode(mode)


def get_run_mode(
    config: Mapping[str, Any] | BaseModel | None,
    default: RunMode = RunMode.REUSE_IF_EXISTS,
    override: str | RunMode | None = None,
) -> RunMode:
    """The mode for a stage: `override` (CLI) > the config's run.mode > `default`."""
    if override is not None:
        return parse_run_mode(override, field="--run-mode")
    return _configured_mode(config) or default


def get_benchmark_run_mode(
    benchmark_config: Mapping[str, Any] | BaseModel | None,
    hpo_config: Mapping[str, Any] | BaseModel | None,
    override: str | RunMode | None = None,
) -> RunMode:
    """The benchmark mode: `override` > benchmark run.mode > the HPO mode (null inherits)."""
    if override is not None:
        return parse_run_mode(override, field="--run-mode")
    return _configured_mode(benchmark_config) or get_run_mode(hpo_config)


def get_final_training_run_mode(
    final_config: Mapping[str, Any] | BaseModel | None,
    hpo_config: Mapping[str, Any] | BaseModel | None,
    override: str | RunMode | None = None,
) -> RunMode:
    """The final-training mode: `override` > final-training run.mode > the HPO mode."""
    if override is not None:
        return parse_run_mode(override, field="--run-mode")
    return _configured_mode(final_config) or get_run_mode(hpo_config)


def is_force_new(config: Mapping[str, Any] | BaseModel | None) -> bool:
    return get_run_mode(config) is RunMode.FORCE_NEW
