"""Canonical JSON, fingerprints, the benchmark key and its cache file name."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hpoq.config.benchmark import BenchmarkConfig
from hpoq.config.data import DataConfig
from hpoq.config.loader import load_model
from hpoq.core.benchmark_key import NO_RUN_ID, build_benchmark_key, cache_file_name
from hpoq.core.fingerprints import (
    FINGERPRINT_LENGTH,
    benchmark_fingerprint,
    canonical_json,
    data_fingerprint,
    fingerprint,
    sha256_hex,
    study_key_hash,
    trial_key_hash,
)
from hpoq.errors import InputError

REPO = Path(__file__).resolve().parents[2]
HEX = re.compile(r"^[0-9a-f]+$")


def data_dict(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "ner",
        "version": "1",
        "format": "conll",
        "local_path": "data/ner",
        "splits": {"train": "train.conll", "validation": "dev.conll", "test": "test.conll"},
        "labels": ["O", "B-PER", "I-PER"],
        "synthetic": {"seed": 13},
    }
    data.update(overrides)
    return data


def reversed_keys(value: Any) -> Any:
    """The same value with every mapping's keys inserted in reverse order."""
    if isinstance(value, dict):
        return {k: reversed_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reversed_keys(v) for v in value]
    return value


DATA = DataConfig.model_validate(data_dict())
BENCH = BenchmarkConfig()


# --- canonical JSON ---------------------------------------------------------------------


def test_canonical_json_sorts_keys_without_whitespace() -> None:
    value = {"b": 1, "a": {"d": [1, 2, {"z": None, "y": True}], "c": "x y"}}
    assert canonical_json(value) == '{"a":{"c":"x y","d":[1,2,{"y":true,"z":null}]},"b":1}'


def test_canonical_json_is_independent_of_key_order() -> None:
    value = {"z": 1, "a": {"m": [1, {"q": 2, "b": 3}], "c": "x"}, "k": None}
    assert canonical_json(value) == canonical_json(reversed_keys(value))
    assert list(reversed_keys(value)) != list(value)


def test_canonical_json_keeps_unicode_as_is() -> None:
    assert canonical_json({"k": "caf\u00e9 \u0430"}) == '{"k":"caf\u00e9 \u0430"}'


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_canonical_json_refuses_non_finite_numbers(bad: float) -> None:
    with pytest.raises(ValueError, match="JSON"):
        canonical_json({"x": bad})


def test_fingerprint_shape() -> None:
    fp = fingerprint({"a": 1})
    assert len(fp) == FINGERPRINT_LENGTH == 16
    assert HEX.match(fp)
    assert fp == hashlib.sha256(b'{"a":1}').hexdigest()[:16]
    assert fingerprint({"a": 1}, length=32) == hashlib.sha256(b'{"a":1}').hexdigest()[:32]
    assert sha256_hex("x") == hashlib.sha256(b"x").hexdigest()


def test_fingerprint_stable_across_key_order() -> None:
    value = {"z": [1, {"b": 2, "a": 1}], "a": "x"}
    assert fingerprint(value) == fingerprint(reversed_keys(value))


def test_data_and_bench_fingerprints_stable_across_key_order() -> None:
    assert data_fingerprint(DataConfig.model_validate(reversed_keys(data_dict()))) == (
        data_fingerprint(DATA)
    )
    bench = {"iterations": 7, "batch_sizes": [1, 2], "precisions": ["bf16"], "warmup_iterations": 1}
    assert benchmark_fingerprint(BenchmarkConfig.model_validate(bench)) == benchmark_fingerprint(
        BenchmarkConfig.model_validate(reversed_keys(bench))
    )


def test_data_and_bench_fingerprints_are_short_hex() -> None:
    for fp in (data_fingerprint(DATA), benchmark_fingerprint(BENCH)):
        assert len(fp) == FINGERPRINT_LENGTH
        assert HEX.match(fp)


