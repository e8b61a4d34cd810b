"""`hpoq --version`, `hpoq --help` and `hpoq config validate` (exit codes, stdout/stderr)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from hpoq import __version__
from hpoq.errors import ConfigError, HpoqError, ServiceError, UnsafeNameError
from hpoq.producer.cli import app
from hpoq.producer.output import EXIT_BAD_INPUT, EXIT_FAILURE, exit_codes
from tests.producer.json_errors import error_document

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "config" / "experiment" / "smoke.yaml"
PROD = REPO / "config" / "experiment" / "prod.yaml"

runner = CliRunner()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the shipped config tree; returns its `config` folder."""
    shutil.copytree(REPO / "config", tmp_path / "config")
    return tmp_path / "config"


def break_hpo(tree: Path, old: str, new: str) -> Path:
    hpo = tree / "hpo" / "smoke.yaml"
    text = hpo.read_text(encoding="utf-8")
    assert old in text
    hpo.write_text(text.replace(old, new, 1), encoding="utf-8")
    return hpo


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"hpoq {__version__}"


def test_help() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "config" in result.stdout
    assert "--version" in result.stdout


def test_config_help() -> None:
    result = runner.invoke(app, ["config", "validate", "--help"])
    assert result.exit_code == 0
    assert "--json" in result.stdout


@pytest.mark.parametrize("path", [SMOKE, PROD], ids=["smoke", "prod"])
def test_validate_text(path: Path) -> None:
    result = runner.invoke(app, ["config", "validate", str(path)])
    assert result.exit_code == 0, result.output
    assert f"valid: experiment {path.stem}" in result.stdout
    assert str(path) in result.stdout
    assert result.stderr == ""


def test_validate_text_lists_the_resolved_experiment() -> None:
    result = runner.invoke(app, ["config", "validate", str(SMOKE)])
    assert "backbones: tiny-bert" in result.stdout
    assert "n_trials: 4" in result.stdout
    assert "data: synthetic-ner v1" in result.stdout
    assert "hpoq-smoke-hpo" in result.stdout


