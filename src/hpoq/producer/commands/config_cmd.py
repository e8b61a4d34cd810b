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
    """Validate an experiment, every file it names, its data splits and local model
    directories; print the resolved experiment and paths. Writes nothing."""
    from hpoq.config.loader import load_experiment
    from hpoq.core.input_checks import check_inputs
    from hpoq.core.runtime import Runtime

    with exit_codes(as_json):
        experiment = load_experiment(path)
        runtime = Runtime.from_settings()
        inputs = check_inputs(experiment, runtime.layout, prepare=False)
    resolved = experiment.to_json() | {"inputs": inputs.to_json()}

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
        lines = [f"  {name} file: {file}" for name, file in inputs.files.items()]
        lines.append(f"  data directory: {inputs.data_dir}")
        for split in inputs.splits:
            count = "" if split.sentences is None else f", {split.sentences} sentences"
            lines.append(f"    {split.split}: {split.path} ({split.how}{count})")
        lines += [f"  model {m.backbone}: {m.path}" for m in inputs.models]
        for line in lines:
            stdout.print(line, markup=False, highlight=False)

    emit(as_json, resolved, render)
