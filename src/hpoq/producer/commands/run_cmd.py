"""`hpoq run EXPERIMENT.yaml`: everything on one machine, with embedded defaults.

Exit 0 when every backbone has a completed trial and every best trial is measured; 1
when not, after printing the results and, for each failure, the first error a worker
recorded and where the worker logs are; 2 for bad input (nothing started); 128 + N when
stopped by signal N (SIGINT, SIGTERM, SIGHUP), once the workers and the embedded Redis
are stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from hpoq.producer.commands.submit_cmd import JsonOption, RunModeOption
from hpoq.producer.output import emit, exit_codes, fail, fail_each, stderr, stdout


def run_command(
    experiment_path: Annotated[Path, typer.Argument(metavar="EXPERIMENT.yaml")],
    workers: Annotated[
        int | None,
        typer.Option("--workers", min=1, max=64, help="Local workers (default: one per GPU)."),
    ] = None,
    run_mode: RunModeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run the sweep and its benchmarks on this machine, then print the results."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from hpoq.config.loader import load_experiment
    from hpoq.config.run_mode import parse_run_mode
    from hpoq.core.retry import MlflowHttpPolicy, use_mlflow_http_policy
    from hpoq.core.runtime import Runtime
    from hpoq.producer.local_run import run_experiment
    from hpoq.producer.signals import Interrupted, StopSignals

    with exit_codes(as_json):
        experiment = load_experiment(experiment_path)
        if run_mode is not None:
            parse_run_mode(run_mode, field="--run-mode")
        runtime = Runtime.from_settings()
        use_mlflow_http_policy(MlflowHttpPolicy.WORKER)  # the workers inherit it
        bars: dict[str, Any] = {}
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
        with (
            StopSignals() as signals,
            Progress(*columns, console=stderr, transient=False) as progress,
        ):

            def show(label: str, done: int, total: int) -> None:
                if label not in bars:
                    bars[label] = progress.add_task(label, total=total)
                progress.update(bars[label], completed=done, total=total)

            def announce(message: str) -> None:
                stderr.print(f"[yellow]{escape(message)}[/]", highlight=False)

            try:
                report = run_experiment(
                    experiment,
                    runtime,
                    workers=workers,
                    mode_override=run_mode,
                    progress=show,
                    signals=signals,
                    announce=announce,
                )
            except Interrupted as exc:
                fail(
                    f"{exc}: what it started is stopped; the next run resumes",
                    exc.exit_code,
                    kind="interrupted",
                    as_json=as_json,
                )

    def render() -> None:
        from rich.table import Table

        for message in report.warnings:
            stderr.print(f"[yellow]warning:[/] {message}", highlight=False)
        if not report.new_work:
            stdout.print(
                "nothing new to do: every variant is complete and every best trial is benchmarked"
            )
        metric = experiment.hpo.objective.metric
        best = Table("backbone", "variant", "trial", metric, "source", title="best trials")
        for t in report.best_trials:
            best.add_row(
                t["backbone"],
                t["study_name"],
                str(t["trial_number"]),
                f"{t['value']:.4f}",
                t["source"],
            )
        stdout.print(best)
        if report.missing:
            stdout.print(f"no trials: {', '.join(report.missing)}", highlight=False)
        bench = Table(
            "backbone",
            "variant",
            "trial",
            "precision",
            "padding",
            "batch",
            "p50 ms",
            "p95 ms",
            "sentences/s",
            title="benchmarks",
        )
        for row in report.benchmarks:
            for e in row.get("entries", []) or [{}]:
                bench.add_row(
                    row["backbone"],
                    row["study_name"],
                    str(row["trial"]),
                    str(e.get("precision", "-")),
                    str(e.get("padding") or "-"),
                    str(e.get("batch_size", "-")),
                    _num(e.get("latency_p50_ms")),
                    _num(e.get("latency_p95_ms")),
                    _num(e.get("throughput_sentences_per_s")),
                )
        stdout.print(bench)

    if report.succeeded:
        emit(as_json, report.to_json(), render)
        return
    if not as_json:
        render()
    messages = [_describe(failure) for failure in report.failures]
    fail_each(messages, as_json=as_json, document=report.to_json())


def _describe(failure: dict[str, Any]) -> str:
    return (
        f"{failure['message']}; first worker error: {failure['error']} "
        f"(worker logs: {failure['logs']})"
    )


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
