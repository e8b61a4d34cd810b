"""The compose file's worker and Flower commands, run as local processes: a worker started
as compose starts it (`--task-events`) shows every job in Flower from its first one, each
with its state; a job that failed (a trial whose objective failed, a benchmark that failed,
a malformed payload) is FAILURE there and in Celery's result, with the error text; and
Flower's API refuses requests without credentials."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.result import AsyncResult

from hpoq.core.celery_app import create_app
from hpoq.core.coordination.embedded import free_port
from hpoq.core.jobs import TASK_RUN_BENCHMARK, TASK_RUN_TRIAL
from hpoq.errors import JobFailed
from hpoq.producer.cli import app
from tests.factories import write_experiment
from tests.integration.cluster import cluster_env, wait_for, workers
from tests.integration.failing import ERROR
from tests.integration.probes import REPO_ROOT, hpoq, hpoq_json, quiet

pytestmark = pytest.mark.slow
AUTH = "admin:s3cret"
FINISHED = ("SUCCESS", "FAILURE")


def _get(url: str, auth: str | None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


def test_flower_shows_every_job_with_its_state_and_failed_jobs_as_failure(
    tmp_path: Path, real_redis: redis.Redis, redis_url: str
) -> None:
    assert "worker" in {c.name for c in app.registered_commands}
    env = cluster_env(
        tmp_path / "out",
        redis_url,
        FLOWER_BASIC_AUTH=AUTH,
        # The failing objective and runner live in the tests package.
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    )
    port = free_port()
    flower_log = (tmp_path / "flower.log").open("wb")
    flower = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "hpoq.workers.worker_app",
            "flower",
            "--address=127.0.0.1",
            f"--port={port}",
            "--persistent=False",
            "--max_tasks=10000",
        ],
        env=env,
        stdout=flower_log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"

    def tasks() -> dict[str, dict[str, Any]]:
        code, body = _get(f"{base}/api/tasks", AUTH)
        return json.loads(body) if code == 200 else {}  # type: ignore[no-any-return]

    def finished(task_id: str) -> dict[str, Any] | None:
        task = tasks().get(task_id)
        return task if task and task.get("state") in FINISHED else None

    try:
        with workers(env, tmp_path, 1, "hpo,benchmark", "--task-events") as pool:
            # Flower hears the new worker's own events: its event receiver is listening.
            wait_for(
                lambda: any(json.loads(_get(f"{base}/api/workers?status=1", AUTH)[1] or "{}")),
                120,
                "Flower to hear the worker",
                pool,
            )
            # The worker's first job, sent once, shows with its state (a worker that waits for
            # Flower to switch its events on runs it unseen); a malformed payload is FAILURE.
            celery = create_app(redis_url)
            probe = f"probe-{uuid.uuid4().hex}"
            celery.send_task(TASK_RUN_TRIAL, args=[{"not": "a job"}], task_id=probe)
            first = wait_for(lambda: finished(probe), 60, "the first job in Flower", pool)
            assert first["name"] == TASK_RUN_TRIAL and first["state"] == "FAILURE"
            assert "JobRejected" in first["exception"] and "malformed" in first["exception"]

            # One sweep whose trial works and whose benchmark fails, one whose objective fails.
            fine = write_experiment(
                tmp_path / "fine",
                name="fine",
                n_trials=1,
                benchmark_extra={"runner": "tests.integration.failing:out_of_memory"},
            )
            broken = write_experiment(
                tmp_path / "broken",
                name="broken",
                backbones=("wobbly",),
                n_trials=1,
                objective="tests.integration.failing:diverges",
            )
            [fine_job] = hpoq_json(env, "submit", str(fine))["submitted"][0]["job_ids"]
            [broken_job] = hpoq_json(env, "submit", str(broken))["submitted"][0]["job_ids"]

            trial = wait_for(lambda: finished(fine_job), 120, "the trial in Flower", pool)
            assert trial["name"] == TASK_RUN_TRIAL and trial["state"] == "SUCCESS"
            failed = wait_for(lambda: finished(broken_job), 120, "the failed trial", pool)
            assert failed["state"] == "FAILURE"
            text = f"trial 0 of hpo_wobbly failed: FloatingPointError: {ERROR}"
            assert text in failed["exception"]
            result = AsyncResult(broken_job, app=celery)
            assert result.state == "FAILURE" and isinstance(result.result, JobFailed)
            assert str(result.result).startswith(text)

            # The sweep's own benchmark (enqueued when its last trial finished) failed.
            def failed_benchmark() -> dict[str, Any] | None:
                found = [t for t in tasks().values() if t.get("name") == TASK_RUN_BENCHMARK]
                return found[0] if found and found[0].get("state") in FINISHED else None

            bench = wait_for(failed_benchmark, 120, "the failed benchmark", pool)
            assert bench["state"] == "FAILURE" and "CUDA out of memory" in bench["exception"]
            assert "benchmark of tiny:hpo_tiny:" in bench["exception"]

            # `hpoq benchmark --wait` runs the failed key again, follows it, and says so.
            again = hpoq(env, "benchmark", str(fine), "--wait", "--json", timeout_s=240)
            assert again.returncode == 1, again.stderr
            [rerun] = json.loads(again.stdout)["results"].values()
            assert rerun["status"] == "failed" and "CUDA out of memory" in rerun["error"]
            assert "failed; worker error: " in again.stderr and "CUDA out of memory" in again.stderr

            # Failed jobs are acknowledged: nothing waits to be delivered again.
            wait_for(lambda: quiet(real_redis), 60, "an idle cluster", pool)
            seen = tasks()
            # The probe, 2 trials, the failed trial's one replacement (max_failed_trials
            # defaults to n_trials = 1), which fails too, and 2 benchmark runs.
            assert len(seen) == 6, sorted(seen)
            assert f"{broken_job}.r1" in seen and seen[f"{broken_job}.r1"]["state"] == "FAILURE"
            assert all(t["state"] in FINISHED and t["name"] for t in seen.values()), seen
            assert _get(f"{base}/api/tasks", None)[0] == 401
            assert _get(f"{base}/api/tasks", "admin:wrong")[0] == 401
    finally:
        flower.terminate()
        flower.wait(timeout=30)
        flower_log.close()
