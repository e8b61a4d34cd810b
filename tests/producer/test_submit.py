"""Submitting variants: the run-mode table, atomic allocation, what lands on the queue."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis

from hpoq.config.settings import Settings
from hpoq.core.celery_app import create_app
from hpoq.core.coordination.keys import redis_keys
from hpoq.core.fingerprints import study_key_hash
from hpoq.core.runtime import Runtime
from hpoq.producer.submit import Submitter
from tests.factories import make_experiment, seed_mlflow_store, write_experiment

_TEMPLATE: list[Path] = []


@pytest.fixture(autouse=True)
def _mlflow_template(mlflow_template: Path) -> None:
    _TEMPLATE[:] = [mlflow_template]


def _submitter(tmp_path: Path, redis_client: redis.Redis, url: str, **kwargs: object) -> Submitter:
    experiment = make_experiment(tmp_path, **kwargs)  # type: ignore[arg-type]
    seed_mlflow_store(_TEMPLATE[0], tmp_path / "out")  # the store jobs' files are published to
    runtime = Runtime.from_settings(Settings(output_dir=tmp_path / "out", platform="local"))
    return Submitter(experiment, runtime, redis_client, redis_keys(runtime), create_app(url))


def _queued(client: redis.Redis) -> list[dict[str, object]]:
    return [json.loads(m) for m in client.lrange("hpo", 0, -1)]


def test_first_submission_creates_variant_one_and_enqueues_n_trials(
    tmp_path: Path, real_redis: redis.Redis, redis_url: str
) -> None:
    submitter = _submitter(tmp_path, real_redis, redis_url, n_trials=3)
    [result] = submitter.submit()
    assert (result.study_name, result.variant, result.action) == ("hpo_tiny", 1, "created")
    assert result.trials_enqueued == 3
    messages = _queued(real_redis)
    assert sorted(m["headers"]["id"] for m in messages) == sorted(result.job_ids)  # type: ignore[index]
    assert all(m["content-type"] == "application/json" for m in messages)


def test_resubmitting_an_unfinished_variant_enqueues_nothing_more(
    tmp_path: Path, real_redis: redis.Redis, redis_url: str
) -> None:
    submitter = _submitter(tmp_path, real_redis, redis_url, n_trials=3)
    submitter.submit()
    [again] = submitter.submit()
    assert (again.action, again.trials_enqueued) == ("continued", 0)
    assert len(_queued(real_redis)) == 3


def test_force_new_allocates_the_next_variant(
    tmp_path: Path, real_redis: redis.Redis, redis_url: str
) -> None:
    submitter = _submitter(tmp_path, real_redis, redis_url, n_trials=2)
    submitter.submit()
    [second] = submitter.submit(mode_override="force_new")
    [third] = submitter.submit(mode_override="force_new")
    assert [second.study_name, third.study_name] == ["hpo_tiny_v2", "hpo_tiny_v3"]
    [latest] = submitter.submit(mode_override="reuse_if_exists")
    assert (latest.study_name, latest.action) == ("hpo_tiny_v3", "continued")


def test_reuse_without_auto_resume_uses_the_incomplete_variant_as_is(
    tmp_path: Path, real_redis: redis.Redis, redis_url: str
) -> None:
    submitter = _submitter(tmp_path, real_redis, redis_url, n_trials=2, auto_resume=False)
    submitter.submit()
    real_redis.delete("hpo")
    [result] = submitter.submit()
    assert (result.action, result.trials_enqueued) == ("reused", 0)
    [resumed] = submitter.submit(mode_override="resume_if_incomplete")
    assert resumed.action == "continued"


def test_counter_is_seeded_from_existing_studies_after_redis_is_wiped(
    tmp_path: Path, real_redis: redis.Redis, redis_url: str
) -> None:
    submitter = _submitter(tmp_path, real_redis, redis_url, n_trials=1)
    submitter.submit(mode_override="force_new")
    submitter.submit(mode_override="force_new")
    real_redis.flushdb()
    [result] = submitter.submit(mode_override="force_new")
    assert result.study_name == "hpo_tiny_v3"


def test_concurrent_force_new_in_threads_gets_distinct_variants(
    tmp_path: Path, real_redis: redis.Redis, redis_url: str
) -> None:
    submitter = _submitter(tmp_path, real_redis, redis_url, n_trials=1)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: submitter.submit(mode_override="force_new")[0], range(4)))
    assert sorted(r.variant for r in results) == [1, 2, 3, 4]


def _cli_env(tmp_path: Path, redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HPOQ_", "MLFLOW_"))}
    env.update(
        HPOQ_REDIS_URL=redis_url, HPOQ_OUTPUT_DIR=str(tmp_path / "out"), HPOQ_PLATFORM="local"
    )
    return env


def test_eight_concurrent_cli_producers_get_eight_variants(
    tmp_path: Path, real_redis: redis.Redis, redis_url: str
) -> None:
    path = write_experiment(tmp_path, n_trials=1)
    env = _cli_env(tmp_path, redis_url)
    cmd = [
        sys.executable,
        "-m",
        "hpoq.producer",
        "submit",
        str(path),
        "--run-mode",
        "force_new",
        "--json",
    ]
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(8)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e.decode()[-2000:] for _, e in outputs]
    names = sorted(json.loads(out)["submitted"][0]["study_name"] for out, _ in outputs)
    expected = sorted(["hpo_tiny"] + [f"hpo_tiny_v{n}" for n in range(2, 9)])
    assert names == expected
    study_dirs = sorted(p.name for p in (tmp_path / "out" / "local" / "hpo" / "tiny").iterdir())
    assert study_dirs == expected


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--backbone", "nope"], 2, "--backbone: unknown 'nope'"),
        (["--run-mode", "sometimes"], 2, "--run-mode: 'sometimes' is not a run mode"),
        (["--variant", "3"], 2, "--variant 3: backbone 'tiny' has no such variant"),
        (["--variant", "0"], 2, "--variant"),
    ],
)
def test_bad_arguments_exit_2_and_leave_nothing(
    tmp_path: Path,
    redis_url: str,
    real_redis: redis.Redis,
    args: list[str],
    code: int,
    message: str,
) -> None:
    path = write_experiment(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "hpoq.producer", "submit", str(path), *args],
        env=_cli_env(tmp_path, redis_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == code
    assert message in result.stderr
    assert not (tmp_path / "out").exists()
    assert real_redis.dbsize() == 0


def test_invalid_config_exits_2(tmp_path: Path, redis_url: str) -> None:
    path = write_experiment(tmp_path)
    (tmp_path / "config" / "hpo.yaml").write_text("n_trials: -1\n")
    result = subprocess.run(
        [sys.executable, "-m", "hpoq.producer", "submit", str(path)],
        env=_cli_env(tmp_path, redis_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "hpo.yaml" in result.stderr and "n_trials" in result.stderr


def test_unreachable_redis_exits_1_without_a_password_or_a_study(tmp_path: Path) -> None:
    path = write_experiment(tmp_path)
    env = _cli_env(tmp_path, "redis://:hunter2@127.0.0.1:1/0")
    result = subprocess.run(
        [sys.executable, "-m", "hpoq.producer", "submit", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "unreachable" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    assert not (tmp_path / "out" / "local" / "hpo").exists()


def test_variant_tops_up_an_older_variant_and_refuses_force_new(
    tmp_path: Path, real_redis: redis.Redis, redis_url: str
) -> None:
    from hpoq.core.coordination.active_variants import ActiveVariants
    from hpoq.errors import InputError

    submitter = _submitter(tmp_path, real_redis, redis_url, n_trials=2)
    submitter.submit()
    real_redis.flushdb()  # v1's jobs lost with Redis's data
    [v2] = submitter.submit(mode_override="force_new")
    assert v2.variant == 2
    [latest] = submitter.submit(mode_override="resume_if_incomplete")
    assert (latest.variant, latest.trials_enqueued) == (2, 0)  # only the latest is looked at
    [older] = submitter.submit(variant=1)
    assert (older.study_name, older.action, older.trials_enqueued) == ("hpo_tiny", "continued", 2)
    assert set(ActiveVariants(real_redis, submitter.keys).variants()) == {
        study_key_hash("tiny", "hpo_tiny"),
        study_key_hash("tiny", "hpo_tiny_v2"),
    }
    with pytest.raises(InputError, match="force_new"):
        submitter.submit(variant=1, mode_override="force_new")
