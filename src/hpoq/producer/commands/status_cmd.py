"""`hpoq status [EXPERIMENT.yaml]`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hpoq.producer.commands.submit_cmd import JsonOption
from hpoq.producer.output import emit, exit_codes, stdout


def status(
    experiment_path: Annotated[
        Path | None, typer.Argument(metavar="[EXPERIMENT.yaml]", help="Also count its trials.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Queue depths, live workers and their jobs, benchmarks in flight, trial counts, failures."""
    from hpoq.config.loader import load_experiment
    from hpoq.core.runtime import Runtime
    from hpoq.producer.services import open_services
    from hpoq.producer.status import cluster_status

    with exit_codes():
        experiment = load_experiment(experiment_path) if experiment_path else None
        services = open_services(Runtime.from_settings(), start_embedded=False)
        try:
            report = cluster_status(
                services, experiment, str(experiment_path) if experiment_path else None
            )
        finally:
            services.close()

    def render() -> None:
        from rich.table import Table

        queues = ", ".join(f"{q}: {n}" for q, n in report["queues"].items())
        stdout.print(f"queues: {queues}", highlight=False)
        workers = Table("worker", "job", "what", title="workers")
        for name, tasks in report["workers"].items():
            for task in tasks or [{}]:
                what = task.get("benchmark_key") or task.get("study_name") or "idle"
                workers.add_row(name, str(task.get("job_id") or "-"), str(what))
        stdout.print(workers)
        stdout.print(f"benchmarks in flight: {len(report['benchmarks_in_flight'])}")
        if report["variants"]:
            table = Table(
                "backbone", "variant", "state", "finished", "running", "failed", "n_trials"
            )
            for v in report["variants"]:
                table.add_row(
                    v["backbone"],
                    v["study_name"],
                    v["state"],
                    str(v["finished"]),
                    str(v["running"]),
                    str(v["failed"]),
                    str(v["n_trials"]),
                )
            stdout.print(table)
        for v in report["incomplete_variants"]:
            stdout.print(f"{v['study_name']}: {v['reason']}", highlight=False)
            stdout.print(f"  to finish it: {v['command']}", highlight=False)
        letters = report["dead_letters"]
        stdout.print(
            f"failed jobs: {len(report['failed_jobs'])}; "
            f"failed benchmarks: {len(report['failed_benchmarks'])}; "
            f"dead letters: {letters['count']}",
            highlight=False,
        )
        for letter in letters["recent"][:3]:
            stdout.print(f"  {letter['queue']}: {letter['reason']}", highlight=False)

    emit(as_json, report, render)
