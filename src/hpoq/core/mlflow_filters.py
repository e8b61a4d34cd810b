"""Quoting values for MLflow filter strings."""

from __future__ import annotations

from hpoq.errors import InputError


def quote_filter_value(value: str) -> str:
    """A string literal for an MLflow filter: single-quoted, with quotes escaped."""
    if "'" in value and '"' in value:
        raise InputError(f"{value!r} mixes both quote characters and cannot be filtered on")
    if "'" in value:
        return '"' + value + '"'
    return "'" + value + "'"
