"""CLI output conventions.

`--json` prints one JSON document on stdout, success or failure; otherwise human tables go
to stdout and progress and warnings to stderr. A failure always prints one readable
message on stderr; under `--json` it also prints `{"error": {"kind", "message",
"exit_code"}}` on stdout (merged into the command's own document when it has one).

Exit codes (the README's list):
- 0: success;
- 1: the work did not produce what was asked (a backbone without a completed trial, a
  benchmark that failed), a service that cannot be reached, or a bug;
- 2: bad input: a config file, an argument, an environment variable, a data file or a
  model directory; nothing was written;
- 128 + N: stopped by signal N after cleaning up: 130 Ctrl-C (SIGINT), 143 SIGTERM,
  129 SIGHUP.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from hpoq.errors import (
    ConfigError,
    HpoqError,
    InputError,
    NothingToDo,
    ServiceError,
    SettingsError,
    UnsafeNameError,
)
from hpoq.redaction import redact_url

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT

stdout = Console(soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True)

# Most specific first: the first class an error is an instance of names its kind.
_KINDS: tuple[tuple[type[BaseException], str, int], ...] = (
    (SettingsError, "environment", EXIT_BAD_INPUT),
    (ConfigError, "config", EXIT_BAD_INPUT),
    (UnsafeNameError, "unsafe_name", EXIT_BAD_INPUT),
    (InputError, "input", EXIT_BAD_INPUT),
    (ServiceError, "service", EXIT_FAILURE),
    (NothingToDo, "work_failed", EXIT_FAILURE),
    (HpoqError, "failure", EXIT_FAILURE),
)


def emit(as_json: bool, payload: Any, render: Callable[[], None]) -> None:
    """Print the command's result: JSON when asked, else the human rendering."""
    if as_json:
        write_json(payload)
    else:
        render()


def write_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def error_document(kind: str, message: str, exit_code: int) -> dict[str, Any]:
    return {"error": {"kind": kind, "message": redact_url(message), "exit_code": exit_code}}


def fail(
    message: str,
    code: int,
    *,
    kind: str = "failure",
    as_json: bool = False,
    document: dict[str, Any] | None = None,
) -> NoReturn:
    """Print the failure (stderr; and stdout under --json) and exit with `code`.

    `document` is the command's own JSON result, when it has one: the error joins it, so
    stdout still holds exactly one document."""
    stderr.print(f"[bold red]error:[/] {escape(redact_url(message))}", highlight=False)
    if as_json:
        write_json((document or {}) | error_document(kind, message, code))
    raise typer.Exit(code)


def fail_each(
    messages: list[str], *, as_json: bool, document: dict[str, Any], kind: str = "work_failed"
) -> NoReturn:
    """Several failures of one command: each on stderr, then exit 1 with the last (and the
    count) as the error of `document`."""
    for message in messages[:-1]:
        stderr.print(f"[bold red]error:[/] {escape(redact_url(message))}", highlight=False)
    summary = messages[-1] + (f" ({len(messages)} failures in all)" if len(messages) > 1 else "")
    fail(summary, EXIT_FAILURE, kind=kind, as_json=as_json, document=document)


def classify(exc: BaseException) -> tuple[str, int]:
    """(kind, exit code) of an error."""
    interrupted = getattr(exc, "exit_code", None)
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", interrupted if isinstance(interrupted, int) else EXIT_INTERRUPTED
    for cls, kind, code in _KINDS:
        if isinstance(exc, cls):
            return kind, code
    return "internal", EXIT_FAILURE


@contextmanager
def exit_codes(as_json: bool = False) -> Iterator[None]:
    """Map hpoq's error tree onto exit codes, with one readable message and no traceback."""
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except KeyboardInterrupt as exc:
        kind, code = classify(exc)
        fail(str(exc) or "interrupted", code, kind=kind, as_json=as_json)
    except HpoqError as exc:
        kind, code = classify(exc)
        fail(str(exc), code, kind=kind, as_json=as_json)
    except Exception as exc:
        # A bug or an unexpected service failure: one line, exit 1; the traceback on demand.
        from hpoq.config.settings import debug_enabled

        if debug_enabled():
            traceback.print_exc()
        fail(f"{type(exc).__name__}: {exc}", EXIT_FAILURE, kind="internal", as_json=as_json)


def wants_json(argv: list[str]) -> bool:
    """Whether a command line asks for --json (for errors found before a command runs)."""
    return "--json" in argv[: argv.index("--")] if "--" in argv else "--json" in argv
