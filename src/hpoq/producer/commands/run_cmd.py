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
from hpoq.producer.commands.train_final_cmd import render_final_models
from hpoq.producer.output import emit, exit_codes, fail, fail_each, stderr, stdout
from hpoq.producer.tables import cell, new_table, number, print_table


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
    from hpoq.config.loader import load_experiment
    from hpoq.config.run_mode import parse_run_mode
    from hpoq.core.retry import MlflowHttpPolicy, use_mlflow_http_policy
    from hpoq.core.runtime import Runtime
    from hpoq.producer.local_run import run_experiment
    from hpoq.producer.progress_display import run_display
    from hpoq.producer.report.build import default_report_path
    from hpoq.producer.signals import Interrupted, StopSignals

    with exit_codes(as_json):
        experiment = load_experiment(experiment_path)
        if run_mode is not None:
            parse_run_mode(run_mode, field="--run-mode")
        runtime = Runtime.from_settings()
        use_mlflow_http_policy(MlflowHttpPolicy.WORKER)  # the workers inherit it
        report_path = default_report_path(runtime, experiment)
        with StopSignals() as signals, run_display(stdout, stderr) as events:

            def announce(message: str) -> None:
                stderr.print(f"[yellow]{escape(message)}[/]", highlight=False)

            try:
                report = run_experiment(
                    experiment,
                    runtime,
                    workers=workers,
                    mode_override=run_mode,
                    events=events,
                    signals=signals,
                    announce=announce,
                    report_path=str(report_path),
                )
            except Interrupted as exc:
                fail(
                    f"{exc}: what it started is stopped; the next run resumes",
                    exc.exit_code,
                    kind="interrupted",
                    as_json=as_json,
                )
        html = _write_report(experiment, runtime, report_path)
    document = report.to_json() | {"report": html}

    def render() -> None:
        for message in report.warnings:
            stderr.print(f"[yellow]warning:[/] {escape(message)}", highlight=False)
        if not report.new_work:
            stdout.print(
                "nothing new to do: every variant is complete, every final model trained and "
                "every model benchmarked"
            )
        _render_best(report.best_trials, experiment.hpo.objective.metric)
        if report.missing:
            stdout.print(f"no trials: {', '.join(report.missing)}", highlight=False)
        if report.final_models:
            render_final_models(report.final_models, experiment.hpo.objective.metric)
        _render_benchmarks(report.benchmarks)
        _render_report(html)

    if report.succeeded:
        emit(as_json, document, render)
        return
    if not as_json:
        render()
    messages = [_describe(failure) for failure in report.failures]
    fail_each(messages, as_json=as_json, document=document)


def _write_report(experiment: Any, runtime: Any, path: Path) -> dict[str, Any]:
    """Write the HTML report and log it to MLflow; a failure is a warning, not the run's."""
    from hpoq.producer.report.build import write_report

    try:
        return write_report(experiment, runtime, path).to_json()
    except Exception as exc:
        return {"path": None, "artifact_uri": None, "error": f"{type(exc).__name__}: {exc}"}


def _render_report(html: dict[str, Any]) -> None:
    if html.get("path"):
        stdout.print(f"report: {escape(html['path'])}", highlight=False)
    if html.get("artifact_uri"):
        stdout.print(f"report in MLflow: {escape(html['artifact_uri'])}", highlight=False)
    for problem in [html.get("error"), html.get("mlflow_error")]:
        if problem:
            stderr.print(f"[yellow]warning:[/] report: {escape(problem)}", highlight=False)


def _render_best(best_trials: list[dict[str, Any]], metric: str) -> None:
    best = new_table(
        "backbone",
        "variant",
        "trial",
        metric,
        "source",
        title="best trials",
        right=("trial", metric),
    )
    for t in best_trials:
        best.add_row(
            cell(t["backbone"]),
            cell(t["study_name"]),
            str(t["trial_number"]),
            f"{t['value']:.4f}",
            t["source"],
        )
    print_table(stdout, best)


BENCHMARK_NUMBERS = ("batch", "timed", "p50 ms", "p95 ms", "p99 ms", "sentences/s", "peak MiB")


def _render_benchmarks(rows: list[dict[str, Any]]) -> None:
    bench = new_table(
        "backbone",
        "variant",
        "trial",
        "precision",
        "padding",
        *BENCHMARK_NUMBERS,
        title="benchmarks",
        right=BENCHMARK_NUMBERS,
    )
    for row in rows:
        for e in row.get("entries", []) or [{}]:
            bench.add_row(
                cell(row["backbone"]),
                cell(row["study_name"]),
                str(row["trial"]),
                str(e.get("precision", "-")),
                str(e.get("padding") or "-"),
                str(e.get("batch_size", "-")),
                str(e.get("iterations", "-")),
                number(e.get("latency_p50_ms")),
                number(e.get("latency_p95_ms")),
                number(e.get("latency_p99_ms")),
                number(e.get("throughput_sentences_per_s"), 1),
                number(e.get("peak_memory_mb"), 1),
            )
    print_table(stdout, bench)


def _describe(failure: dict[str, Any]) -> str:
    return (
        f"{failure['message']}; first worker error: {failure['error']} "
        f"(worker logs: {failure['logs']})"
    )
