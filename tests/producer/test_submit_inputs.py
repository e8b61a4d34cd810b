"""`hpoq submit` publishes what the jobs need by content, once, and refuses a data file or
model directory it cannot read with exit 2, naming it, before anything is written."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from hpoq.core.content_store import CONTENT_EXPERIMENT
from hpoq.core.tracking import make_client
from hpoq.producer.cli import app
from hpoq.producer.output import EXIT_BAD_INPUT
from tests.factories import seed_mlflow_store, user_experiment
from tests.queue_messages import queued_payloads


def _strings(value: object) -> list[str]:
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (str(k), *_strings(v))]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return [str(value)]


def test_submit_publishes_once_and_queues_jobs_without_a_path_of_this_host(
    tmp_path: Path,
    hpoq_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,
    real_redis: redis.Redis,
    mlflow_template: Path,
) -> None:
    monkeypatch.setenv("HPOQ_REDIS_URL", redis_url)
    seed_mlflow_store(mlflow_template, hpoq_env)
    experiment = user_experiment(tmp_path / "project")
    assert experiment.source is not None
    client = make_client(f"sqlite:///{hpoq_env / 'mlflow.db'}")

    def content_runs() -> int:
        found = client.get_experiment_by_name(CONTENT_EXPERIMENT)
        return 0 if found is None else len(client.search_runs([found.experiment_id]))

    first = CliRunner().invoke(app, ["submit", str(experiment.source), "--json"])
    assert first.exit_code == 0, first.output
    assert content_runs() == 2  # the data files and the local model directory
    again = CliRunner().invoke(
        app, ["submit", str(experiment.source), "--run-mode", "force_new", "--json"]
    )
    assert again.exit_code == 0, again.output
    assert content_runs() == 2  # same content: nothing published the second time

    payloads = [payload for _, payload in queued_payloads(real_redis, "hpo")]
    assert len(payloads) == 2 * 2 * experiment.hpo.n_trials  # two backbones, two variants
    strings = [s for payload in payloads for s in _strings(payload)]
    assert not [s for s in strings if str(tmp_path) in s or str(hpoq_env) in s]


def _model_missing(root: Path) -> str:
    shutil.rmtree(root / "models" / "tiny")
    return str(root / "models" / "tiny")


def _model_is_a_file(root: Path) -> str:
    shutil.rmtree(root / "models" / "tiny")
    (root / "models" / "tiny").write_text("not a model")
    return str(root / "models" / "tiny")


def _broken_link_in_model(root: Path) -> str:
    (root / "models" / "tiny" / "tokenizer.json").symlink_to(root / "models" / "gone.json")
    return str(root / "models" / "tiny" / "tokenizer.json")


def _split_is_a_directory(root: Path) -> str:
    (root / "ner" / "dev.conll").unlink()
    (root / "ner" / "dev.conll").mkdir()
    return str(root / "ner" / "dev.conll")


@pytest.mark.parametrize(
    "breakage", [_model_missing, _model_is_a_file, _broken_link_in_model, _split_is_a_directory]
)
def test_a_file_that_cannot_be_published_fails_the_submit_with_exit_2_and_leaves_nothing(
    tmp_path: Path,
    hpoq_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,
    real_redis: redis.Redis,
    breakage: Callable[[Path], str],
) -> None:
    monkeypatch.setenv("HPOQ_REDIS_URL", redis_url)
    experiment = user_experiment(tmp_path / "project")
    named = breakage(tmp_path / "project")
    result = CliRunner().invoke(app, ["submit", str(experiment.source), "--json"])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert json.loads(result.stdout)["error"]["exit_code"] == EXIT_BAD_INPUT
    assert "error:" in result.stderr and named in result.stderr
    assert "Traceback" not in result.stderr
    assert not hpoq_env.exists()  # no study, no MLflow store, no run, no cache
    assert real_redis.dbsize() == 0  # no variant number, no job
