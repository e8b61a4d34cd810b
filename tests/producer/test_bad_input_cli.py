"""`hpoq submit` on malformed and adversarial configs: each one gives exit code 2 and one
message naming the file and the field, and leaves nothing behind: no output directory, no
Redis key, no study. (The schemas themselves are tested in tests/config.)"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from typer.testing import CliRunner

from hpoq.config.hpo import BUILTIN_OBJECTIVE
from hpoq.producer.cli import app
from hpoq.producer.output import EXIT_BAD_INPUT
from tests.factories import write_experiment
from tests.producer.json_errors import error_document

Edit = Callable[[Path], None]
LAUGHS = "".join(
    f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9) if i else ', '.join(['lol'] * 9)}]\n"
    for i in range(9)
)


def _yaml(name: str, change: Callable[[dict[str, Any]], None]) -> Edit:
    """Load config/<name>, apply `change` to it, write it back."""

    def edit(root: Path) -> None:
        path = root / "config" / name
        data = yaml.safe_load(path.read_text())
        change(data)
        path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))

    return edit


def _text(name: str, transform: Callable[[str], str]) -> Edit:
    def edit(root: Path) -> None:
        path = root / "config" / name
        before = path.read_text()
        after = transform(before)
        assert after != before, f"the edit did not apply to {name}"
        path.write_text(after, encoding="utf-8")

    return edit


def _set(*path_and_value: Any) -> Callable[[dict[str, Any]], None]:
    *path, value = path_and_value

    def change(data: dict[str, Any]) -> None:
        for part in path[:-1]:
            data = data[part]
        data[path[-1]] = value

    return change


def _backbone_name(name: str) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        data["backbones"][0]["name"] = name

    return change


CASES = [
    # unknown keys
    ("unknown-key", _yaml("hpo.yaml", _set("n_trails", 4)), "hpo.yaml", "n_trails"),
    (
        "unknown-nested-key",
        _yaml("hpo.yaml", _set("search_space", "epochs", "lowest", 1)),
        "hpo.yaml",
        "lowest",
    ),
    ("unknown-experiment-key", _yaml("experiment/exp.yaml", _set("hp0", "x")), "exp.yaml", "hp0"),
    # wrong types and out-of-range values
    ("n_trials-text", _yaml("hpo.yaml", _set("n_trials", "ten")), "hpo.yaml", "n_trials"),
    ("n_trials-bool", _yaml("hpo.yaml", _set("n_trials", True)), "hpo.yaml", "n_trials"),
    ("n_trials-float", _yaml("hpo.yaml", _set("n_trials", 2.5)), "hpo.yaml", "n_trials"),
    ("n_trials-negative", _yaml("hpo.yaml", _set("n_trials", -1)), "hpo.yaml", "n_trials"),
    ("n_trials-zero", _yaml("hpo.yaml", _set("n_trials", 0)), "hpo.yaml", "n_trials"),
    ("n_trials-huge", _yaml("hpo.yaml", _set("n_trials", 10**12)), "hpo.yaml", "n_trials"),
    (
        "max_failed_trials-negative",
        _yaml("hpo.yaml", _set("max_failed_trials", -1)),
        "hpo.yaml",
        "max_failed_trials",
    ),
    (
        "max_failed_trials-text",
        _yaml("hpo.yaml", _set("max_failed_trials", "many")),
        "hpo.yaml",
        "max_failed_trials",
    ),
    ("search-space-empty", _yaml("hpo.yaml", _set("search_space", {})), "hpo.yaml", "search_space"),
    (
        "search-space-infinite",
        _text("hpo.yaml", lambda t: t.replace("low: 0.0001", "low: 1.0e+400")),
        "hpo.yaml",
        "search_space.learning_rate",
    ),
    (
        "search-space-huge-list",
        _yaml("hpo.yaml", _set("search_space", "batch_size", "choices", list(range(5000)))),
        "hpo.yaml",
        "choices",
    ),
    (
        "search-space-bad-param-name",
        _yaml("hpo.yaml", _set("search_space", "a;b", {"type": "int", "low": 1, "high": 2})),
        "hpo.yaml",
        "search_space",
    ),
    (
        "batch-sizes-negative",
        _yaml("benchmark.yaml", _set("batch_sizes", [-1])),
        "benchmark.yaml",
        "batch_sizes",
    ),
    # names that would become paths, tags or filter values
    (
        "name-traversal",
        _yaml("hpo.yaml", _backbone_name("../evil")),
        "hpo.yaml",
        "backbones.0.name",
    ),
    ("name-absolute", _yaml("hpo.yaml", _backbone_name("/etc")), "hpo.yaml", "backbones.0.name"),
    ("name-quotes", _yaml("hpo.yaml", _backbone_name("tiny'\"")), "hpo.yaml", "backbones.0.name"),
    ("name-spaces", _yaml("hpo.yaml", _backbone_name("tiny bert")), "hpo.yaml", "backbones.0.name"),
    (
        "name-cyrillic-lookalike",
        _yaml("hpo.yaml", _backbone_name("t\u0456ny")),
        "hpo.yaml",
        "backbones.0.name",
    ),
    (
        "name-fullwidth-solidus",
        _yaml("hpo.yaml", _backbone_name("tiny\uff0fx")),
        "hpo.yaml",
        "backbones.0.name",
    ),
    ("name-nul", _yaml("hpo.yaml", _backbone_name("tiny\x00")), "hpo.yaml", "backbones.0.name"),
    ("name-too-long", _yaml("hpo.yaml", _backbone_name("t" * 65)), "hpo.yaml", "backbones.0.name"),
    (
        "experiment-name-traversal",
        _yaml("experiment/exp.yaml", _set("name", "../exp")),
        "exp.yaml",
        "name",
    ),
    (
        "study-name-traversal",
        _yaml("hpo.yaml", _set("checkpoint", {"study_name": "../{backbone}"})),
        "hpo.yaml",
        "checkpoint.study_name",
    ),
    (
        "storage-path-traversal",
        _yaml("hpo.yaml", _set("checkpoint", {"storage_path": "../../{study_name}/s.journal"})),
        "hpo.yaml",
        "checkpoint.storage_path",
    ),
    (
        "split-path-traversal",
        _yaml("data.yaml", _set("splits", "train", "../../etc/passwd")),
        "data.yaml",
        "splits.train",
    ),
    (
        "objective-not-a-dotted-path",
        _yaml("hpo.yaml", _set("objective", "function", "os.system('id')")),
        "hpo.yaml",
        "objective.function",
    ),
    (
        "metric-the-builtin-objective-does-not-compute",
        _yaml(
            "hpo.yaml",
            _set(
                "objective",
                {"function": BUILTIN_OBJECTIVE, "metric": "accuracy", "direction": "maximize"},
            ),
        ),
        "hpo.yaml",
        "objective.metric",
    ),
    ("warm-start-unknown", _yaml("hpo.yaml", _set("warm_start", "best")), "hpo.yaml", "warm_start"),
    (
        "selection-disagrees",
        _yaml("selection.yaml", _set("objective", "direction", "minimize")),
        "exp.yaml",
        "selection.objective.direction",
    ),
    # files that are not configs
    ("yaml-list", _text("hpo.yaml", lambda t: "- 1\n- 2\n"), "hpo.yaml", "expected a mapping"),
    ("yaml-syntax", _text("hpo.yaml", lambda t: t + "\n  : : [\n"), "hpo.yaml", "invalid YAML"),
    (
        "yaml-billion-laughs",
        _text(
            "hpo.yaml",
            lambda t: LAUGHS + t.replace("choices:\n    - 8\n    - 16", "choices: *l8"),
        ),
        "hpo.yaml",
        "aliases expand",
    ),
    ("yaml-oversize", _text("hpo.yaml", lambda t: t + "#" * (1 << 20)), "hpo.yaml", "larger than"),
    (
        "yaml-not-utf8",
        lambda root: (root / "config" / "hpo.yaml").write_bytes(b"\xff\xfe n"),
        "hpo.yaml",
        "UTF-8",
    ),
    (
        "missing-file",
        _yaml("experiment/exp.yaml", _set("data", "../nope.yaml")),
        "nope.yaml",
        "file not found",
    ),
]


@pytest.mark.parametrize(
    ("edit", "file", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_submit_refuses_a_bad_config_with_exit_2_and_leaves_nothing(
    tmp_path: Path,
    hpoq_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,
    real_redis: redis.Redis,
    edit: Edit,
    file: str,
    field: str,
) -> None:
    monkeypatch.setenv("HPOQ_REDIS_URL", redis_url)
    path = write_experiment(tmp_path)
    edit(tmp_path)
    result = CliRunner().invoke(app, ["submit", str(path), "--json"])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    error = error_document(result.stdout, EXIT_BAD_INPUT)  # the failure, as one JSON document
    assert file in error["message"] and field in error["message"]
    assert "error:" in result.stderr and file in result.stderr and field in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr) < 5000
    assert not hpoq_env.exists()  # no output directory, so no study, no MLflow store
    assert real_redis.dbsize() == 0  # no variant number, no job, no lease


def test_a_yaml_python_tag_is_refused_by_the_real_cli_and_never_runs(
    tmp_path: Path, redis_url: str, real_redis: redis.Redis
) -> None:
    marker = tmp_path / "pwned"
    path = write_experiment(tmp_path)
    hpo = tmp_path / "config" / "hpo.yaml"
    hpo.write_text(f'x: !!python/object/apply:os.system ["touch {marker}"]\n' + hpo.read_text())
    env = {
        "PATH": "/usr/bin:/bin",
        "HPOQ_REDIS_URL": redis_url,
        "HPOQ_OUTPUT_DIR": str(tmp_path / "out"),
        "HPOQ_PLATFORM": "local",
    }
    result = subprocess.run(
        [sys.executable, "-m", "hpoq.producer", "submit", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == EXIT_BAD_INPUT
    assert "hpo.yaml" in result.stderr and "invalid YAML" in result.stderr
    assert not marker.exists()
    assert not (tmp_path / "out").exists() and real_redis.dbsize() == 0
