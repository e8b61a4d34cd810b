"""YAML loading: one readable error per bad file, naming the file, the field and the expectation."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from hpoq.config.base import RunMode
from hpoq.config.benchmark import BenchmarkConfig
from hpoq.config.data import DataConfig
from hpoq.config.hpo import HpoConfig
from hpoq.config.loader import (
    MAX_CONFIG_BYTES,
    MAX_ERRORS_SHOWN,
    experiment_files,
    load_experiment,
    load_model,
    read_yaml,
)
from hpoq.config.tags import TagsRegistry
from hpoq.errors import ConfigError, InputError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the shipped config tree under tmp_path/config; returns the config folder."""
    shutil.copytree(REPO / "config", tmp_path / "config")
    return tmp_path / "config"


def edit_yaml(path: Path, **changes: object) -> None:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data.update(changes)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")


# --- read_yaml ------------------------------------------------------------------------


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="file not found") as exc:
        read_yaml(path)
    assert str(path) in str(exc.value)


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory, expected a YAML file"):
        read_yaml(tmp_path)


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("n_trials: 3\nbackbones: [a,\n", encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        read_yaml(path)
    message = str(exc.value)
    assert message.startswith(f"{path}: invalid YAML")
    assert "line 3" in message
    assert "Traceback" not in message


def test_yaml_tab_indent_error(tmp_path: Path) -> None:
    path = tmp_path / "tab.yaml"
    path.write_text("a:\n\tb: 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="invalid YAML"):
        read_yaml(path)


@pytest.mark.parametrize(
    ("text", "kind"),
    [("- a\n- b\n", "list"), ("just text\n", "str"), ("42\n", "int")],
)
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str, kind: str) -> None:
    path = tmp_path / "top.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        read_yaml(path)
    assert str(exc.value) == f"{path}: expected a mapping at the top level, got {kind}"


def test_empty_file_is_an_empty_mapping(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing here\n", encoding="utf-8")
    assert read_yaml(path) == {}


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8") as exc:
        read_yaml(path)
    assert str(path) in str(exc.value)


def test_oversized_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("a: " + "x" * MAX_CONFIG_BYTES + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="larger than"):
        read_yaml(path)


LAUGHS = "".join(
    f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9) if i else ', '.join(['lol'] * 9)}]\n"
    for i in range(9)
)


def test_an_alias_bomb_is_refused_in_one_line_before_it_expands(tmp_path: Path) -> None:
    path = tmp_path / "hpo.yaml"
    path.write_text(LAUGHS + "search_space: {x: {type: categorical, choices: *l8}}\n", "utf-8")
    with pytest.raises(ConfigError) as exc:
        read_yaml(path)  # 9**9 values if it were built: it must be refused, not expanded
    assert str(exc.value) == (
        f"{path}: YAML aliases expand to more than 100000 values (an alias bomb?); "
        "not a config file"
    )


