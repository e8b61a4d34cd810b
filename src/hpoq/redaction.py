"""Hiding secrets in URLs before they reach a log line, an error or the CLI's output."""

from __future__ import annotations

import re

_URL_PASSWORD = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:@/\s]*):(?P<pw>[^/\s]*)@"
)


def redact_url(url: str) -> str:
    """Hide the password part of every URL in `url` (scheme://user:secret@host -> user:***)."""
    return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)
