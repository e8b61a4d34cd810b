"""A sweep across hosts that share no filesystem: a real MLflow tracking server that serves
artifacts, Redis, PostgreSQL for Optuna, a producer with user CoNLL files and a model
directory it saved itself, and two `hpoq worker` processes, each with its own output
directory, working directory, home and temporary directory. One worker trains (queue
hpo), the other benchmarks (queue benchmark): the checkpoint, the data and the model reach
the hosts that need them only through the server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import redis
import yaml
from mlflow.tracking import MlflowClient

from hpoq.config.data import SyntheticSpec
from hpoq.core.content_store import (
    CONTENT_EXPERIMENT,
    TAG_DIGEST,
    TAG_KIND,
    manifest_of,
    parse_address,
)
from hpoq.core.datasets import SPLITS, generate_split
from hpoq.core.datasets.writers import write_sentences
from hpoq.workers.checkpoint_store import ARTIFACT_PATH
from tests.factories import write_experiment
from tests.integration.cluster import Worker, wait_for
from tests.integration.probes import redis_strings
from tests.integration.servers import MlflowServer
from tests.queue_messages import queued_payloads

pytestmark = pytest.mark.slow

OBJECTIVE = "hpoq.workers.objectives.token_classification:objective"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[MlflowServer]:
    started = MlflowServer(tmp_path / "server").start()
    try:
        yield started
    finally:
        started.stop()


def producer_project(root: Path) -> Path:
    """User CoNLL files (no synthetic spec: nothing a worker could regenerate) and a BERT
    saved with save_pretrained next to its tokenizer, named by paths relative to the
    config files that name them."""
    from transformers import BertConfig, BertForTokenClassification

    from hpoq.workers.training.tokenizer import build_word_tokenizer

    spec = SyntheticSpec(seed=29, train_sentences=48, validation_sentences=16, test_sentences=16)
    sentences = {split: generate_split(spec, split) for split in SPLITS}
    (root / "corpus").mkdir(parents=True)
    for split, rows in sentences.items():
        write_sentences(root / "corpus" / f"{split}.conll", rows, "conll")
    tokenizer = build_word_tokenizer([s.tokens for s in sentences["train"]], 32)
    model = BertForTokenClassification(
        BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
            pad_token_id=tokenizer.pad_token_id,
            num_labels=3,
        )
    )
    model.save_pretrained(root / "models" / "tiny-bert")
    tokenizer.save_pretrained(root / "models" / "tiny-bert")

    path = write_experiment(
        root,
        name="multi",
        n_trials=2,
        objective=OBJECTIVE,
        hpo_extra={
            "backbones": [{"name": "tiny", "model": "../models/tiny-bert"}],
            "search_space": {
                "learning_rate": {"type": "float", "low": 1e-3, "high": 5e-3, "log": True},
                "batch_size": {"type": "categorical", "choices": [16]},
                "epochs": {"type": "categorical", "choices": [1]},
            },
            "trainer": {"precision": "fp32", "max_seq_length": 32, "device": "cpu"},
        },
        benchmark_extra={"batch_sizes": [1, 4], "warmup_iterations": 1, "iterations": 2},
    )
    data_file = root / "config" / "data.yaml"
    data = yaml.safe_load(data_file.read_text())
    del data["synthetic"]
    data["local_path"] = "../corpus"  # relative to this file
    data_file.write_text(yaml.safe_dump(data))
    return path


def host(tmp_path: Path, name: str, base: dict[str, str]) -> tuple[Path, dict[str, str]]:
    """A host's own directories: working directory, outputs, home, temporary files."""
    root = tmp_path / name
    for folder in ("outputs", "home", "tmp"):
        (root / folder).mkdir(parents=True)
    env = dict(
        base,
        HPOQ_OUTPUT_DIR=str(root / "outputs"),
        HOME=str(root / "home"),
        TMPDIR=str(root / "tmp"),
        HF_HOME=str(root / "home" / "hf"),
    )
    return root, env


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    else:
        yield str(value)


def finished_runs(client: MlflowClient, name: str) -> list[Any]:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return []
    runs = client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'")
    return list(runs)


