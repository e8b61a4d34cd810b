"""`hpoq train-final EXPERIMENT.yaml`: train each backbone's best trial once more as a
final model (queue `train`); `--retry-failed` sends again the ones that failed.

Exit 2 on bad input (no final-training file, an unknown backbone), with nothing written;
exit 1 with "nothing to train" when no backbone has a completed trial; with `--wait`, exit
1 when a final training failed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from hpoq.producer.commands.submit_cmd import JsonOption, RunModeOption
from hpoq.producer.output import emit, exit_codes, fail_each, stderr, stdout
from hpoq.producer.tables import cell, new_table, print_table


def train_final(
    experiment_path: Annotated[Path, typer.Argument(metavar="EXPERIMENT.yaml")],
    run_mode: RunModeOption = None,
    backbone: Annotated[
        list[str] | None, typer.Option("--backbone", help="Only these backbones (repeatable).")
    ] = None,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Send again the final trainings that failed.")
    ] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the jobs to the end.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Train the best trial of each backbone as a final model: on train (+ validation),
    scored on test, logged to MLflow (stage final_training) and benchmarked."""
    from hpoq.config.loader import load_experiment
    from hpoq.config.run_mode import get_final_training_run_mode
    from hpoq.core.input_checks import check_inputs
    from hpoq.core.retry import MlflowHttpPolicy, use_mlflow_http_policy
    from hpoq.core.runtime import Runtime
    from hpoq.producer.final_training import final_config, retry_failed_final
    from hpoq.producer.final_training import train_final as plan_final
    from hpoq.producer.services import open_services
    from hpoq.producer.submit import select_backbones

    with exit_codes(as_json):
        experiment = load_experiment(experiment_path)
        final = final_config(experiment)
        get_final_training_run_mode(final, experiment.hpo, override=run_mode)
        select_backbones(experiment, backbone)
        runtime = Runtime.from_settings()
        check_inputs(experiment, runtime.layout, prepare=False)
        use_mlflow_http_policy(MlflowHttpPolicy.WORKER)
        services = open_services(runtime)
        try:
            if retry_failed:
                plan = retry_failed_final(services, experiment)
            else:
                plan = plan_final(experiment, services, mode_override=run_mode, backbones=backbone)
            results: dict[str, Any] = {}
            if wait and plan.job_ids:
                from hpoq.producer.follow import wait_for_jobs

                results = wait_for_jobs(services.celery, plan.job_ids, label="final trainings")
        finally:
            services.close()

    payload = plan.to_json()
    if results:
        payload["results"] = results
    failures = [
        f"final training {item.name} of {item.backbone} failed: {_error(results[item.job_id])}"
        for item in plan.items
        if item.job_id in results and _error(results[item.job_id]) is not None
    ]

    def render() -> None:
        for message in plan.warnings:
            stderr.print(f"[yellow]warning:[/] {message}", highlight=False)
        table = new_table("backbone", "variant", "seed", "action", "source", right=("seed",))
        for item in plan.items:
            table.add_row(
                cell(item.backbone),
                cell(item.name),
                str(item.seed),
                item.action,
                cell(f"{item.source_study_name} trial {item.source_trial_number}"),
            )
        print_table(stdout, table)
        if plan.missing:
            stdout.print(f"no trials yet: {', '.join(plan.missing)}", highlight=False)
        if not plan.job_ids:
            stdout.print("nothing to do: every final model is trained or in flight")

    if not failures:
        emit(as_json, payload, render)
        return
    if not as_json:
        render()
    fail_each(failures, as_json=as_json, document=payload)


def _error(result: Any) -> str | None:
    if isinstance(result, dict):
        if result.get("status") in ("trained", "already_done"):
            return None
        return str(result.get("error") or result.get("status"))
    return str(result)


def render_final_models(models: list[dict[str, Any]], metric: str) -> None:
    """The final models table (hpoq run, hpoq retrieve --stage final)."""
    columns = (f"test {metric}", f"untrained test {metric}", f"validation {metric}")
    table = new_table(
        "backbone", "variant", "seed", "source", *columns, title="final models", right=columns
    )
    for m in models:
        scores = m.get("metrics", {})
        table.add_row(
            cell(m["backbone"]),
            cell(m["name"]),
            str(m.get("seed")),
            cell(f"{m['source']['study_name']} trial {m['source']['trial_number']}"),
            *(
                _score(scores.get(f"{split}.{metric}"))
                for split in ("test", "test_untrained", "validation")
            ),
        )
    print_table(stdout, table)


def _score(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.4f}"
