"""The `hpoq` command line. Imports stay cheap: each command imports what it needs."""

from __future__ import annotations

from typing import Annotated

import typer

from hpoq import __version__
from hpoq.producer.commands import (
    benchmark_cmd,
    config_cmd,
    report_cmd,
    retrieve_cmd,
    run_cmd,
    status_cmd,
    submit_cmd,
    train_final_cmd,
    worker_cmd,
)

app = typer.Typer(
    name="hpoq",
    help="Numbered HPO study variants on GPU workers; best trials benchmarked exactly once.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(config_cmd.app, name="config")
app.command("submit")(submit_cmd.submit)
app.command("worker")(worker_cmd.worker)
app.command("retrieve")(retrieve_cmd.retrieve)
app.command("benchmark")(benchmark_cmd.benchmark)
app.command("train-final")(train_final_cmd.train_final)
app.command("run")(run_cmd.run_command)
app.command("status")(status_cmd.status)
app.command("report")(report_cmd.report)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"hpoq {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """hpoq: run hyperparameter searches and benchmark the winners."""


def usage_error_class() -> type[Exception]:
    """click's ClickException as typer ships it (typer vendors click), found through the
    public `typer.BadParameter` (tests/producer/test_json_errors.py fails if it moves)."""
    for cls in typer.BadParameter.__mro__:
        if cls.__name__ == "ClickException":
            return cls
    raise RuntimeError("typer.BadParameter no longer derives from click's ClickException")


def main() -> None:
    """The console script. Usage errors (an unknown option, a missing argument) exit 2 as
    click has them; under --json they also print the error document on stdout."""
    import sys

    from typer import rich_utils

    from hpoq.producer.output import error_document, wants_json, write_json

    try:
        code = app(standalone_mode=False)
    except usage_error_class() as exc:
        rich_utils.rich_format_error(exc)  # type: ignore[arg-type]
        exit_code = int(getattr(exc, "exit_code", 2))
        if wants_json(sys.argv[1:]):
            format_message = getattr(exc, "format_message", None)
            message = str(format_message() if callable(format_message) else exc)
            write_json(error_document("usage", message, exit_code))
        sys.exit(exit_code)
    sys.exit(code if isinstance(code, int) else 0)