def test_a_few_aliases_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("base: &b {low: 1, high: 2}\nother: *b\nthird: *b\n", encoding="utf-8")
    assert read_yaml(path) == {
        "base": {"low": 1, "high": 2},
        "other": {"low": 1, "high": 2},
        "third": {"low": 1, "high": 2},
    }


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("a: &a [1, *a]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="refers to itself"):
        read_yaml(path)


def test_yaml_tags_are_not_executed(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text("a: !!python/object/apply:os.system ['true']\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="invalid YAML"):
        read_yaml(path)


def test_config_error_is_input_error() -> None:
    assert issubclass(ConfigError, InputError)


# --- load_model messages ------------------------------------------------------------------

HPO_OK = """\
backbones:
  - name: tiny
    architecture: {}
n_trials: 3
search_space:
  lr: {type: log, low: 1.0e-5, high: 1.0e-3}
"""


@pytest.mark.parametrize(
    ("old", "new", "field", "expected"),
    [
        pytest.param(
            "name: tiny", "name: ../x", "backbones.0.name", "not a safe name", id="bad-name"
        ),
        pytest.param(
            "name: tiny", 'name: "a b"', "backbones.0.name", "not a safe name", id="name-space"
        ),
        pytest.param(
            "name: tiny",
            "name: t\u0430ny",
            "backbones.0.name",
            "not a safe name",
            id="name-cyrillic",
        ),
        pytest.param(
            "name: tiny", "name: ''", "backbones.0.name", "must not be empty", id="name-empty"
        ),
        pytest.param(
            "n_trials: 3", "n_trials: 0", "n_trials", "greater than or equal to 1", id="zero-trials"
        ),
        pytest.param(
            "n_trials: 3", "n_trials: lots", "n_trials", "valid integer", id="trials-type"
        ),
        pytest.param("n_trials: 3", "n_trial: 3", "n_trial", "unknown key", id="typo-key"),
        pytest.param(
            "n_trials: 3",
            "n_trials: 3\nsampler: {type: grid}",
            "sampler.type",
            "'tpe' or 'random'",
            id="bad-enum",
        ),
        pytest.param(
            "n_trials: 3",
            "n_trials: 3\nrun: {mode: sometimes}",
            "run.mode",
            "reuse_if_exists",
            id="bad-mode",
        ),
        pytest.param(
            "low: 1.0e-5, high: 1.0e-3",
            "low: 1.0e-3, high: 1.0e-5",
            "search_space.lr",
            "must not be above 'high'",
            id="low-above-high",
        ),
        pytest.param(
            "low: 1.0e-5, high: 1.0e-3",
            "low: 0, high: 1.0e-3",
            "search_space.lr",
            "positive on a log scale",
            id="log-zero",
        ),
        pytest.param(
            "    architecture: {}",
            "    architecture: {}\n  - name: tiny\n    model: m",
            "backbones",
            "repeated: tiny",
            id="duplicate",
        ),
        pytest.param("n_trials: 3\n", "", "n_trials", "required field is missing", id="missing"),
    ],
)
def test_validation_message_names_file_field_and_expectation(
    tmp_path: Path, old: str, new: str, field: str, expected: str
) -> None:
    path = tmp_path / "hpo.yaml"
    assert old in HPO_OK
    path.write_text(HPO_OK.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_model(path, HpoConfig)
    lines = str(exc.value).splitlines()
    assert lines[0] == f"{path}: invalid config"
    matching = [line for line in lines[1:] if line.strip().startswith(f"{field}")]
    assert matching, lines
    assert any(expected in line for line in matching), lines


def test_all_errors_are_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "hpo.yaml"
    path.write_text("backbones: []\nn_trials: -1\nsearch_space: {}\ncolour: red\n", "utf-8")
    with pytest.raises(ConfigError) as exc:
        load_model(path, HpoConfig)
    message = str(exc.value)
    for field in ("backbones", "n_trials", "search_space", "colour"):
        assert f"\n  {field}: " in message


def test_a_file_with_many_errors_gets_a_short_message(tmp_path: Path) -> None:
    path = tmp_path / "hpo.yaml"
    unknown = "".join(f"unknown_{i}: 1\n" for i in range(40))
    path.write_text("backbones: []\nn_trials: -1\n" + unknown, "utf-8")
    with pytest.raises(ConfigError) as exc:
        load_model(path, HpoConfig)
    lines = str(exc.value).splitlines()
    assert len(lines) == 1 + MAX_ERRORS_SHOWN + 1
    assert lines[-1] == f"  ... and {42 + 1 - MAX_ERRORS_SHOWN} more"


def test_load_model_of_a_list_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bench.yaml"
    path.write_text("- batch_sizes: [1]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_model(path, BenchmarkConfig)


@pytest.mark.parametrize(
    ("relative", "model"),
    [
        ("hpo/smoke.yaml", HpoConfig),
        ("hpo/prod.yaml", HpoConfig),
        ("data/synthetic_ner.yaml", DataConfig),
        ("benchmark.yaml", BenchmarkConfig),
        ("tags.yaml", TagsRegistry),
    ],
)
def test_every_shipped_file_loads(relative: str, model: type) -> None:
    load_model(REPO / "config" / relative, model)


# --- load_experiment --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["smoke", "prod"])
def test_shipped_experiments_load(name: str) -> None:
    exp = load_experiment(REPO / "config" / "experiment" / f"{name}.yaml")
    assert exp.name == name
    assert exp.source == (REPO / "config" / "experiment" / f"{name}.yaml").resolve()
    assert exp.data_dir() == REPO.resolve() / "data" / "generated" / "synthetic-ner"
    assert exp.hpo.run.mode is RunMode.REUSE_IF_EXISTS
    assert exp.benchmark.run.mode is None
    assert exp.selection.objective.metric == exp.hpo.objective.metric
    assert exp.tags.benchmark.key == "benchmark_key"


def test_smoke_experiment_details() -> None:
    exp = load_experiment(str(REPO / "config" / "experiment" / "smoke.yaml"))
    assert [b.name for b in exp.hpo.backbones] == ["tiny-bert"]
    assert exp.hpo.n_trials == 4
    assert exp.hpo_experiment_name == "hpoq-smoke-hpo"
    assert exp.benchmark_experiment_name == "hpoq-smoke-benchmark"


def test_prod_experiment_gets_default_mlflow_names() -> None:
    exp = load_experiment(REPO / "config" / "experiment" / "prod.yaml")
    assert [b.name for b in exp.hpo.backbones] == ["distilbert", "deberta"]
    assert exp.hpo_experiment_name == "prod-hpo"
    assert exp.benchmark_experiment_name == "prod-benchmark"


def test_experiment_outside_a_config_tree_keeps_paths_relative_to_their_files(
    tree: Path, tmp_path: Path
) -> None:
    exp_dir = tmp_path / "elsewhere"
    exp_dir.mkdir()
    (exp_dir / "e.yaml").write_text(
        "name: e\n"
        f"hpo: {tree / 'hpo' / 'smoke.yaml'}\n"
        f"data: {tree / 'data' / 'synthetic_ner.yaml'}\n"
        f"benchmark: {tree / 'benchmark.yaml'}\n"
        f"selection: {tree / 'selection.yaml'}\n",
        encoding="utf-8",
    )
    exp = load_experiment(exp_dir / "e.yaml")
    # local_path is relative to the data file, wherever the experiment file lies.
    assert exp.data_dir() == (tree.parent / "data" / "generated" / "synthetic-ner").resolve()
    assert exp.tags == TagsRegistry()  # no tags file: defaults


def _project(tmp_path: Path, data: dict[str, object], backbone: dict[str, object]) -> Path:
    """experiment/e.yaml naming sets/data.yaml and search/hpo.yaml: three different folders."""
    for folder in ("experiment", "sets", "search"):
        (tmp_path / folder).mkdir()
    for name in ("benchmark.yaml", "selection.yaml"):
        shutil.copy(REPO / "config" / name, tmp_path / "experiment" / name)
    hpo = yaml.safe_load((REPO / "config" / "hpo" / "smoke.yaml").read_text(encoding="utf-8"))
    hpo["backbones"] = [{"name": "b", **backbone}]
    (tmp_path / "search" / "hpo.yaml").write_text(yaml.safe_dump(hpo), encoding="utf-8")
    ner = yaml.safe_load((REPO / "config" / "data" / "synthetic_ner.yaml").read_text("utf-8"))
    (tmp_path / "sets" / "data.yaml").write_text(yaml.safe_dump({**ner, **data}), "utf-8")
    (tmp_path / "experiment" / "e.yaml").write_text(
        "name: e\nhpo: ../search/hpo.yaml\ndata: ../sets/data.yaml\n"
        "benchmark: benchmark.yaml\nselection: selection.yaml\n",
        encoding="utf-8",
    )
    return tmp_path / "experiment" / "e.yaml"


def test_local_path_resolves_against_the_data_file_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _project(tmp_path, {"local_path": "ner/files"}, {"model": "org/x"})
    monkeypatch.chdir(tmp_path / "experiment")
    exp = load_experiment(path)
    assert exp.data.local_path == str(tmp_path.resolve() / "sets" / "ner" / "files")
    assert exp.data_dir() == tmp_path.resolve() / "sets" / "ner" / "files"


@pytest.mark.parametrize(
    ("model", "made", "expected"),
    [
        pytest.param("../models/tiny", "models/tiny", "models/tiny", id="dot-relative"),
        pytest.param("tiny-local", "search/tiny-local", "search/tiny-local", id="bare-dir"),
        pytest.param("org/name", "search/org/name", "search/org/name", id="org-name-dir"),
        pytest.param("./missing", None, "search/missing", id="path-shaped-missing"),
    ],
)
def test_a_local_model_directory_resolves_against_the_hpo_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: str, made: str | None, expected: str
) -> None:
    monkeypatch.chdir(tmp_path)
    path = _project(tmp_path, {"local_path": "ner"}, {"model": model})
    if made is not None:
        (tmp_path / made).mkdir(parents=True)
    exp = load_experiment(path)
    assert exp.hpo.backbone("b").model == str(tmp_path.resolve() / expected)


@pytest.mark.parametrize("hub_id", ["distilbert-base-cased", "microsoft/deberta-v3-small"])
def test_a_hub_id_stays_a_hub_id(tmp_path: Path, hub_id: str) -> None:
    exp = load_experiment(_project(tmp_path, {"local_path": "ner"}, {"model": hub_id}))
    assert exp.hpo.backbone("b").model == hub_id


def test_home_and_absolute_paths_are_taken_as_they_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = _project(tmp_path, {"local_path": "~/ner"}, {"model": str(tmp_path / "abs")})
    exp = load_experiment(path)
    assert exp.data.local_path == str(tmp_path / "home" / "ner")
    assert exp.hpo.backbone("b").model == str(tmp_path / "abs")


def test_missing_experiment_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found") as exc:
        load_experiment(tmp_path / "missing.yaml")
    assert "missing.yaml" in str(exc.value)


def test_experiment_naming_a_missing_file(tree: Path) -> None:
    edit_yaml(tree / "experiment" / "smoke.yaml", hpo="../hpo/nope.yaml")
    with pytest.raises(ConfigError, match="file not found") as exc:
        load_experiment(tree / "experiment" / "smoke.yaml")
    assert str((tree / "hpo" / "nope.yaml").resolve()) in str(exc.value)


@pytest.mark.parametrize("field", ["hpo", "data", "benchmark", "selection", "tags"])
def test_an_experiment_that_includes_itself_gets_one_line(tree: Path, field: str) -> None:
    experiment = tree / "experiment" / "smoke.yaml"
    edit_yaml(experiment, **{field: "smoke.yaml"})
    with pytest.raises(ConfigError) as exc:
        load_experiment(experiment)
    assert str(exc.value) == (
        f"{experiment.resolve()}: {field}: names this experiment file itself (an experiment "
        f"includes itself); name the {field} config file instead"
    )


def test_an_experiment_naming_a_directory_says_so(tree: Path) -> None:
    experiment = tree / "experiment" / "smoke.yaml"
    edit_yaml(experiment, hpo="../hpo")
    with pytest.raises(ConfigError) as exc:
        load_experiment(experiment)
    assert str(exc.value) == (
        f"{experiment.resolve()}: hpo: {(tree / 'hpo').resolve()} is a directory, "
        "expected a YAML file"
    )


def test_experiment_files_are_resolved(tree: Path) -> None:
    files = experiment_files(tree / "experiment" / "smoke.yaml")
    assert files == {
        "experiment": (tree / "experiment" / "smoke.yaml").resolve(),
        "final_training": (tree / "final_training" / "smoke.yaml").resolve(),
        "hpo": (tree / "hpo" / "smoke.yaml").resolve(),
        "data": (tree / "data" / "synthetic_ner.yaml").resolve(),
        "benchmark": (tree / "benchmark.yaml").resolve(),
        "selection": (tree / "selection.yaml").resolve(),
        "tags": (tree / "tags.yaml").resolve(),
    }


def test_experiment_with_an_empty_reference(tree: Path) -> None:
    edit_yaml(tree / "experiment" / "smoke.yaml", data="  ")
    with pytest.raises(ConfigError) as exc:
        load_experiment(tree / "experiment" / "smoke.yaml")
    assert "smoke.yaml: invalid config" in str(exc.value)
    assert "data: must name a file" in str(exc.value)


def test_error_in_a_referenced_file_names_that_file_and_field(tree: Path) -> None:
    hpo = tree / "hpo" / "smoke.yaml"
    text = hpo.read_text(encoding="utf-8").replace("name: tiny-bert", "name: Tiny-Bert")
    hpo.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_experiment(tree / "experiment" / "smoke.yaml")
    message = str(exc.value)
    assert message.startswith(f"{hpo.resolve()}: invalid config")
    assert "backbones.0.name" in message
    assert "'Tiny-Bert' is not a safe name" in message


def test_error_in_experiment_file_itself(tree: Path) -> None:
    edit_yaml(tree / "experiment" / "smoke.yaml", mlflow={"hpo": "x", "registry": "y"})
    with pytest.raises(ConfigError) as exc:
        load_experiment(tree / "experiment" / "smoke.yaml")
    assert "smoke.yaml: invalid config" in str(exc.value)
    assert "mlflow.registry: unknown key" in str(exc.value)


def test_yaml_error_in_referenced_file(tree: Path) -> None:
    (tree / "benchmark.yaml").write_text("batch_sizes: [1, 8\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="invalid YAML") as exc:
        load_experiment(tree / "experiment" / "smoke.yaml")
    assert "benchmark.yaml" in str(exc.value)


@pytest.mark.parametrize(
    ("selection", "field"),
    [
        ({"objective": {"metric": "accuracy", "direction": "maximize"}}, "metric"),
        ({"objective": {"metric": "macro-f1", "direction": "minimize"}}, "direction"),
    ],
)
def test_selection_must_match_the_hpo_objective(
    tree: Path, selection: dict[str, object], field: str
) -> None:
    (tree / "selection.yaml").write_text(yaml.safe_dump(selection), encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_experiment(tree / "experiment" / "smoke.yaml")
    assert f"selection.objective.{field}" in str(exc.value)
    assert "smoke.yaml" in str(exc.value)
