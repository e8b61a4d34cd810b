"""The compose file's worker and Flower commands, run as local processes: Flower switches
the workers' task events on, a submitted job shows up in its API, and the API refuses
requests without credentials."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import redis

from hpoq.core.coordination.embedded import free_port
from hpoq.core.jobs import TASK_RUN_TRIAL
from hpoq.producer.cli import app
from hpoq.workers.celery_app import create_app
from tests.factories import write_experiment
from tests.integration.cluster import cluster_env, wait_for, workers

pytestmark = pytest.mark.slow


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


def test_a_submitted_job_appears_in_flower(
    tmp_path: Path, real_redis: redis.Redis, redis_url: str
) -> None:
    assert "worker" in {c.name for c in app.registered_commands}
    env = cluster_env(tmp_path / "out", redis_url, FLOWER_BASIC_AUTH="admin:s3cret")
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
    try:
        with workers(env, tmp_path, 1) as pool:
            wait_for(
                lambda: _get(f"{base}/api/workers", "admin:s3cret")[0] == 200,
                60,
                "Flower to answer",
                pool,
            )
            # Workers start without task events; Flower switches them on every few seconds.
            # A malformed probe job (rejected by the worker, never run) shows when they are.
            celery = create_app(redis_url)

            def events_on() -> bool:
                probe = f"probe-{uuid.uuid4().hex}"
                celery.send_task(TASK_RUN_TRIAL, args=[{"not": "a job"}], task_id=probe)
                time.sleep(0.5)
                code, body = _get(f"{base}/api/tasks", "admin:s3cret")
                return code == 200 and probe in json.loads(body)

            wait_for(events_on, 60, "Flower to switch task events on", pool)
            path = write_experiment(tmp_path, n_trials=1)
            submitted = subprocess.run(
                [sys.executable, "-m", "hpoq.producer", "submit", str(path), "--json"],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert submitted.returncode == 0, submitted.stderr
            [job_id] = json.loads(submitted.stdout)["submitted"][0]["job_ids"]

            def seen() -> dict | None:  # type: ignore[type-arg]
                code, body = _get(f"{base}/api/tasks", "admin:s3cret")
                tasks = json.loads(body) if code == 200 else {}
                task = tasks.get(job_id)
                return task if task and task.get("state") == "SUCCESS" else None

            task = wait_for(seen, 120, "the job in Flower", pool)
            assert task["name"] == "hpoq.run_trial"
            assert _get(f"{base}/api/tasks", None)[0] == 401
            assert _get(f"{base}/api/tasks", "admin:wrong")[0] == 401
    finally:
        flower.terminate()
        flower.wait(timeout=30)
        flower_log.close()
