"""The cluster layout: every study in one PostgreSQL storage (HPOQ_OPTUNA_STORAGE)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import redis

from hpoq.config.settings import Settings
from hpoq.core.runtime import Runtime
from hpoq.core.studies import BACKBONE_ATTR
from tests.factories import write_experiment
from tests.producer.test_submit import _cli_env

pytestmark = pytest.mark.postgres


def test_concurrent_force_new_on_postgres_yields_distinct_variants(
    tmp_path: Path, real_redis: redis.Redis, redis_url: str, postgres_url: str
) -> None:
    path = write_experiment(tmp_path, backbones=("bert", "bert-x"), n_trials=1)
    env = _cli_env(tmp_path, redis_url) | {"HPOQ_OPTUNA_STORAGE": postgres_url}
    # Create the schema once, as a deployment's first command does.
    first = subprocess.run(
        [sys.executable, "-m", "hpoq.producer", "submit", str(path), "--backbone", "bert"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert first.returncode == 0, first.stderr
    cmd = [
        sys.executable,
        "-m",
        "hpoq.producer",
        "submit",
        str(path),
        "--run-mode",
        "force_new",
        "--backbone",
        "bert",
        "--json",
    ]
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(6)
    ]
    outs = [p.communicate(timeout=180) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e.decode()[-1500:] for _, e in outs]
    names = sorted(json.loads(o)["submitted"][0]["study_name"] for o, _ in outs)
    assert names == sorted(f"hpo_bert_v{n}" for n in range(2, 8))

    summaries = optuna.get_all_study_summaries(storage=postgres_url)
    assert {s.study_name for s in summaries} == {"hpo_bert", *names}
    assert {s.user_attrs[BACKBONE_ATTR] for s in summaries} == {"bert"}
    # Nothing lands on local disk for the studies themselves.
    assert not list((tmp_path / "out").glob("**/*.journal"))

    runtime = Runtime.from_settings(
        Settings(output_dir=tmp_path / "out", platform="local", optuna_storage=postgres_url)
    )
    from hpoq.config.hpo import CheckpointConfig

    store = runtime.study_store(CheckpointConfig())
    assert [r.variant for r in store.list_variants("bert", "hpo_bert")] == list(range(1, 8))
    assert store.list_variants("bert-x", "hpo_bert-x") == []
