"""`hpoq config validate PATH`: load an experiment and print it resolved."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from hpoq.producer.output import emit, exit_codes, stdout

app = typer.Typer(help="Inspect and validate configuration.", no_args_is_help=True)


@app.command("validate")
def validate(
    path: Annotated[Path, typer.Argument(help="Experiment YAML file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Validate an experiment and every file it names; print the resolved experiment."""
    from hpoq.config.loader import load_experiment

    with exit_codes():
        experiment = load_experiment(path)
    resolved = experiment.to_json()

    def render() -> None:
        # Values come from files and the command line: print them as text, never as markup.
        hpo = experiment.hpo
        shown = escape(str(path))
        stdout.print(f"[green]valid[/]: experiment [bold]{experiment.name}[/] ({shown})")
        for line in (
            f"  backbones: {', '.join(b.name for b in hpo.backbones)}",
            f"  n_trials: {hpo.n_trials}; search space: {', '.join(hpo.search_space)}",
            f"  data: {experiment.data.name} v{experiment.data.version}",
            f"  mlflow: {experiment.hpo_experiment_name}, {experiment.benchmark_experiment_name}",
        ):
            stdout.print(line, markup=False, highlight=False)

    emit(as_json, resolved, render)
