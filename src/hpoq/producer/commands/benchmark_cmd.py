"""`hpoq benchmark [retry-failed] [EXPERIMENT.yaml]`.

With `--wait`, exit 1 when a benchmark failed, after printing the error each one got.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from hpoq.producer.commands.submit_cmd import JsonOption, RunModeOption
from hpoq.producer.output import emit, exit_codes, fail_each, stderr, stdout
from hpoq.producer.tables import cell, new_table, print_table

RETRY_FAILED = "retry-failed"
SUCCEEDED = ("measured", "already_done", "superseded")


def benchmark(
    target: Annotated[str, typer.Argument(metavar="[retry-failed] EXPERIMENT.yaml")],
    experiment_path: Annotated[Path | None, typer.Argument(hidden=True)] = None,
    run_mode: RunModeOption = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the jobs to the end.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Benchmark the best trials: skip what is measured or in flight, enqueue the rest.

    `hpoq benchmark retry-failed [EXPERIMENT.yaml]` re-enqueues every key whose latest
    attempt failed and that has no success since. With `--wait`, a benchmark that failed
    makes the exit code 1.
    """
    from hpoq.config.loader import load_experiment
    from hpoq.config.run_mode import parse_run_mode
    from hpoq.core.retry import MlflowHttpPolicy, use_mlflow_http_policy
    from hpoq.core.runtime import Runtime
    from hpoq.errors import InputError
    from hpoq.producer.benchmark import benchmark_experiment, retry_failed
    from hpoq.producer.services import open_services

    with exit_codes(as_json):
        retrying = target == RETRY_FAILED
        path = experiment_path if retrying else Path(target)
        if not retrying and experiment_path is not None:
            raise InputError(f"unexpected argument {str(experiment_path)!r}")
        experiment = load_experiment(path) if path is not None else None
        if run_mode is not None:
            parse_run_mode(run_mode, field="--run-mode")
        runtime = Runtime.from_settings()
        use_mlflow_http_policy(MlflowHttpPolicy.READ_ONLY)  # planning reads; workers write
        services = open_services(runtime)
        try:
            missing: list[str] = []
            warnings: list[str] = []
            if retrying:
                report = retry_failed(services, experiment)
            else:
                assert experiment is not None
                report, missing, warnings = benchmark_experiment(
                    experiment, services, mode_override=run_mode
                )
            results = {}
            if wait and report.job_ids:
                from hpoq.producer.follow import wait_for_jobs

                results = wait_for_jobs(services.celery, report.job_ids, label="benchmarks")
        finally:
            services.close()

    payload = report.to_json() | {"missing": missing, "warnings": warnings}
    if results:
        payload["results"] = results
    failures = failed_benchmarks(report.enqueued, results)
    if failures:
        payload["failures"] = failures

    def render() -> None:
        for message in warnings:
            stderr.print(f"[yellow]warning:[/] {message}", highlight=False)
        rows = [
            ("enqueued", report.enqueued),
            ("measured already", report.skipped_done),
            ("in flight", report.skipped_in_flight),
        ]
        table = new_table("backbone", "variant", "trial", "status", "key", right=("trial",))
        for status, items in rows:
            for item in items:
                table.add_row(
                    cell(item["backbone"]),
                    cell(item["study_name"]),
                    str(item["trial"]),
                    status,
                    cell(item["key"]),
                )
        print_table(stdout, table)
        if missing:
            stdout.print(f"no trials yet: {', '.join(missing)}", highlight=False)
        if not report.enqueued:
            stdout.print("nothing to do")

    if not failures:
        emit(as_json, payload, render)
        return
    if not as_json:
        render()
    fail_each([_describe(f) for f in failures], as_json=as_json, document=payload)


def failed_benchmarks(
    enqueued: list[dict[str, Any]], results: dict[str, Any]
) -> list[dict[str, Any]]:
    """The jobs `--wait` saw fail: a failed outcome, a refused job, or a task error."""
    failures = []
    for item in enqueued:
        result = results.get(item["job_id"])
        if result is None:
            continue
        if isinstance(result, dict):
            if result.get("status") in SUCCEEDED:
                continue
            error = result.get("error") or f"the worker answered {result.get('status')!r}"
        else:
            error = str(result).removeprefix("error: ")
        # A FAILURE's text describes the job ("benchmark of KEY failed: ..."): keep the error.
        error = error.removeprefix(f"benchmark of {item['key']} failed: ")
        failures.append({"key": item["key"], "backbone": item["backbone"], "error": error})
    return failures


def _describe(failure: dict[str, Any]) -> str:
    return (
        f"benchmark {failure['key']} failed; worker error: {failure['error']} "
        "(the worker's log has the rest; `hpoq status` lists the workers)"
    )
