"""`hpoq status [EXPERIMENT.yaml]`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from hpoq.producer.commands.submit_cmd import JsonOption
from hpoq.producer.output import emit, exit_codes, stdout
from hpoq.producer.tables import cell, new_table, print_table


def status(
    experiment_path: Annotated[
        Path | None, typer.Argument(metavar="[EXPERIMENT.yaml]", help="Also count its trials.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Queue depths, live workers and their jobs, benchmarks in flight, trial counts, failures."""
    from hpoq.config.loader import load_experiment
    from hpoq.core.retry import MlflowHttpPolicy, use_mlflow_http_policy
    from hpoq.core.runtime import Runtime
    from hpoq.producer.services import open_services
    from hpoq.producer.status import cluster_status

    with exit_codes(as_json):
        experiment = load_experiment(experiment_path) if experiment_path else None
        runtime = Runtime.from_settings()
        use_mlflow_http_policy(MlflowHttpPolicy.READ_ONLY)
        services = open_services(runtime, start_embedded=False, snapshot=True)
        try:
            report = cluster_status(
                services, experiment, str(experiment_path) if experiment_path else None
            )
        finally:
            services.close()
            if services.embedded is not None:
                services.embedded.stop()  # the snapshot this command started

    def render() -> None:
        _render_where(report["where"])
        queues = ", ".join(f"{q}: {n}" for q, n in report["queues"].items())
        stdout.print(f"queues: {queues}", highlight=False)
        workers = new_table("worker", "job", "what", title="workers")
        for name, tasks in report["workers"].items():
            for task in tasks or [{}]:
                what = task.get("benchmark_key") or task.get("study_name") or "idle"
                workers.add_row(cell(name), cell(task.get("job_id") or "-"), cell(what))
        if report["workers"]:
            print_table(stdout, workers)
        else:
            stdout.print("workers: none answered")
        stdout.print(f"benchmarks in flight: {len(report['benchmarks_in_flight'])}")
        if report["variants"]:
            numbers = ("finished", "running", "failed", "n_trials")
            table = new_table("backbone", "variant", "state", *numbers, right=numbers)
            for v in report["variants"]:
                table.add_row(
                    cell(v["backbone"]),
                    cell(v["study_name"]),
                    cell(v["state"]),
                    str(v["finished"]),
                    str(v["running"]),
                    str(v["failed"]),
                    str(v["n_trials"]),
                )
            print_table(stdout, table)
        if report["final_trainings"]:
            table = new_table(
                "backbone", "final variant", "seed", "state", "source", right=("seed",)
            )
            for f in report["final_trainings"]:
                table.add_row(
                    cell(f["backbone"]),
                    cell(f["study_name"]),
                    str(f["seed"]),
                    cell(f["state"]),
                    cell(f["source"]),
                )
            print_table(stdout, table)
            for f in report["final_trainings"]:
                if f["state"] == "failed":
                    stdout.print(
                        f"{escape(f['study_name'])} failed: {escape(str(f['error']))}",
                        highlight=False,
                    )
                    stdout.print(f"  to retry it: {escape(f['command'])}", highlight=False)
        for v in report["incomplete_variants"]:
            stdout.print(f"{escape(v['study_name'])}: {escape(v['reason'])}", highlight=False)
            stdout.print(f"  to finish it: {escape(v['command'])}", highlight=False)
        letters = report["dead_letters"]
        stdout.print(
            f"failed jobs: {len(report['failed_jobs'])}; "
            f"failed benchmarks: {len(report['failed_benchmarks'])}; "
            f"dead letters: {letters['count']}",
            highlight=False,
        )
        for letter in letters["recent"][:3]:
            stdout.print(
                f"  {escape(letter['queue'])}: {escape(letter['reason'])}", highlight=False
            )

    emit(as_json, report, render)


def _render_where(where: dict[str, Any]) -> None:
    if where["redis_source"] == "snapshot":
        stdout.print(
            "no embedded Redis is running: read from a copy of what the last run left",
            highlight=False,
        )
    for label, key in (
        ("redis", "redis"),
        ("outputs", "outputs"),
        ("worker logs", "worker_logs"),
        ("MLflow", "mlflow"),
        ("studies", "studies"),
        ("report", "report"),
    ):
        if where.get(key):
            stdout.print(f"{label}: {escape(str(where[key]))}", highlight=False)
