"""The `--json` failure document every command prints on stdout when it fails."""

from __future__ import annotations

import json
from typing import Any


def error_document(stdout: str, exit_code: int, kind: str | None = None) -> dict[str, Any]:
    """Parse stdout as one JSON document holding {"error": {kind, message, exit_code}};
    returns the error."""
    document = json.loads(stdout)
    error = document["error"]
    assert set(error) == {"kind", "message", "exit_code"}, error
    assert error["exit_code"] == exit_code, error
    assert isinstance(error["message"], str) and error["message"], error
    if kind is not None:
        assert error["kind"] == kind, error
    return error  # type: ignore[no-any-return]
