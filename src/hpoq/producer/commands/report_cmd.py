"""`hpoq report EXPERIMENT.yaml [--out FILE]`: the experiment's HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from hpoq.producer.commands.submit_cmd import JsonOption
from hpoq.producer.output import emit, exit_codes, stderr, stdout


def report(
    experiment_path: Annotated[Path, typer.Argument(metavar="EXPERIMENT.yaml")],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Where to write the HTML (default: <output>/reports/<name>.html)."
        ),
    ] = None,
    no_mlflow: Annotated[
        bool, typer.Option("--no-mlflow", help="Do not log the report to MLflow.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Write one self-contained HTML page: searches, best trials, benchmarks, failures."""
    from hpoq.config.loader import load_experiment
    from hpoq.core.retry import MlflowHttpPolicy, use_mlflow_http_policy
    from hpoq.core.runtime import Runtime
    from hpoq.producer.report.build import write_report
    from hpoq.producer.services import quiet_libraries

    with exit_codes(as_json):
        experiment = load_experiment(experiment_path)
        runtime = Runtime.from_settings()
        use_mlflow_http_policy(MlflowHttpPolicy.READ_ONLY)
        quiet_libraries()
        written = write_report(
            experiment, runtime, out.resolve() if out else None, log_to_mlflow=not no_mlflow
        )

    def render() -> None:
        for warning in written.warnings:
            stderr.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
        if written.mlflow_error:
            stderr.print(f"[yellow]warning:[/] {escape(written.mlflow_error)}", highlight=False)
        stdout.print(f"report: {escape(written.path)}", highlight=False)
        if written.artifact_uri:
            stdout.print(f"report in MLflow: {escape(written.artifact_uri)}", highlight=False)

    emit(as_json, written.to_json(), render)