def test_a_sweep_across_hosts_sharing_no_filesystem(
    tmp_path: Path,
    server: MlflowServer,
    redis_url: str,
    real_redis: redis.Redis,
    postgres_url: str,
) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HPOQ_", "MLFLOW_"))}
    base.update(
        HPOQ_REDIS_URL=redis_url,
        HPOQ_OPTUNA_STORAGE=postgres_url,
        MLFLOW_TRACKING_URI=server.uri,
        HPOQ_PLATFORM="local",
        PYTHONUNBUFFERED="1",
    )
    producer, producer_env = host(tmp_path, "producer", base)
    experiment_file = producer_project(producer)

    submitted = subprocess.run(
        [sys.executable, "-m", "hpoq.producer", "submit", str(experiment_file), "--json"],
        env=producer_env,
        cwd=producer,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    assert json.loads(submitted.stdout)["submitted"][0]["trials_enqueued"] == 2

    # Before any worker runs: the queued jobs name files by content, never by a path here.
    payloads = [payload for _, payload in queued_payloads(real_redis, "hpo")]
    assert len(payloads) == 2
    for payload in payloads:
        assert not [s for s in _strings(payload) if str(tmp_path) in s]
        experiment = payload["experiment"]
        assert experiment["source"] is None
        data_digest = parse_address(experiment["data"]["local_path"])
        model_digest = parse_address(experiment["hpo"]["backbones"][0]["model"])
    assert (
        data_digest
        == manifest_of(producer / "corpus", [f"{s}.conll" for s in SPLITS], what="d").digest
    )
    assert model_digest == manifest_of(producer / "models" / "tiny-bert", what="m").digest
    assert not [s for s in redis_strings(real_redis) if str(tmp_path) in s]

    trainer_root, trainer_env = host(tmp_path, "trainer", base)
    bencher_root, bencher_env = host(tmp_path, "bencher", base)
    trainer = Worker(trainer_env, tmp_path / "trainer.log", "hpo", "--index", "0", cwd=trainer_root)
    bencher = Worker(
        bencher_env, tmp_path / "bencher.log", "benchmark", "--index", "1", cwd=bencher_root
    )
    client = MlflowClient(tracking_uri=server.uri)
    try:
        [measured] = wait_for(
            lambda: finished_runs(client, "multi-benchmark"),
            900,
            "the sweep and the benchmark of its best trial",
            [trainer, bencher],
        )
    finally:
        trainer.stop()
        bencher.stop()

    # The sweep completed in the shared Optuna storage.
    study = optuna.load_study(study_name="hpo_tiny", storage=postgres_url)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 2

    # Every experiment keeps its artifacts in the server's artifact root.
    for name in ("multi-hpo", "multi-benchmark", CONTENT_EXPERIMENT):
        location = client.get_experiment_by_name(name).artifact_location
        assert location.startswith("mlflow-artifacts:"), (name, location)

    # The benchmark ran on the host that trained nothing, from the downloaded checkpoint.
    trial_run = client.get_run(measured.data.tags["hpoq.hpo_run_id"])
    digest = trial_run.data.tags[f"hpoq.digest.{ARTIFACT_PATH}"]
    fetched = bencher_root / "outputs" / "cache" / "checkpoints" / digest
    assert manifest_of(fetched, what="checkpoint").digest == digest
    result = json.loads(
        Path(
            client.download_artifacts(measured.info.run_id, "benchmark.json", str(tmp_path))
        ).read_text()
    )
    assert result["checkpoint"] == str(fetched) and result["runner"] == "torch"
    assert not list((bencher_root / "outputs").glob("**/trial_*/checkpoint"))
    assert list((trainer_root / "outputs").glob("**/trial_*/checkpoint"))

    # Each worker's cache holds what it needed, by content digest, verified.
    trainer_cache = trainer_root / "outputs" / "cache"
    assert manifest_of(trainer_cache / "data" / str(data_digest), what="d").digest == data_digest
    assert (
        manifest_of(trainer_cache / "models" / str(model_digest), what="m").digest == model_digest
    )
    bencher_cache = bencher_root / "outputs" / "cache"
    assert [p.name for p in (bencher_cache / "data").iterdir()] == [data_digest]
    assert not (bencher_cache / "models").exists()  # a benchmark needs no base model

    # Published once; the server's artifact destination holds the content and checkpoint.
    content = finished_runs(client, CONTENT_EXPERIMENT)
    assert sorted(r.data.tags[TAG_KIND] for r in content) == ["data", "models"]
    assert {r.data.tags[TAG_DIGEST] for r in content} == {data_digest, model_digest}
    stored = [p for p in server.artifacts.rglob("*") if p.is_file()]
    assert [p for p in stored if trial_run.info.run_id in p.parts and "checkpoint" in p.parts]
    assert [p for p in stored if p.name == "train.conll"]

    # Nothing any host wrote reached the producer's disk, and Redis holds no host path.
    # (The producer keeps only its own verdicts on the splits it checked.)
    cached = {p.name for p in (producer / "outputs" / "cache").iterdir()}
    assert cached <= {"data-checks"}, cached
    assert not list(producer.glob("**/trial_*"))
    assert not [s for s in redis_strings(real_redis) if str(tmp_path) in s]
