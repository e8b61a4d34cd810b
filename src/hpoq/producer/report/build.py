"""Writing the report and logging it to MLflow.

The file goes to `--out`, by default `<output>/reports/<experiment>.html`, written to a
temporary file and renamed, so a reader never sees half a page.

In MLflow the report is an artifact of one run per experiment in the HPO experiment,
tagged `hpoq.stage=report` and `hpoq.experiment=<name>`: found by those tags and updated
in place (the artifact replaced, `hpoq.report.generated` set). One run rather than one per
report because the page describes the experiment's current state, not an event: a run per
`hpoq run` would add a row to the HPO experiment's run list (the list people sort to
compare trials) every time, even when nothing changed. Retrieval, failures and variant
discovery select runs by `hpoq.stage=hpo`, so this run is never taken for a trial. Two
reports written at the same instant can each create the run; the newest is then updated.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpoq.config.experiment import Experiment
from hpoq.core.paths import safe_join
from hpoq.core.runtime import Runtime
from hpoq.core.trial_record import STAGE_REPORT
from hpoq.redaction import redact_url

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from hpoq.producer.report.data import ReportData

log = logging.getLogger(__name__)
REPORTS_DIR = "reports"
GENERATED_TAG = "hpoq.report.generated"


@dataclass(frozen=True)
class WrittenReport:
    path: str
    run_id: str | None
    artifact_uri: str | None
    mlflow_error: str | None
    warnings: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "run_id": self.run_id,
            "artifact_uri": self.artifact_uri,
            "mlflow_error": self.mlflow_error,
            "warnings": self.warnings,
        }


def default_report_path(runtime: Runtime, experiment: Experiment) -> Path:
    return safe_join(runtime.layout.root, REPORTS_DIR, f"{experiment.name}.html", what="report")


def build_report(
    experiment: Experiment, runtime: Runtime, client: MlflowClient | None
) -> tuple[str, ReportData]:
    """The page's HTML and the data it shows."""
    from hpoq.producer.report.data import collect
    from hpoq.producer.report.page import render

    data = collect(experiment, runtime, client)
    return render(data), data


def write_report(
    experiment: Experiment,
    runtime: Runtime,
    path: Path | None = None,
    *,
    log_to_mlflow: bool = True,
) -> WrittenReport:
    """Build the report, write it to `path` (default: `default_report_path`) and log it to
    MLflow; an MLflow that refuses is `mlflow_error`, the file is still written."""
    from hpoq.core.tracking import make_client

    target = path or default_report_path(runtime, experiment)
    client = make_client(runtime.mlflow_uri())
    html, data = build_report(experiment, runtime, client)
    _write_atomic(target, html)
    run_id = artifact_uri = error = None
    if log_to_mlflow:
        try:
            run_id, artifact_uri = publish(client, experiment, runtime, target, data)
        except Exception as exc:
            error = redact_url(f"could not log the report to MLflow: {type(exc).__name__}: {exc}")
            log.warning("%s", error)
    return WrittenReport(str(target), run_id, artifact_uri, error, data.warnings)


def _write_atomic(target: Path, html: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(html)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would keep the page from its readers
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def publish(
    client: MlflowClient,
    experiment: Experiment,
    runtime: Runtime,
    report: Path,
    data: ReportData,
) -> tuple[str, str]:
    """Log `report` into the experiment's report run; (run id, the artifact's URI)."""
    from hpoq.core.mlflow_queries import query_runs_by_tags
    from hpoq.core.tracking import artifact_root, ensure_experiment

    process = experiment.tags.process
    tags = {process.stage: STAGE_REPORT, process.experiment: experiment.name}
    experiment_id = ensure_experiment(
        client,
        experiment.hpo_experiment_name,
        artifact_root(runtime.layout, runtime.mlflow_uri()),
    )
    found = next(
        iter(
            query_runs_by_tags(
                client,
                [experiment_id],
                tags,
                status=None,
                order_by=["attributes.start_time DESC"],
                page_size=10,
            )
        ),
        None,
    )
    if found is None:
        run = client.create_run(experiment_id, tags=tags, run_name=f"report-{experiment.name}")
    else:
        run = found
    run_id = str(run.info.run_id)
    client.log_artifact(run_id, str(report))
    client.set_tag(run_id, GENERATED_TAG, data.generated_at)
    if found is None:
        client.set_terminated(run_id, status="FINISHED")
    return run_id, f"{run.info.artifact_uri.rstrip('/')}/{report.name}"
