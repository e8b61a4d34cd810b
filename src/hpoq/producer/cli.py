"""The `hpoq` command line. Imports stay cheap: each command imports what it needs."""

from __future__ import annotations

from typing import Annotated

import typer

from hpoq import __version__
from hpoq.producer.commands import (
    benchmark_cmd,
    config_cmd,
    retrieve_cmd,
    run_cmd,
    status_cmd,
    submit_cmd,
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
app.command("run")(run_cmd.run_command)
app.command("status")(status_cmd.status)


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


def main() -> None:
    app()
