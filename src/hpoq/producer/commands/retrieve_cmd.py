"""`hpoq retrieve EXPERIMENT.yaml`: the best trial per backbone (or per variant), and its source."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from hpoq.config.selection import SelectionScope
from hpoq.producer.output import emit, exit_codes, stderr, stdout
from hpoq.producer.tables import cell, new_table, print_table

if TYPE_CHECKING:
    from hpoq.core.checkpoint_location import CheckpointLocation
    from hpoq.core.retrieval import RetrievalResult

RETRIEVAL_LOGGER = "hpoq.core.retrieval"


def retrieve(
    path: Annotated[Path, typer.Argument(help="Experiment YAML file.")],
    scope: Annotated[
        SelectionScope | None,
        typer.Option(
            "--scope",
            help="overall (one per backbone) or per_variant; default: "
            "the selection config's scope.",
        ),
    ] = None,
    backbone: Annotated[
        list[str] | None,
        typer.Option("--backbone", help="Only this backbone (repeatable); default: all."),
    ] = None,
    stage: Annotated[
        str,
        typer.Option("--stage", help="hpo: the best trials; final: the trained final models."),
    ] = "hpo",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Find the best trial of each backbone: MLflow first, then Optuna, then disk; and
    where its checkpoint is (this host's folder, the MLflow artifact store). With
    `--stage final`: the final models, their test scores and checkpoints."""
    from hpoq.config.loader import load_experiment
    from hpoq.core.checkpoint_location import locate_checkpoints, retrieval_document
    from hpoq.core.retrieval import mlflow_was_down, retrieve_best_trials
    from hpoq.core.retry import MlflowHttpPolicy, use_mlflow_http_policy
    from hpoq.core.runtime import Runtime
    from hpoq.core.tracking import make_client
    from hpoq.errors import InputError

    with exit_codes(as_json):
        if stage not in ("hpo", "final"):
            raise InputError(f"--stage: {stage!r} is not a stage (expected hpo or final)")
        experiment = load_experiment(path)
        runtime = Runtime.from_settings()
        use_mlflow_http_policy(MlflowHttpPolicy.READ_ONLY)  # MLflow down: fall back fast
        if stage == "final":
            from hpoq.core.final_runs import final_models
            from hpoq.producer.submit import select_backbones

            names = select_backbones(experiment, backbone) if backbone else None
            models = final_models(
                experiment, runtime.layout, make_client(runtime.mlflow_uri()), names
            )
    if stage == "final":
        _emit_final(as_json, models, experiment.selection.objective.metric)
        return
    with exit_codes(as_json), _warnings_not_logged():
        result = retrieve_best_trials(experiment, runtime, scope=scope, backbones=backbone)
        client = None if mlflow_was_down(result) else make_client(runtime.mlflow_uri())
        checkpoints = locate_checkpoints(result, runtime.layout, client)
    metric = experiment.selection.objective.metric
    document = retrieval_document(result, checkpoints)
    emit(as_json, document, lambda: _render(result, metric, checkpoints))


def _emit_final(as_json: bool, models: list[dict[str, Any]], metric: str) -> None:
    from hpoq.core.final_runs import seed_summary
    from hpoq.producer.commands.train_final_cmd import render_final_models

    summary = seed_summary(models, metric)

    def render() -> None:
        if not models:
            stdout.print("no final model yet (hpoq train-final trains them)")
            return
        render_final_models(models, metric)
        for group in summary:
            if group["stdev"] is not None:
                stdout.print(
                    f"{escape(group['backbone'])} (spec {group['spec_fp']}): "
                    f"{group['metric']} {group['mean']:.4f} +- {group['stdev']:.4f} "
                    f"over {group['seeds']} seeds",
                    highlight=False,
                )

    emit(as_json, {"final_models": models, "by_spec": summary}, render)


@contextmanager
def _warnings_not_logged() -> Iterator[None]:
    """Retrieval logs its warnings and also returns them; the command prints them once."""
    log = logging.getLogger(RETRIEVAL_LOGGER)
    silence = logging.NullHandler()
    propagate = log.propagate
    log.addHandler(silence)
    log.propagate = False
    try:
        yield
    finally:
        log.removeHandler(silence)
        log.propagate = propagate


def _render(
    result: RetrievalResult, metric: str, checkpoints: dict[str, CheckpointLocation]
) -> None:
    for warning in result.warnings:
        stderr.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    table = new_table(
        "backbone",
        "variant",
        "study",
        "trial",
        metric,
        "source",
        "checkpoint",
        title=f"best trials ({result.scope.value})",
        right=("variant", "trial", metric),
    )
    for best in result.best:
        where = checkpoints.get(best.trial_id)
        table.add_row(
            cell(best.backbone),
            str(best.variant),
            cell(best.study_name),
            str(best.trial_number),
            f"{best.value:.6g}",
            best.source,
            cell((where and (where.local_path or where.artifact_uri)) or "-"),
        )
    if result.best:
        print_table(stdout, table)
    if result.missing:
        stdout.print(f"[yellow]no COMPLETE trial[/] for: {escape(', '.join(result.missing))}")
