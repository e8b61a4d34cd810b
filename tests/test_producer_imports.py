"""The producer CLI stays cheap: importing it or running `hpoq --help` never loads the
training stack (torch, transformers) or mlflow. Each check runs in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "mlflow", "transformers", "plotly")


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_importing_the_cli_does_not_import_heavy_modules() -> None:
    proc = run_python(
        "import hpoq.producer.cli, sys; "
        "assert 'torch' not in sys.modules and 'mlflow' not in sys.modules "
        "and 'transformers' not in sys.modules and 'plotly' not in sys.modules, "
        "sorted(m for m in ('torch', 'mlflow', 'transformers', 'plotly') if m in sys.modules)"
    )
    assert proc.returncode == 0, proc.stderr


HELP_SCRIPT = """
import json, sys
sys.argv = {argv!r}
import hpoq.producer.cli as cli
try:
    cli.main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
heavy = sorted(
    name for name in sys.modules
    if name.split(".")[0] in {heavy!r}
)
sys.stdout.flush()
print("\\n@@" + json.dumps({{"code": code, "heavy": heavy}}))
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["hpoq", "--help"],
        ["hpoq", "--version"],
        ["hpoq", "config", "--help"],
        ["hpoq", "config", "validate", "--help"],
        ["hpoq", "report", "--help"],
        ["hpoq", "status", "--help"],
        ["hpoq", "config", "validate", "config/experiment/smoke.yaml", "--json"],
    ],
    ids=[
        "help",
        "version",
        "config-help",
        "validate-help",
        "report-help",
        "status-help",
        "validate",
    ],
)
def test_cli_commands_do_not_import_heavy_modules(argv: list[str]) -> None:
    proc = run_python(HELP_SCRIPT.format(argv=argv, heavy=set(HEAVY)))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.rsplit("@@", 1)[1])
    assert result["code"] in (0, None), proc.stdout + proc.stderr
    assert result["heavy"] == [], f"`{' '.join(argv)}` imported {result['heavy']}"


def test_importtime_of_help_lists_no_heavy_module() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-c",
            "import sys; sys.argv = ['hpoq', '--help']\n"
            "import hpoq.producer.cli as c\n"
            "try:\n    c.main()\nexcept SystemExit:\n    pass\n",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    imported = {
        line.rsplit("|", 1)[-1].strip().split(".")[0]
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "hpoq" in imported  # the probe works
    assert imported.isdisjoint(HEAVY), sorted(imported & set(HEAVY))


def test_probe_detects_an_import() -> None:
    """The sys.modules probe can fail: asked about a module the CLI does import, it sees it."""
    proc = run_python(HELP_SCRIPT.format(argv=["hpoq", "--help"], heavy={"typer", "rich"}))
    assert proc.returncode == 0, proc.stderr
    heavy = json.loads(proc.stdout.rsplit("@@", 1)[1])["heavy"]
    assert "typer" in heavy
    assert "rich" in heavy


def test_the_producer_and_core_import_nothing_from_the_workers() -> None:
    """What producer and workers share lives in hpoq.core (the Celery app, the Redis keys):
    no module outside hpoq.workers imports from it (worker code is named as strings only,
    for Celery to load inside a worker)."""
    import ast

    src = REPO / "src" / "hpoq"
    offenders = []
    for path in sorted(src.rglob("*.py")):
        if path.is_relative_to(src / "workers"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [
                f"{path.relative_to(src)}:{node.lineno} {name}"
                for name in names
                if name == "hpoq.workers" or name.startswith("hpoq.workers.")
            ]
    assert offenders == []
