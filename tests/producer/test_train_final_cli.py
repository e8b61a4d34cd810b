"""`hpoq train-final` on bad input: exit 2 naming the file and field, nothing written; no
best trial yet: exit 1 saying there is nothing to train, nothing allocated or enqueued."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis
from typer.testing import CliRunner

from hpoq.producer.cli import app
from hpoq.producer.output import EXIT_BAD_INPUT, EXIT_FAILURE
from tests.factories import write_experiment
from tests.producer.json_errors import error_document


@pytest.mark.parametrize(
    ("final", "field"),
    [
        ({"backbones": ["nope"]}, "backbones"),
        ({"epochs": 0}, "epochs"),
        ({"seeds": []}, "seeds"),
        ({"seeds": [1, 1]}, "seeds"),
        ({"precision": "fp8"}, "precision"),
        ({"surprise": 1}, "surprise"),
    ],
    ids=["unknown-backbone", "epochs-0", "no-seed", "same-seed-twice", "precision", "typo"],
)
def test_a_bad_final_training_file_exits_2_and_leaves_nothing(
    tmp_path: Path,
    hpoq_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,
    real_redis: redis.Redis,
    final: dict[str, Any],
    field: str,
) -> None:
    monkeypatch.setenv("HPOQ_REDIS_URL", redis_url)
    path = write_experiment(tmp_path, final_training=final)
    result = CliRunner().invoke(app, ["train-final", str(path), "--json"])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    error = error_document(result.stdout, EXIT_BAD_INPUT)
    assert "final_training.yaml" in error["message"] and field in error["message"]
    assert "Traceback" not in result.stderr
    assert not hpoq_env.exists() and real_redis.dbsize() == 0


def test_an_experiment_without_a_final_training_file_exits_2(
    tmp_path: Path, hpoq_env: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    monkeypatch.setenv("HPOQ_REDIS_URL", redis_url)
    path = write_experiment(tmp_path)
    result = CliRunner().invoke(app, ["train-final", str(path), "--json"])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    message = error_document(result.stdout, EXIT_BAD_INPUT)["message"]
    assert "final_training" in message and "names no final-training file" in message
    assert not hpoq_env.exists()


def test_an_unknown_backbone_on_the_command_line_exits_2(
    tmp_path: Path, hpoq_env: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    monkeypatch.setenv("HPOQ_REDIS_URL", redis_url)
    path = write_experiment(tmp_path, final_training={})
    result = CliRunner().invoke(app, ["train-final", str(path), "--backbone", "nope", "--json"])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert "--backbone" in error_document(result.stdout, EXIT_BAD_INPUT)["message"]
    assert not hpoq_env.exists()


def test_no_best_trial_yet_is_nothing_to_train_exit_1_and_nothing_enqueued(
    tmp_path: Path,
    hpoq_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,
    real_redis: redis.Redis,
) -> None:
    monkeypatch.setenv("HPOQ_REDIS_URL", redis_url)
    path = write_experiment(tmp_path, final_training={})
    result = CliRunner().invoke(app, ["train-final", str(path), "--json"])
    assert result.exit_code == EXIT_FAILURE, result.output
    error = error_document(result.stdout, EXIT_FAILURE)
    assert error["kind"] == "work_failed"
    assert error["message"].startswith("nothing to train: no backbone has a completed trial")
    assert real_redis.dbsize() == 0  # no variant number, no job, no registry entry
    assert not (hpoq_env / "local" / "final").exists()


def test_retrieve_refuses_an_unknown_stage_with_exit_2(tmp_path: Path, hpoq_env: Path) -> None:
    path = write_experiment(tmp_path, final_training={})
    result = CliRunner().invoke(app, ["retrieve", str(path), "--stage", "nope", "--json"])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert "--stage" in error_document(result.stdout, EXIT_BAD_INPUT)["message"]
