"""Under `--json` every failure prints one JSON document on stdout,
`{"error": {"kind", "message", "exit_code"}}`, and the human message on stderr."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from hpoq.errors import ConfigError, HpoqError, ServiceError, SettingsError, UnsafeNameError
from hpoq.producer.cli import app, usage_error_class
from hpoq.producer.output import exit_codes
from hpoq.producer.signals import Interrupted
from tests.factories import write_experiment
from tests.integration.cluster import cluster_env
from tests.integration.probes import hpoq
from tests.producer.json_errors import error_document

COMMANDS = [
    ["config", "validate"],
    ["submit"],
    ["retrieve"],
    ["benchmark"],
    ["status"],
    ["run"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
def test_every_command_prints_an_error_document(
    command: list[str], tmp_path: Path, hpoq_env: Path
) -> None:
    result = CliRunner().invoke(app, [*command, str(tmp_path / "missing.yaml"), "--json"])
    assert result.exit_code == 2
    error = error_document(result.stdout, 2, "config")
    assert "missing.yaml: file not found" in error["message"]
    assert "missing.yaml: file not found" in result.stderr
    assert not hpoq_env.exists()


@pytest.mark.parametrize(
    ("error", "kind", "code"),
    [
        (SettingsError("HPOQ_X='y': expected z"), "environment", 2),
        (ConfigError("bad config"), "config", 2),
        (UnsafeNameError("bad name"), "unsafe_name", 2),
        (ServiceError("redis down at redis://:pw@h:1/0"), "service", 1),
        (HpoqError("other"), "failure", 1),
        (RuntimeError("a bug"), "internal", 1),
        (Interrupted(15), "interrupted", 143),
        (KeyboardInterrupt(), "interrupted", 130),
    ],
)
def test_each_kind_of_failure_has_its_document(
    capsys: pytest.CaptureFixture[str], error: BaseException, kind: str, code: int
) -> None:
    with pytest.raises(typer.Exit) as exc, exit_codes(as_json=True):
        raise error
    assert exc.value.exit_code == code
    captured = capsys.readouterr()
    document = error_document(captured.out, code, kind)
    assert ":pw@" not in captured.out and ":pw@" not in captured.err
    assert document["message"].split(":")[0] in captured.err


def _hpoq(output: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = cluster_env(output, "", **extra)
    env.pop("HPOQ_REDIS_URL")
    return hpoq(env, *args)


def test_a_usage_error_prints_a_document_too(tmp_path: Path) -> None:
    """Found by the argument parser, before any command runs (the console script)."""
    result = _hpoq(tmp_path / "out", "run", "--workers", "0", "x.yaml", "--json")
    assert result.returncode == 2
    error = error_document(result.stdout, 2, "usage")
    assert "--workers" in error["message"] and "--workers" in result.stderr
    plain = _hpoq(tmp_path / "out", "status", "--no-such-option")
    assert plain.returncode == 2 and plain.stdout == "" and "--no-such-option" in plain.stderr


def test_a_bad_environment_value_exits_2_naming_it(tmp_path: Path) -> None:
    path = write_experiment(tmp_path)
    output = tmp_path / "out"
    result = _hpoq(output, "submit", str(path), "--json", HPOQ_VISIBILITY_TIMEOUT="12h")
    assert result.returncode == 2
    error = error_document(result.stdout, 2, "environment")
    assert error["message"] == (
        "HPOQ_VISIBILITY_TIMEOUT='12h': expected a whole number of seconds above 0 "
        "(keep it above the longest job)"
    )
    assert "HPOQ_VISIBILITY_TIMEOUT" in result.stderr and "Traceback" not in result.stderr
    assert not output.exists()  # no embedded Redis was started


def test_a_bad_broker_url_exits_2_naming_it_and_hiding_its_password(tmp_path: Path) -> None:
    path = write_experiment(tmp_path)
    output = tmp_path / "out"
    result = _hpoq(output, "submit", str(path), "--json", HPOQ_BROKER_URL="kafka://u:pw@h:9092")
    assert result.returncode == 2
    error = error_document(result.stdout, 2, "environment")
    assert error["message"].startswith("HPOQ_BROKER_URL='kafka://u:***@h:9092': expected a redis")
    assert ":pw@" not in result.stdout + result.stderr
    assert not output.exists()  # nothing started, nothing written


def test_an_unreachable_service_is_exit_1_with_a_document(tmp_path: Path) -> None:
    result = _hpoq(tmp_path / "out", "status", "--json")
    assert result.returncode == 1
    assert "no Redis" in error_document(result.stdout, 1, "service")["message"]


def test_the_usage_error_class_is_still_reachable_through_typer() -> None:
    """main() catches click's ClickException as typer ships it; this fails if that moves."""
    cls = usage_error_class()
    assert issubclass(typer.BadParameter, cls)
    assert {"exit_code", "format_message", "show"} <= set(dir(cls))
