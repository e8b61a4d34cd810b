"""Bad data and bad model directories, through the real CLI: `config validate`, `submit`
and `run` exit 2 naming the file, line and field, and nothing is written: no output
folder (so no study, no MLflow store, no embedded Redis), no Redis key."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
import yaml
from typer.testing import CliRunner

from hpoq.config.loader import load_experiment
from hpoq.core.datasets import ensure_dataset
from hpoq.producer.cli import app
from hpoq.producer.output import EXIT_BAD_INPUT
from tests.factories import write_experiment
from tests.integration.cluster import cluster_env
from tests.integration.probes import hpoq
from tests.producer.json_errors import error_document

Break = Callable[[Path], None]


def _edit(root: Path, name: str, **changes: object) -> None:
    path = root / "config" / name
    data = yaml.safe_load(path.read_text())
    data.update(changes)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _data(root: Path) -> Path:
    return root / "data"


def local_path_is_a_file(root: Path) -> None:
    _edit(root, "data.yaml", local_path="/etc/passwd")


def local_path_missing(root: Path) -> None:
    _edit(root, "data.yaml", local_path=str(root / "nowhere"), synthetic=None)


def tag_not_in_labels(root: Path) -> None:
    train = _data(root) / "train.conll"
    lines = train.read_text().splitlines()
    lines[1] = lines[1].rsplit("\t", 1)[0] + "\tB-MISC"
    train.write_text("\n".join(lines) + "\n")


def empty_training_split(root: Path) -> None:
    (_data(root) / "train.conll").write_text("")


def split_is_a_directory(root: Path) -> None:
    (_data(root) / "test.conll").unlink()
    (_data(root) / "test.conll").mkdir()


def model_directory_missing(root: Path) -> None:
    _edit(root, "hpo.yaml", backbones=[{"name": "tiny", "model": str(root / "no-model")}])


def model_without_tokenizer(root: Path) -> None:
    model = root / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "bert"}')
    (model / "model.safetensors").write_bytes(b"weights")
    _edit(root, "hpo.yaml", backbones=[{"name": "tiny", "model": str(model)}])


# (case, what breaks, the config file named, what the message says)
CASES: list[tuple[str, Break, str, str]] = [
    ("local-path-file", local_path_is_a_file, "data.yaml", "local_path: /etc/passwd is a file"),
    ("local-path-missing", local_path_missing, "data.yaml", "nowhere does not exist"),
    ("tag-not-in-labels", tag_not_in_labels, "data.yaml", "train.conll:2: label 'B-MISC'"),
    ("empty-train", empty_training_split, "data.yaml", "splits.train: "),
    ("split-directory", split_is_a_directory, "data.yaml", "splits.test: "),
    ("model-missing", model_directory_missing, "hpo.yaml", "backbones.0.model (tiny)"),
    ("model-no-tokenizer", model_without_tokenizer, "hpo.yaml", "holds no tokenizer"),
]
IDS = [case[0] for case in CASES]


@pytest.fixture
def broken(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, str, str]:
    """An experiment whose data exists (generated), then broken one way."""
    _, breakage, file, says = request.param
    path = write_experiment(tmp_path, n_trials=1)
    experiment = load_experiment(path)
    ensure_dataset(experiment.data, experiment.data_dir())
    breakage(tmp_path)
    return path, file, says


def _assert_refused(code: int, stdout: str, stderr: str, file: str, says: str) -> None:
    assert code == EXIT_BAD_INPUT, stderr[-3000:]
    message = error_document(stdout, EXIT_BAD_INPUT)["message"]
    assert file in message and says in message, message
    assert "error:" in stderr and says in stderr and "Traceback" not in stderr


@pytest.mark.parametrize("broken", CASES, ids=IDS, indirect=True)
def test_validate_refuses_it_and_writes_nothing(
    broken: tuple[Path, str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, file, says = broken
    monkeypatch.setenv("HPOQ_OUTPUT_DIR", str(tmp_path / "out"))
    result = CliRunner().invoke(app, ["config", "validate", str(path), "--json"])
    _assert_refused(result.exit_code, result.stdout, result.stderr, file, says)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("broken", CASES, ids=IDS, indirect=True)
def test_submit_refuses_it_and_writes_nothing(
    broken: tuple[Path, str, str],
    tmp_path: Path,
    redis_url: str,
    real_redis: redis.Redis,
) -> None:
    path, file, says = broken
    output = tmp_path / "out"
    result = hpoq(cluster_env(output, redis_url), "submit", str(path), "--json")
    _assert_refused(result.returncode, result.stdout, result.stderr, file, says)
    assert not output.exists()  # no study, no MLflow store
    assert real_redis.dbsize() == 0  # no variant number, no job


@pytest.mark.parametrize("broken", CASES, ids=IDS, indirect=True)
def test_run_refuses_it_before_starting_anything(
    broken: tuple[Path, str, str], tmp_path: Path
) -> None:
    path, file, says = broken
    output = tmp_path / "out"
    env = cluster_env(output, "")
    env.pop("HPOQ_REDIS_URL")  # the embedded defaults
    result = hpoq(env, "run", str(path), "--json")
    _assert_refused(result.returncode, result.stdout, result.stderr, file, says)
    assert not output.exists()  # no embedded Redis, no MLflow store, no worker log


def test_validate_prints_the_resolved_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_experiment(tmp_path, n_trials=1)
    monkeypatch.setenv("HPOQ_OUTPUT_DIR", str(tmp_path / "out"))
    text = CliRunner().invoke(app, ["config", "validate", str(path)])
    assert text.exit_code == 0, text.output
    for shown in (
        f"experiment file: {path}",
        f"hpo file: {tmp_path / 'config' / 'hpo.yaml'}",
        f"data file: {tmp_path / 'config' / 'data.yaml'}",
        f"data directory: {tmp_path / 'data'}",
        f"train: {tmp_path / 'data' / 'train.conll'} (to be generated)",
    ):
        assert shown in text.stdout, text.stdout
    assert not (tmp_path / "data").exists() and not (tmp_path / "out").exists()

    experiment = load_experiment(path)
    ensure_dataset(experiment.data, experiment.data_dir())
    doc = CliRunner().invoke(app, ["config", "validate", str(path), "--json"])
    inputs = json.loads(doc.stdout)["inputs"]
    assert inputs["data_dir"] == str(tmp_path / "data")
    assert [(s["split"], s["how"], s["sentences"]) for s in inputs["splits"]] == [
        ("train", "read", 60),
        ("validation", "read", 20),
        ("test", "read", 20),
    ]
    assert not (tmp_path / "out").exists()
