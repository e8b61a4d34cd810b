"""`hpoq config validate PATH`: load an experiment and print it resolved."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
        hpo = experiment.hpo
        stdout.print(f"[green]valid[/]: experiment [bold]{experiment.name}[/] ({path})")
        stdout.print(f"  backbones: {', '.join(b.name for b in hpo.backbones)}")
        stdout.print(f"  n_trials: {hpo.n_trials}; search space: {', '.join(hpo.search_space)}")
        stdout.print(f"  data: {experiment.data.name} v{experiment.data.version}")
        stdout.print(
            f"  mlflow: {experiment.hpo_experiment_name}, {experiment.benchmark_experiment_name}"
        )

    emit(as_json, resolved, render)
