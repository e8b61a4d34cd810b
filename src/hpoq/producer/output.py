"""CLI output conventions: `--json` prints one JSON document on stdout; otherwise
human tables go to stdout and progress and warnings to stderr. Exit codes: 0 success,
2 bad input, 1 anything else."""

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

from hpoq.errors import HpoqError, InputError
from hpoq.redaction import redact_url

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2

stdout = Console(soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True)


def emit(as_json: bool, payload: Any, render: Callable[[], None]) -> None:
    """Print the command's result: JSON when asked, else the human rendering."""
    if as_json:
        sys.stdout.write(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
        sys.stdout.flush()
    else:
        render()


def fail(message: str, code: int) -> NoReturn:
    stderr.print(f"[bold red]error:[/] {escape(redact_url(message))}", highlight=False)
    raise typer.Exit(code)


@contextmanager
def exit_codes() -> Iterator[None]:
    """Map hpoq's error tree onto exit codes, with one readable message and no traceback."""
    try:
        yield
    except InputError as exc:
        fail(str(exc), EXIT_BAD_INPUT)
    except HpoqError as exc:
        fail(str(exc), EXIT_FAILURE)
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:
        # A bug or an unexpected service failure: one line, exit 1; the traceback on demand.
        from hpoq.config.settings import debug_enabled

        if debug_enabled():
            traceback.print_exc()
        fail(f"{type(exc).__name__}: {exc}", EXIT_FAILURE)