def test_data_fingerprint_is_the_hash_of_the_canonical_payload() -> None:
    payload = DATA.model_dump(mode="json")
    del payload["local_path"]
    expected = hashlib.sha256(
        json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()[:16]
    assert data_fingerprint(DATA) == expected


SCRIPT = """
import json, sys
from pathlib import Path
from hpoq.config.benchmark import BenchmarkConfig
from hpoq.config.data import DataConfig
from hpoq.config.loader import load_model
from hpoq.core.fingerprints import (benchmark_fingerprint, data_fingerprint,
    study_key_hash, trial_key_hash)
root = Path(sys.argv[1])
print(json.dumps({
    "data": data_fingerprint(load_model(root / "data" / "synthetic_ner.yaml", DataConfig)),
    "bench": benchmark_fingerprint(load_model(root / "benchmark.yaml", BenchmarkConfig)),
    "study": study_key_hash("tiny-bert", "hpo_tiny-bert"),
    "trial": trial_key_hash("tiny-bert", "hpo_tiny-bert", 3),
}))
"""


def expected_fingerprints() -> dict[str, str]:
    root = REPO / "config"
    return {
        "data": data_fingerprint(load_model(root / "data" / "synthetic_ner.yaml", DataConfig)),
        "bench": benchmark_fingerprint(load_model(root / "benchmark.yaml", BenchmarkConfig)),
        "study": study_key_hash("tiny-bert", "hpo_tiny-bert"),
        "trial": trial_key_hash("tiny-bert", "hpo_tiny-bert", 3),
    }


@pytest.mark.parametrize("hash_seed", ["0", "1", "12345"])
def test_fingerprints_stable_across_processes(hash_seed: str) -> None:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(REPO / "config")],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    )
    assert json.loads(out.stdout) == expected_fingerprints()


# --- what changes a fingerprint -----------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("batch_sizes", [1, 8]),
        ("batch_sizes", [1, 8, 64]),
        ("warmup_iterations", 6),
        ("iterations", 21),
        ("min_measure_seconds", 2.5),
        ("max_seq_length", 256),
        ("precisions", ["bf16"]),
        ("precisions", ["fp32", "bf16"]),
        ("padding", ["sorted"]),
        ("padding", ["fixed", "sorted"]),
    ],
)
def test_every_measured_field_changes_bench_fp(field: str, value: object) -> None:
    changed = BenchmarkConfig.model_validate({field: value})
    assert getattr(changed, field) != getattr(BENCH, field)
    assert benchmark_fingerprint(changed) != benchmark_fingerprint(BENCH)


@pytest.mark.parametrize(
    "overrides",
    [
        {"run": {"mode": "force_new"}},
        {"run": {"mode": "resume_if_incomplete"}},
        {"benchmark_strategy": "latest_only"},
        {"benchmark_all_variants": False},
        {
            "run": {"mode": "force_new"},
            "benchmark_strategy": "latest_only",
            "benchmark_all_variants": False,
        },
    ],
)
def test_non_measurement_fields_leave_bench_fp(overrides: dict[str, Any]) -> None:
    assert benchmark_fingerprint(BenchmarkConfig.model_validate(overrides)) == (
        benchmark_fingerprint(BENCH)
    )


@pytest.mark.parametrize(
    "overrides",
    [
        {"name": "ner2"},
        {"version": "2"},
        {"format": "jsonl"},
        {"splits": {"train": "t.conll", "validation": "dev.conll", "test": "test.conll"}},
        {"splits": {"train": "train.conll", "validation": "v.conll", "test": "test.conll"}},
        {"splits": {"train": "train.conll", "validation": "dev.conll", "test": "t.conll"}},
        {"labels": ["O", "B-PER", "I-PER", "B-LOC"]},
        {"labels": ["O", "I-PER", "B-PER"]},
        {"synthetic": None},
        {"synthetic": {"seed": 14}},
        {"synthetic": {"seed": 13, "train_sentences": 601}},
        {"synthetic": {"seed": 13, "validation_sentences": 151}},
        {"synthetic": {"seed": 13, "test_sentences": 151}},
    ],
)
def test_every_data_field_changes_data_fp(overrides: dict[str, Any]) -> None:
    changed = DataConfig.model_validate(data_dict(**overrides))
    assert data_fingerprint(changed) != data_fingerprint(DATA)