@pytest.mark.parametrize("path", [SMOKE, PROD], ids=["smoke", "prod"])
def test_validate_json(path: Path) -> None:
    result = runner.invoke(app, ["config", "validate", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    doc = json.loads(result.stdout)
    assert doc["name"] == path.stem
    assert doc["hpo"]["n_trials"] >= 1
    assert doc["hpo"]["backbones"]
    assert doc["data"]["name"] == "synthetic-ner"
    # Printed resolved: relative to the data file that names it.
    assert doc["data"]["local_path"] == str(REPO.resolve() / "data" / "generated" / "synthetic-ner")
    assert doc["benchmark"]["run"] == {"mode": None}
    assert doc["selection"]["objective"]["metric"] == "macro-f1"
    assert doc["tags"]["benchmark"]["key"] == "benchmark_key"


def test_validate_json_smoke_details() -> None:
    doc = json.loads(runner.invoke(app, ["config", "validate", str(SMOKE), "--json"]).stdout)
    assert [b["name"] for b in doc["hpo"]["backbones"]] == ["tiny-bert"]
    assert doc["hpo"]["run"]["mode"] == "reuse_if_exists"
    assert "learning_rate" in doc["hpo"]["search_space"]
    assert "hpoq-smoke-hpo" in json.dumps(doc)


def test_validate_relative_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    result = runner.invoke(app, ["config", "validate", "config/experiment/smoke.yaml", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["name"] == "smoke"


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_invalid_field_exits_2_naming_file_and_field(tree: Path, as_json: bool) -> None:
    hpo = break_hpo(tree, "n_trials: 4", "n_trials: 0")
    args = ["config", "validate", str(tree / "experiment" / "smoke.yaml")]
    result = runner.invoke(app, args + (["--json"] if as_json else []))
    assert result.exit_code == EXIT_BAD_INPUT == 2
    if as_json:
        assert "n_trials" in error_document(result.stdout, 2, "config")["message"]
    else:
        assert result.stdout == ""
    assert str(hpo.resolve()) in result.stderr
    assert "n_trials" in result.stderr
    assert "greater than or equal to 1" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("name: tiny-bert", "name: ../x", "backbones.0.name"),
        ("name: tiny-bert", "name: t\u0430ny", "backbones.0.name"),
        ("sampler: {type: tpe", "sampler: {type: grid", "sampler.type"),
        ("  mode: reuse_if_exists", "  mode: always", "run.mode"),
        ("n_trials: 4", "n_trails: 4", "n_trails"),
    ],
)
def test_invalid_configs_name_the_field(tree: Path, old: str, new: str, field: str) -> None:
    break_hpo(tree, old, new)
    result = runner.invoke(
        app, ["config", "validate", str(tree / "experiment" / "smoke.yaml"), "--json"]
    )
    assert result.exit_code == 2
    assert f"{field}:" in error_document(result.stdout, 2, "config")["message"]
    assert f"{field}:" in result.stderr
    assert "smoke.yaml" in result.stderr


def test_missing_file_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = runner.invoke(app, ["config", "validate", str(missing), "--json"])
    assert result.exit_code == 2
    assert "file not found" in error_document(result.stdout, 2, "config")["message"]
    assert "file not found" in result.stderr
    assert "nope.yaml" in result.stderr


def test_yaml_syntax_error_exits_2(tree: Path) -> None:
    (tree / "benchmark.yaml").write_text("batch_sizes: [1, 8\n", encoding="utf-8")
    result = runner.invoke(
        app, ["config", "validate", str(tree / "experiment" / "smoke.yaml"), "--json"]
    )
    assert result.exit_code == 2
    assert "invalid YAML" in error_document(result.stdout, 2, "config")["message"]
    assert "benchmark.yaml: invalid YAML" in result.stderr


def test_top_level_list_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text("- name: x\n", encoding="utf-8")
    result = runner.invoke(app, ["config", "validate", str(path)])
    assert result.exit_code == 2
    assert "expected a mapping at the top level" in result.stderr


@pytest.mark.parametrize("name", ["[/]x", "[bold]x", "[red]"])
def test_error_message_is_printed_literally(tree: Path, name: str) -> None:
    """Config values end up in error messages; they must not be read as console markup."""
    break_hpo(tree, "name: tiny-bert", f'name: "{name}"')
    result = runner.invoke(app, ["config", "validate", str(tree / "experiment" / "smoke.yaml")])
    assert result.exit_code == 2, result.output
    assert f"'{name}' is not a safe name" in result.stderr


def test_valid_config_at_a_path_with_brackets(tmp_path: Path) -> None:
    folder = tmp_path / "runs[red]"
    shutil.copytree(REPO / "config", folder / "config")
    path = folder / "config" / "experiment" / "smoke.yaml"
    result = runner.invoke(app, ["config", "validate", str(path)])
    assert result.exit_code == 0, result.output
    assert str(path) in result.stdout


def test_valid_config_values_are_printed_literally(tree: Path) -> None:
    """Free-text values (data version, MLflow experiment names) are not console markup."""
    data = tree / "data" / "synthetic_ner.yaml"
    data.write_text(
        data.read_text(encoding="utf-8").replace('version: "1"', 'version: "[/]"'), "utf-8"
    )
    exp = tree / "experiment" / "smoke.yaml"
    exp.write_text(
        exp.read_text(encoding="utf-8").replace("hpo: hpoq-smoke-hpo", 'hpo: "[bold]runs"'),
        encoding="utf-8",
    )
    result = runner.invoke(app, ["config", "validate", str(exp)])
    assert result.exit_code == 0, result.output
    assert "data: synthetic-ner v[/]" in result.stdout
    assert "mlflow: [bold]runs, hpoq-smoke-benchmark" in result.stdout


# --- exit-code mapping -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigError("bad config"), EXIT_BAD_INPUT),
        (UnsafeNameError("bad name"), EXIT_BAD_INPUT),
        (ServiceError("redis down"), EXIT_FAILURE),
        (HpoqError("other"), EXIT_FAILURE),
    ],
)
def test_exit_codes(capsys: pytest.CaptureFixture[str], error: HpoqError, code: int) -> None:
    with pytest.raises(typer.Exit) as exc, exit_codes():
        raise error
    assert exc.value.exit_code == code
    captured = capsys.readouterr()
    assert captured.out == ""
    assert str(error) in captured.err


def test_error_messages_redact_urls(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit), exit_codes():
        raise ServiceError("cannot reach redis://:s3cret@cache:6379/0")
    err = capsys.readouterr().err
    assert "s3cret" not in err
    assert "redis://:***@cache:6379/0" in err


def test_unexpected_errors_exit_1_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as exc, exit_codes():
        raise RuntimeError("lost postgresql://u:pw@db/optuna")
    assert exc.value.exit_code == EXIT_FAILURE
    err = capsys.readouterr().err
    assert "RuntimeError" in err
    assert "Traceback" not in err
    assert ":pw@" not in err


def test_exit_passes_through() -> None:
    with pytest.raises(typer.Exit) as exc, exit_codes():
        raise typer.Exit(0)
    assert exc.value.exit_code == 0


# --- the real console script ---------------------------------------------------------------


def hpoq_script() -> str:
    script = shutil.which("hpoq", path=str(Path(sys.executable).parent)) or shutil.which("hpoq")
    assert script, "the hpoq console script is not installed"
    return script


def test_console_script_validates_smoke() -> None:
    proc = subprocess.run(
        [hpoq_script(), "config", "validate", "config/experiment/smoke.yaml", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["name"] == "smoke"


def test_console_script_reports_bad_input(tree: Path) -> None:
    break_hpo(tree, "n_trials: 4", "n_trials: -3")
    proc = subprocess.run(
        [hpoq_script(), "config", "validate", str(tree / "experiment" / "smoke.yaml"), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "n_trials" in error_document(proc.stdout, 2, "config")["message"]
    assert "n_trials" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_console_script_version() -> None:
    proc = subprocess.run(
        [hpoq_script(), "--version"], capture_output=True, text=True, timeout=120, check=True
    )
    assert proc.stdout.strip() == f"hpoq {__version__}"
