"""`hpoq retrieve`: JSON document, human table, warnings on stderr, exit codes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from hpoq.config.loader import load_experiment
from hpoq.core.runtime import Runtime
from hpoq.core.studies import BACKBONE_ATTR
from hpoq.core.trial_record import TrialRecord
from hpoq.producer.cli import app
from tests.integration.probes import hpoq
from tests.producer.json_errors import error_document

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def experiment_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the shipped config with backbones alpha and beta; outputs under tmp_path."""
    for name in ("HPOQ_OPTUNA_STORAGE", "HPOQ_PLATFORM", "HPOQ_MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HPOQ_OUTPUT_DIR", str(tmp_path / "out"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    shutil.copytree(REPO / "config", tmp_path / "config")
    hpo_path = tmp_path / "config" / "hpo" / "smoke.yaml"
    hpo = yaml.safe_load(hpo_path.read_text(encoding="utf-8"))
    architecture = hpo["backbones"][0]["architecture"]
    hpo["backbones"] = [{"name": n, "architecture": architecture} for n in ("alpha", "beta")]
    hpo_path.write_text(yaml.safe_dump(hpo), encoding="utf-8")
    return tmp_path / "config" / "experiment" / "smoke.yaml"


def seed_alpha(experiment_file: Path, tmp_path: Path) -> None:
    """Variant 1 of alpha in MLflow and Optuna (best: trial 1); variant 2 only in Optuna."""
    experiment = load_experiment(experiment_file)
    runtime = Runtime.from_settings()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    experiment_id = client.create_experiment(experiment.hpo_experiment_name)
    store = runtime.study_store(experiment.hpo.checkpoint)
    for variant, study_name, values in [(1, "hpo_alpha", [0.5, 0.8]), (2, "hpo_alpha_v2", [0.6])]:
        study = optuna.create_study(
            storage=store.storage_for("alpha", study_name),
            study_name=study_name,
            direction="maximize",
        )
        study.set_user_attr(BACKBONE_ATTR, "alpha")
        for number, value in enumerate(values):
            study.add_trial(optuna.trial.create_trial(value=value))
            if variant == 2:
                continue
            record = TrialRecord(
                experiment=experiment.name,
                backbone="alpha",
                study_name=study_name,
                variant=variant,
                trial_number=number,
                state="COMPLETE",
                metric="macro-f1",
                value=value,
                params={},
            )
            run = client.create_run(experiment_id, tags=record.mlflow_tags(experiment.tags))
            client.log_batch(run.info.run_id, metrics=[Metric("macro-f1", value, 0, 0)])
            client.set_terminated(run.info.run_id, "FINISHED")


def test_json_document(experiment_file: Path, tmp_path: Path) -> None:
    seed_alpha(experiment_file, tmp_path)
    result = CliRunner().invoke(app, ["retrieve", str(experiment_file), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert set(document) == {"scope", "best", "missing", "warnings"}
    assert document["scope"] == "overall"
    [best] = document["best"]
    assert (best["backbone"], best["variant"], best["trial_number"]) == ("alpha", 1, 1)
    assert (best["source"], best["value"], best["metric"]) == ("mlflow", 0.8, "macro-f1")
    assert best["run_id"]
    assert document["missing"] == ["beta"]
    assert document["warnings"] == []


def test_per_variant_and_backbone_selection(experiment_file: Path, tmp_path: Path) -> None:
    seed_alpha(experiment_file, tmp_path)
    args = ["retrieve", str(experiment_file), "--scope", "per_variant", "--backbone", "alpha"]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["scope"] == "per_variant"
    assert [(b["variant"], b["source"]) for b in document["best"]] == [(1, "mlflow"), (2, "optuna")]
    assert document["missing"] == []


def test_human_table_with_warnings_on_stderr(
    experiment_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_alpha(experiment_file, tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://user:pw@127.0.0.1:1")
    result = CliRunner().invoke(app, ["retrieve", str(experiment_file)])
    assert result.exit_code == 0, result.output
    assert "alpha" in result.stdout
    [header] = [line for line in result.stdout.splitlines() if "backbone" in line]
    assert "macro-f1" in header  # the value column is headed with the configured metric
    assert "optuna" in result.stdout
    assert "0.8" in result.stdout
    assert "no COMPLETE trial" in result.stdout
    assert "beta" in result.stdout
    assert "MLflow unreachable" in result.stderr
    assert result.stderr.count("MLflow unreachable") == 1  # printed once, not logged again
    assert ":pw@" not in result.stderr
    assert "MLflow unreachable" not in result.stdout


def test_json_keeps_stdout_a_single_document(
    experiment_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_alpha(experiment_file, tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    result = CliRunner().invoke(app, ["retrieve", str(experiment_file), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["warnings"][0].startswith("MLflow unreachable: ")
    assert [b["source"] for b in document["best"]] == ["optuna"]


def test_bad_config_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["retrieve", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2
    assert "file not found" in result.stderr


def test_invalid_config_exits_2(experiment_file: Path) -> None:
    experiment_file.write_text("name: Not A Safe Name\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["retrieve", str(experiment_file), "--json"])
    assert result.exit_code == 2
    assert "not a safe name" in error_document(result.stdout, 2, "config")["message"]


def test_bad_scope_exits_2_naming_the_option(experiment_file: Path) -> None:
    result = CliRunner().invoke(app, ["retrieve", str(experiment_file), "--scope", "best"])
    assert result.exit_code == 2
    assert "--scope" in result.output


def test_unknown_backbone_exits_2(experiment_file: Path) -> None:
    result = CliRunner().invoke(app, ["retrieve", str(experiment_file), "--backbone", "nope"])
    assert result.exit_code == 2
    assert "unknown backbone 'nope'" in result.stderr


# --- a tracking server that is down: answer within 15 s, from Optuna and disk ---------------


def _retrieve_seconds(experiment: Path, env: dict[str, str]) -> tuple[float, dict[str, Any]]:
    started = time.monotonic()
    proc = hpoq(env, "retrieve", str(experiment), "--json", timeout_s=300)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    return elapsed, json.loads(proc.stdout)


def test_a_dead_tracking_server_costs_retrieve_at_most_15_s(
    experiment_file: Path, tmp_path: Path
) -> None:
    """MLflow's own default (7 retries, 120 s per request) took over 4 minutes here."""
    seed_alpha(experiment_file, tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP")}
    baseline, answered = _retrieve_seconds(experiment_file, env)  # the SQLite store: up
    assert [b["source"] for b in answered["best"]] == ["mlflow"]
    for server in ("refuses", "never-answers"):
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            port = listener.getsockname()[1]
            if server == "refuses":
                listener.close()
            else:
                listener.listen(16)  # the kernel accepts connections; nobody answers
            dead = env | {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}
            elapsed, fallback = _retrieve_seconds(experiment_file, dead)
        assert [(b["backbone"], b["source"]) for b in fallback["best"]] == [("alpha", "optuna")]
        assert any("MLflow unreachable" in w for w in fallback["warnings"])
        # Measured side by side with the same command against a store that answers.
        assert elapsed - baseline < 15.0, (server, elapsed, baseline)