@pytest.mark.parametrize("local_path", ["/mnt/data/ner", "elsewhere", "~/x", "C:\\data"])
def test_local_path_leaves_data_fp(local_path: str) -> None:
    moved = DataConfig.model_validate(data_dict(local_path=local_path))
    assert data_fingerprint(moved) == data_fingerprint(DATA)


def test_data_fp_covers_every_field_but_local_path() -> None:
    """A new DataConfig field must enter the fingerprint unless it is machine-specific."""
    assert set(DATA.fingerprint_payload()) == set(DataConfig.model_fields) - {"local_path"}


def test_study_and_trial_hashes() -> None:
    a = study_key_hash("bert", "hpo_bert")
    assert a == study_key_hash("bert", "hpo_bert")
    assert a != study_key_hash("bert", "hpo_bert_v2")
    assert a != study_key_hash("bert2", "hpo_bert")
    t = {trial_key_hash("bert", "hpo_bert", n) for n in range(50)}
    assert len(t) == 50
    assert trial_key_hash("bert", "hpo_bert", 0) != trial_key_hash("bert", "hpo_bert_v2", 0)
    for h in (a, *t):
        assert len(h) == FINGERPRINT_LENGTH
        assert HEX.match(h)


# --- benchmark key ------------------------------------------------------------------------


def key(**overrides: Any) -> str:
    args: dict[str, Any] = {
        "backbone": "bert",
        "variant": "hpo_bert_v2",
        "run_id": "abc123",
        "trial_id": "0123456789abcdef",
        "data": DATA,
        "benchmark": BENCH,
    }
    args.update(overrides)
    return build_benchmark_key(**args)


def test_benchmark_key_format() -> None:
    k = key()
    assert k == (
        f"bert:hpo_bert_v2:abc123:0123456789abcdef:{data_fingerprint(DATA)}:"
        f"{benchmark_fingerprint(BENCH)}"
    )
    backbone, variant, run_id, trial_id, data_fp, bench_fp = k.split(":")
    assert (backbone, variant, run_id, trial_id) == (
        "bert",
        "hpo_bert_v2",
        "abc123",
        "0123456789abcdef",
    )
    assert data_fp == data_fingerprint(DATA)
    assert bench_fp == benchmark_fingerprint(BENCH)


@pytest.mark.parametrize("run_id", [None, ""])
def test_benchmark_key_without_run_id(run_id: str | None) -> None:
    assert key(run_id=run_id).split(":")[2] == NO_RUN_ID == "none"


def test_benchmark_key_is_stable_and_sensitive() -> None:
    assert key() == key()
    assert key(data=DataConfig.model_validate(data_dict(local_path="/else"))) == key()
    assert key(benchmark=BenchmarkConfig.model_validate({"run": {"mode": "force_new"}})) == key()
    assert key(benchmark=BenchmarkConfig.model_validate({"iterations": 99})) != key()
    assert key(data=DataConfig.model_validate(data_dict(version="9"))) != key()
    assert key(variant="hpo_bert") != key()
    assert key(trial_id="ffff") != key()
    assert key(run_id="other") != key()


@pytest.mark.parametrize("field", ["backbone", "variant", "trial_id", "run_id"])
@pytest.mark.parametrize("value", ["a:b", ":", "x:"])
def test_benchmark_key_rejects_colons(field: str, value: str) -> None:
    with pytest.raises(InputError, match=rf"^{field}: "):
        key(**{field: value})


@pytest.mark.parametrize("field", ["backbone", "variant", "trial_id"])
def test_benchmark_key_rejects_empty_parts(field: str) -> None:
    with pytest.raises(InputError, match=rf"^{field}: ''"):
        key(**{field: ""})


def test_cache_file_name() -> None:
    k = key()
    name = cache_file_name(k)
    assert name == f"benchmark_{hashlib.sha256(k.encode('utf-8')).hexdigest()[:32]}.json"
    assert re.fullmatch(r"benchmark_[0-9a-f]{32}\.json", name)
    assert cache_file_name(k) == name
    assert cache_file_name(key(run_id="other")) != name
    # Unsafe characters in a key never reach the file name.
    assert re.fullmatch(r"benchmark_[0-9a-f]{32}\.json", cache_file_name("../../etc/passwd"))
