"""`hpoq submit EXPERIMENT.yaml`: plan variants and enqueue trial jobs, then return."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hpoq.producer.output import emit, exit_codes, stdout

RunModeOption = Annotated[
    str | None,
    typer.Option(
        "--run-mode",
        help="reuse_if_exists | resume_if_incomplete | force_new (overrides run.mode).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]


def submit(
    experiment_path: Annotated[Path, typer.Argument(metavar="EXPERIMENT.yaml")],
    run_mode: RunModeOption = None,
    backbone: Annotated[
        list[str] | None, typer.Option("--backbone", help="Only these backbones (repeatable).")
    ] = None,
    variant: Annotated[
        int | None,
        typer.Option(
            "--variant",
            min=1,
            help="Top up this variant (resume semantics) instead of the latest one.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Submit HPO variants: allocate variants, create studies, enqueue trial jobs."""
    from hpoq.config.loader import load_experiment
    from hpoq.config.run_mode import get_run_mode, parse_run_mode
    from hpoq.core.input_checks import check_inputs
    from hpoq.core.retry import MlflowHttpPolicy, use_mlflow_http_policy
    from hpoq.core.runtime import Runtime
    from hpoq.producer.services import open_services
    from hpoq.producer.submit import Submitter, select_backbones, variant_targets

    with exit_codes(as_json):
        experiment = load_experiment(experiment_path)
        if run_mode is not None:
            parse_run_mode(run_mode, field="--run-mode")
        names = select_backbones(experiment, backbone)
        runtime = Runtime.from_settings()
        if variant is not None:  # checked before anything starts or is written
            mode = get_run_mode(experiment.hpo, override=run_mode)
            store = runtime.study_store(experiment.hpo.checkpoint)
            variant_targets(experiment, store, names, variant, mode)
        # Every split read, every model directory checked and hashed, before any write.
        inputs = check_inputs(experiment, runtime.layout, prepare=True).prepared
        use_mlflow_http_policy(MlflowHttpPolicy.WORKER)
        services = open_services(runtime)
        try:
            submitter = Submitter(
                experiment,
                services.runtime,
                services.redis,
                services.keys,
                services.celery,
                mlflow=services.mlflow(),
            )
            results = submitter.submit(
                mode_override=run_mode, backbones=backbone, inputs=inputs, variant=variant
            )
        finally:
            services.close()

    def render() -> None:
        from rich.table import Table

        table = Table("backbone", "study", "variant", "action", "trials enqueued")
        for r in results:
            table.add_row(
                r.backbone, r.study_name, str(r.variant), r.action, str(r.trials_enqueued)
            )
        stdout.print(table)

    emit(as_json, {"submitted": [r.to_json() for r in results]}, render)
