"""Dataset readers and the synthetic generator (torch-free)."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from hpoq.config.data import DataConfig
from hpoq.core.datasets import SPLITS, ensure_dataset, read_conll, read_jsonl, read_split
from hpoq.errors import ConfigError, InputError

LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-DATE", "I-DATE"]


def make_data(
    data_dir: Path, fmt: str = "conll", synthetic: bool = True, **spec: Any
) -> DataConfig:
    ext = "conll" if fmt == "conll" else "jsonl"
    return DataConfig.model_validate(
        {
            "name": "synthetic-ner",
            "version": "1",
            "format": fmt,
            "splits": {
                "train": f"train.{ext}",
                "validation": f"dev/validation.{ext}",
                "test": f"test.{ext}",
            },
            "labels": LABELS,
            "synthetic": (
                {
                    "seed": 5,
                    "train_sentences": 40,
                    "validation_sentences": 12,
                    "test_sentences": 10,
                    **spec,
                }
                if synthetic
                else None
            ),
            "local_path": str(data_dir),
        }
    )


def test_conll_reader_takes_first_and_last_column_and_skips_docstart(tmp_path: Path) -> None:
    path = tmp_path / "a.conll"
    path.write_text(
        "-DOCSTART- -X- O O\n\n"
        "Anna NNP B-NP B-PER\n"
        "Schmidt\tNNP\tI-NP\tI-PER\n"
        "lives  VBZ B-VP   O\n\n\n"
        "-DOCSTART- O\n"
        "Paris\tB-LOC\n",  # last sentence without a trailing blank line
        encoding="utf-8",
    )
    sentences = read_conll(path, LABELS)
    assert [s.tokens for s in sentences] == [("Anna", "Schmidt", "lives"), ("Paris",)]
    assert [s.tags for s in sentences] == [("B-PER", "I-PER", "O"), ("B-LOC",)]


def test_conll_unknown_label_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.conll"
    path.write_text("Anna\tB-PER\n\nAcme\tB-COMPANY\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"bad\.conll:3: label 'B-COMPANY'"):
        read_conll(path, LABELS)


def test_conll_line_with_one_column_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bad.conll"
    path.write_text("Anna B-PER\nlonely\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"bad\.conll:2: expected a token and a tag"):
        read_conll(path, LABELS)


def test_jsonl_reader(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text(
        '{"tokens": ["Acme", "Corp"], "labels": ["B-ORG", "I-ORG"]}\n\n'
        '{"tokens": ["hi"], "labels": ["O"], "id": 7}\n',
        encoding="utf-8",
    )
    sentences = read_jsonl(path, LABELS)
    assert [(s.tokens, s.tags) for s in sentences] == [
        (("Acme", "Corp"), ("B-ORG", "I-ORG")),
        (("hi",), ("O",)),
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"tokens": ["a", "b"], "labels": ["O"]}', r"2 tokens and 1 labels"),
        ('{"tokens": ["a"], "labels": ["B-XYZ"]}', r"label 'B-XYZ'"),
        ('{"tokens": ["a"]', r"not valid JSON"),
        ('{"tokens": "a", "labels": "O"}', r"expected"),
        ('{"tokens": [" "], "labels": ["O"]}', r"blank token"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"tokens": ["ok"], "labels": ["O"]}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=rf"bad\.jsonl:2: .*{message}"):
        read_jsonl(path, LABELS)


@pytest.mark.parametrize("fmt", ["conll", "jsonl"])
def test_ensure_dataset_generates_readable_splits_of_the_configured_sizes(
    tmp_path: Path, fmt: str
) -> None:
    data_dir = tmp_path / "nested" / "ner"
    data = make_data(data_dir, fmt)
    ensure_dataset(data, data_dir)
    sizes = {split: len(read_split(data, data_dir, split)) for split in SPLITS}
    assert sizes == {"train": 40, "validation": 12, "test": 10}
    tags = Counter(t for s in read_split(data, data_dir, "train") for t in s.tags)
    assert {t for t in tags if t != "O"} >= {"B-PER", "B-ORG", "B-LOC", "B-DATE"}
    assert not [p for p in tmp_path.rglob(".*tmp*")], "temporary directories left behind"


def test_generation_is_deterministic_and_seed_dependent(tmp_path: Path) -> None:
    first, second, other = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    ensure_dataset(make_data(first), first)
    ensure_dataset(make_data(second), second)
    ensure_dataset(make_data(other, seed=6), other)
    for name in ("train.conll", "dev/validation.conll", "test.conll"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    assert (first / "train.conll").read_bytes() != (other / "train.conll").read_bytes()
    # Splits draw from separate streams: the test split is not the start of train.
    data = make_data(first)
    train, test = read_split(data, first, "train"), read_split(data, first, "test")
    assert test != train[: len(test)]


def test_missing_files_without_synthetic_spec_name_the_file(tmp_path: Path) -> None:
    data = make_data(tmp_path / "ner", synthetic=False)
    with pytest.raises(ConfigError, match=r"train\.conll"):
        ensure_dataset(data, tmp_path / "ner")


def test_existing_files_are_used_as_they_are(tmp_path: Path) -> None:
    data_dir = tmp_path / "ner"
    data = make_data(data_dir, synthetic=False)
    (data_dir / "dev").mkdir(parents=True)
    for name in ("train.conll", "dev/validation.conll", "test.conll"):
        (data_dir / name).write_text("Oslo\tB-LOC\n", encoding="utf-8")
    ensure_dataset(data, data_dir)
    assert read_split(data, data_dir, "train")[0].tokens == ("Oslo",)


def test_files_generated_for_another_spec_are_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "ner"
    ensure_dataset(make_data(data_dir), data_dir)
    with pytest.raises(ConfigError, match="another synthetic spec"):
        ensure_dataset(make_data(data_dir, train_sentences=41), data_dir)


def test_partial_directory_is_not_mixed_with_generated_files(tmp_path: Path) -> None:
    data_dir = tmp_path / "ner"
    data_dir.mkdir()
    (data_dir / "train.conll").write_text("Oslo\tB-LOC\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"delete the directory"):
        ensure_dataset(make_data(data_dir), data_dir)
    assert (data_dir / "train.conll").read_text(encoding="utf-8") == "Oslo\tB-LOC\n"


def test_synthetic_needs_its_labels(tmp_path: Path) -> None:
    data = make_data(tmp_path / "ner").model_copy(update={"labels": ["O", "B-PER", "I-PER"]})
    with pytest.raises(ConfigError, match="B-DATE"):
        ensure_dataset(data, tmp_path / "ner")


def test_concurrent_callers_all_see_one_complete_dataset(tmp_path: Path) -> None:
    data_dir = tmp_path / "ner"
    data = make_data(data_dir, train_sentences=2000)
    start = threading.Barrier(8)

    def call() -> None:
        start.wait()
        ensure_dataset(data, data_dir)

    with ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(call) for _ in range(8)]:
            future.result()
    assert len(read_split(data, data_dir, "train")) == 2000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ner"]
