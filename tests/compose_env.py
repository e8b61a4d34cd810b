"""docker compose's `.env` file and variable interpolation, for tests that have no Docker
engine to run `docker compose config`.

The rules are the Compose Specification's: `$$` is a literal `$`; `${VAR}` and `$VAR`;
`${VAR:-default}` (default when unset or empty), `${VAR-default}` (when unset);
`${VAR:?message}` (an error naming VAR when unset or empty), `${VAR?message}` (when
unset); `${VAR:+other}`, `${VAR+other}`. Values are interpolated, keys are not. Nested
expressions are refused: the compose file does not use them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

EXPRESSION = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^${}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<invalid>))"
)


class InterpolationError(ValueError):
    """Raised where `docker compose` would refuse the file: a required variable without a
    value, or an expression it cannot parse."""


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; blank lines and `#` comments skipped; surrounding quotes removed."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def expressions(text: str) -> list[re.Match[str]]:
    """Every `${...}` or `$NAME` in `text` (escaped `$$` left out)."""
    return [m for m in EXPRESSION.finditer(text) if not m.group("escaped")]


def interpolate_string(text: str, env: Mapping[str, str], where: str = "") -> str:
    def substitute(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        if match.group("invalid") is not None:
            raise InterpolationError(f"invalid interpolation format for {where}: {text!r}")
        name = match.group("braced") or match.group("named")
        op, arg = match.group("op"), match.group("arg") or ""
        value = env.get(name)
        missing = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in (":?", "?") and missing:
            raise InterpolationError(
                f"error while interpolating {where}: required variable {name} is missing a "
                f"value: {arg}"
            )
        if op in (":-", "-") and missing:
            return arg
        if op in (":+", "+"):
            return "" if missing else arg
        return value or ""

    return EXPRESSION.sub(substitute, text)


def interpolate(node: Any, env: Mapping[str, str], where: str = "") -> Any:
    """The loaded compose document with every string value interpolated, as compose does
    before it validates the result against the schema."""
    if isinstance(node, dict):
        return {
            key: interpolate(value, env, f"{where}.{key}" if where else str(key))
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [interpolate(value, env, f"{where}[{i}]") for i, value in enumerate(node)]
    if isinstance(node, str):
        return interpolate_string(node, env, where)
    return node
