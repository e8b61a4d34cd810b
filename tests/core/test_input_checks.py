"""Checks of data splits and model directories before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpoq.config.data import DataConfig
from hpoq.core import input_checks
from hpoq.core.input_checks import check_data, check_inputs, check_models
from hpoq.core.paths import OutputLayout
from hpoq.errors import InputError
from tests.config.test_data_config import data_dict
from tests.factories import make_experiment

LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-DATE", "I-DATE"]
GOOD = "Anna\tB-PER\nsaid\tO\n\nAcme\tB-ORG\n"


def data_config(**overrides: object) -> DataConfig:
    return DataConfig.model_validate(data_dict(**{"labels": LABELS, **overrides}))


def write_splits(directory: Path, train: str = GOOD) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "train.conll").write_text(train, encoding="utf-8")
    (directory / "dev.conll").write_text(GOOD, encoding="utf-8")
    (directory / "test.conll").write_text(GOOD, encoding="utf-8")
    return directory


def refused(data: DataConfig, directory: Path, **kwargs: object) -> str:
    with pytest.raises(InputError) as exc:
        check_data(data, directory, source="cfg/data.yaml", **kwargs)  # type: ignore[arg-type]
    message = str(exc.value)
    assert message.startswith("cfg/data.yaml: data 'ner': "), message
    assert "\n" not in message
    return message


def test_good_splits_are_read_and_counted(tmp_path: Path) -> None:
    checks = check_data(data_config(), write_splits(tmp_path / "d"), source="x")
    assert [(c.split, c.how, c.sentences) for c in checks] == [
        ("train", "read", 2),
        ("validation", "read", 2),
        ("test", "read", 2),
    ]


def test_a_tag_not_in_labels_names_file_line_and_field(tmp_path: Path) -> None:
    directory = write_splits(tmp_path / "d", train="Anna\tB-PER\nsaid\tO\nit\tB-FOO\n")
    message = refused(data_config(), directory)
    assert f"splits.train: {directory / 'train.conll'}:3: label 'B-FOO'" in message
    assert "labels" in message


def test_an_empty_split_is_refused(tmp_path: Path) -> None:
    directory = write_splits(tmp_path / "d", train="\n\n")
    assert "splits.train: " in refused(data_config(), directory)
    assert "holds no sentences" in refused(data_config(), directory)


def test_a_split_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    directory = write_splits(tmp_path / "d")
    (directory / "dev.conll").unlink()
    (directory / "dev.conll").mkdir()
    assert "splits.validation: " in refused(data_config(), directory)
    assert "is a directory, not a file" in refused(data_config(), directory)


def test_a_missing_split_is_refused(tmp_path: Path) -> None:
    directory = write_splits(tmp_path / "d")
    (directory / "test.conll").unlink()
    message = refused(data_config(), directory)
    assert message.endswith(f"splits.test: {directory / 'test.conll'} does not exist")


def test_local_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    message = refused(data_config(), Path("/etc/passwd"))
    assert message.endswith("local_path: /etc/passwd is a file, expected a directory")


def test_local_path_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    message = refused(data_config(), tmp_path / "nowhere")
    assert message.endswith(f"local_path: {tmp_path / 'nowhere'} does not exist")
    assert not (tmp_path / "nowhere").exists()


def test_jsonl_that_does_not_parse_names_the_line(tmp_path: Path) -> None:
    directory = tmp_path / "d"
    directory.mkdir()
    good = json.dumps({"tokens": ["Anna"], "labels": ["B-PER"]}) + "\n"
    for name in ("train.jsonl", "dev.jsonl", "test.jsonl"):
        (directory / name).write_text(good, encoding="utf-8")
    (directory / "dev.jsonl").write_text(good + "{not json\n", encoding="utf-8")
    data = data_config(
        format="jsonl",
        splits={"train": "train.jsonl", "validation": "dev.jsonl", "test": "test.jsonl"},
    )
    assert f"splits.validation: {directory / 'dev.jsonl'}:2: not valid JSON" in refused(
        data, directory
    )


def test_a_synthetic_dataset_to_come_is_reported_and_nothing_is_written(tmp_path: Path) -> None:
    data = data_config(synthetic={"seed": 1})
    checks = check_data(data, tmp_path / "gen", source="x", prepare=False)
    assert {c.how for c in checks} == {"to be generated"}
    assert not (tmp_path / "gen").exists()
    prepared = check_data(data, tmp_path / "gen", source="x", prepare=True)
    assert {c.how for c in prepared} == {"read"}
    assert all(c.sentences for c in prepared)


def test_a_synthetic_spec_whose_labels_are_missing_is_refused_without_writing(
    tmp_path: Path,
) -> None:
    data = data_config(synthetic={"seed": 1}, labels=["O", "B-PER", "I-PER"])
    message = refused(data, tmp_path / "gen")
    assert "not in 'labels'" in message
    assert not (tmp_path / "gen").exists()


# --- the cache: a split that passed is not parsed again -----------------------------------


def test_a_split_that_passed_is_not_read_again_until_a_byte_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    experiment = make_experiment(tmp_path)
    layout = OutputLayout(tmp_path / "out", "local")
    first = check_inputs(experiment, layout, prepare=True)
    assert {s.how for s in first.splits} == {"read"}
    cache = tmp_path / "out" / "cache" / "data-checks"
    assert len(list(cache.glob("*.json"))) == 3

    reads: list[str] = []
    real = input_checks.read_split
    monkeypatch.setattr(
        input_checks, "read_split", lambda d, p, s: reads.append(s) or real(d, p, s)
    )
    second = check_inputs(experiment, layout, prepare=True)
    assert {s.how for s in second.splits} == {"cached"} and reads == []
    assert [s.sentences for s in second.splits] == [s.sentences for s in first.splits]

    train = experiment.data_dir() / "train.conll"
    train.write_text(train.read_text() + "Oslo\tB-LOC\n\n", encoding="utf-8")
    third = check_inputs(experiment, layout, prepare=True)
    assert [s.how for s in third.splits] == ["read", "cached", "cached"] and reads == ["train"]


def test_nothing_is_cached_when_a_check_fails_or_when_validating(tmp_path: Path) -> None:
    experiment = make_experiment(tmp_path)
    layout = OutputLayout(tmp_path / "out", "local")
    check_inputs(experiment, layout, prepare=True)  # generates the synthetic data
    (tmp_path / "out").rename(tmp_path / "first")
    check_inputs(experiment, layout, prepare=False)
    assert not (tmp_path / "out").exists()  # validate writes nothing

    test = experiment.data_dir() / "test.conll"
    test.write_text(test.read_text() + "x\tB-NOPE\n", encoding="utf-8")
    with pytest.raises(InputError, match="B-NOPE"):
        check_inputs(experiment, layout, prepare=True)
    assert not (tmp_path / "out").exists()  # train and validation passed; nothing written


# --- model directories ------------------------------------------------------------------------


def hpo_with_model(tmp_path: Path, model: str) -> object:
    return make_experiment(
        tmp_path, hpo_extra={"backbones": [{"name": "tiny", "model": model}]}
    ).hpo


def saved_model(directory: Path) -> Path:
    directory.mkdir(parents=True)
    (directory / "config.json").write_text('{"model_type": "bert"}')
    (directory / "tokenizer.json").write_text("{}")
    (directory / "model.safetensors").write_bytes(b"x")
    return directory


def test_a_saved_model_directory_passes(tmp_path: Path) -> None:
    path = saved_model(tmp_path / "m")
    [check] = check_models(hpo_with_model(tmp_path, str(path)), "hpo.yaml")  # type: ignore[arg-type]
    assert (check.backbone, check.path) == ("tiny", path)


def test_a_hub_id_is_not_checked(tmp_path: Path) -> None:
    assert check_models(hpo_with_model(tmp_path, "bert-base-cased"), "hpo.yaml") == []  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        ("missing", "model directory {path} does not exist"),
        ("file", "{path} is a file, expected a model directory"),
        ("no-config", "{path} holds no config.json"),
        ("bad-config", "{path}/config.json:1: not valid JSON"),
        ("no-tokenizer", "{path} holds no tokenizer"),
        ("no-weights", "{path} holds no weights"),
    ],
)
def test_a_broken_model_directory_is_refused(tmp_path: Path, breakage: str, expected: str) -> None:
    path = tmp_path / "m"
    if breakage == "file":
        path.write_text("x")
    elif breakage != "missing":
        saved_model(path)
        gone = {"no-config": "config.json", "no-tokenizer": "tokenizer.json"}
        gone["no-weights"] = "model.safetensors"
        if breakage in gone:
            (path / gone[breakage]).unlink()
        else:
            (path / "config.json").write_text("{oops")
    with pytest.raises(InputError) as exc:
        check_models(hpo_with_model(tmp_path, str(path)), "hpo.yaml")  # type: ignore[arg-type]
    message = str(exc.value)
    assert message.startswith("hpo.yaml: backbones.0.model (tiny): ")
    assert expected.format(path=path) in message
