"""DataConfig: valid inputs load; every invalid input names its field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from hpoq.config.data import DataConfig, SplitPaths, SyntheticSpec
from hpoq.config.loader import load_model

REPO = Path(__file__).resolve().parents[2]


def data_dict(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "ner",
        "version": "1",
        "format": "conll",
        "local_path": "data/ner",
        "splits": {"train": "train.conll", "validation": "dev.conll", "test": "test.conll"},
        "labels": ["O", "B-PER", "I-PER"],
    }
    data.update(copy.deepcopy(overrides))
    return data


def fails_at(data: dict[str, Any], prefix: tuple[Any, ...]) -> ValidationError:
    with pytest.raises(ValidationError) as exc:
        DataConfig.model_validate(data)
    found = [tuple(e["loc"]) for e in exc.value.errors()]
    assert any(loc[: len(prefix)] == prefix for loc in found), found
    return exc.value


def test_minimal_data_config() -> None:
    cfg = DataConfig.model_validate(data_dict())
    assert cfg.name == "ner"
    assert cfg.synthetic is None
    assert cfg.splits == SplitPaths(train="train.conll", validation="dev.conll", test="test.conll")


def test_shipped_data_config_loads() -> None:
    cfg = load_model(REPO / "config" / "data" / "synthetic_ner.yaml", DataConfig)
    assert cfg.name == "synthetic-ner"
    assert cfg.format == "conll"
    assert "O" in cfg.labels
    assert cfg.synthetic == SyntheticSpec(
        seed=13, train_sentences=600, validation_sentences=150, test_sentences=150
    )


def test_synthetic_defaults() -> None:
    cfg = DataConfig.model_validate(data_dict(synthetic={}))
    assert cfg.synthetic == SyntheticSpec()
    assert cfg.synthetic is not None
    assert cfg.synthetic.seed == 13


@pytest.mark.parametrize("fmt", ["conll", "jsonl"])
def test_formats(fmt: str) -> None:
    assert DataConfig.model_validate(data_dict(format=fmt)).format == fmt


def test_nested_split_paths_are_allowed() -> None:
    cfg = DataConfig.model_validate(
        data_dict(splits={"train": "a/train.conll", "validation": "a/dev", "test": "b/t"})
    )
    assert cfg.splits.train == "a/train.conll"


@pytest.mark.parametrize(
    ("overrides", "loc"),
    [
        pytest.param({"name": "../x"}, ("name",), id="name-traversal"),
        pytest.param({"name": "Ner"}, ("name",), id="name-upper"),
        pytest.param({"name": "n\u0435r"}, ("name",), id="name-cyrillic"),
        pytest.param({"name": ""}, ("name",), id="name-empty"),
        pytest.param({"name": "a b"}, ("name",), id="name-space"),
        pytest.param({"version": ""}, ("version",), id="version-empty"),
        pytest.param({"version": "v" * 65}, ("version",), id="version-long"),
        pytest.param({"version": ["1"]}, ("version",), id="version-list"),
        pytest.param({"format": "csv"}, ("format",), id="format-enum"),
        pytest.param({"format": "CONLL"}, ("format",), id="format-upper"),
        pytest.param({"labels": []}, ("labels",), id="labels-empty"),
        pytest.param({"labels": ["B-PER", "I-PER"]}, (), id="labels-no-outside"),
        pytest.param({"labels": ["O", "O"]}, ("labels",), id="labels-duplicate"),
        pytest.param({"labels": ["O", "PER"]}, ("labels",), id="labels-not-bio"),
        pytest.param({"labels": ["O", "B-"]}, ("labels",), id="labels-empty-type"),
        pytest.param({"labels": "O"}, ("labels",), id="labels-string"),
        pytest.param(
            {"splits": {"train": "t", "validation": "v"}}, ("splits", "test"), id="split-missing"
        ),
        pytest.param(
            {"splits": {"train": "", "validation": "v", "test": "t"}},
            ("splits", "train"),
            id="split-empty",
        ),
        pytest.param(
            {"splits": {"train": "/etc/passwd", "validation": "v", "test": "t"}},
            ("splits", "train"),
            id="split-absolute",
        ),
        pytest.param(
            {"splits": {"train": "../t", "validation": "v", "test": "t"}},
            ("splits", "train"),
            id="split-parent",
        ),
        pytest.param(
            {"splits": {"train": "a/../../t", "validation": "v", "test": "t"}},
            ("splits", "train"),
            id="split-parent-inside",
        ),
        pytest.param(
            {"splits": {"train": "t", "validation": "..\\v", "test": "t"}},
            ("splits", "validation"),
            id="split-backslash-parent",
        ),
        pytest.param(
            {"splits": {"train": "t", "validation": "v", "test": "t", "dev": "d"}},
            ("splits", "dev"),
            id="split-unknown-key",
        ),
        pytest.param(
            {"synthetic": {"train_sentences": 5}},
            ("synthetic", "train_sentences"),
            id="synthetic-too-few",
        ),
        pytest.param(
            {"synthetic": {"test_sentences": 10**7}},
            ("synthetic", "test_sentences"),
            id="synthetic-too-many",
        ),
        pytest.param({"synthetic": {"seed": "x"}}, ("synthetic", "seed"), id="synthetic-seed"),
        pytest.param({"synthetic": {"size": 1}}, ("synthetic", "size"), id="synthetic-unknown"),
        pytest.param({"local_path": None}, ("local_path",), id="local-path-null"),
        pytest.param({"path": "x"}, ("path",), id="unknown-key"),
    ],
)
def test_invalid_data_configs(overrides: dict[str, Any], loc: tuple[Any, ...]) -> None:
    fails_at(data_dict(**overrides), loc)


@pytest.mark.parametrize("field", ["name", "version", "format", "splits", "labels", "local_path"])
def test_required_fields(field: str) -> None:
    data = data_dict()
    del data[field]
    err = fails_at(data, (field,))
    assert any(e["type"] == "missing" for e in err.errors())


def test_missing_outside_label_is_explained() -> None:
    err = fails_at(data_dict(labels=["B-PER"]), ())
    assert "labels must include 'O'" in str(err)


def test_fingerprint_payload_leaves_out_local_path_only() -> None:
    cfg = DataConfig.model_validate(data_dict(synthetic={"seed": 1}))
    payload = cfg.fingerprint_payload()
    assert "local_path" not in payload
    assert set(payload) == set(DataConfig.model_fields) - {"local_path"}
    assert payload["splits"] == {
        "train": "train.conll",
        "validation": "dev.conll",
        "test": "test.conll",
    }
    assert payload["synthetic"] == SyntheticSpec(seed=1).model_dump(mode="json")
