"""Job specs: a benchmark job's fields are checked like a trial job's (safe names, a key
that parses and belongs to the job), so a forged job is refused before it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hpoq.core.benchmark_key import parse_benchmark_key
from hpoq.core.fingerprints import trial_key_hash
from hpoq.core.jobs import BenchmarkJob, parse_job
from hpoq.errors import InputError
from tests.factories import benchmark_job, make_experiment

RUN_ID = "0123456789abcdef0123456789abcdef"


def payload(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    job = benchmark_job(
        make_experiment(tmp_path),
        backbone="tiny",
        study_name="hpo_tiny_v2",
        variant=2,
        trial_number=3,
        run_id=RUN_ID,
    )
    return job.to_payload() | changes


def test_a_genuine_job_round_trips(tmp_path: Path) -> None:
    good = payload(tmp_path)
    assert parse_job(good, BenchmarkJob).to_payload() == good
    without_run = payload(tmp_path, run_id=None)
    without_run["benchmark_key"] = without_run["benchmark_key"].replace(RUN_ID, "none")
    assert parse_job(without_run, BenchmarkJob).run_id is None


def _key_with(tmp_path: Path, index: int, value: str) -> str:
    parts = payload(tmp_path)["benchmark_key"].split(":")
    parts[index] = value
    return ":".join(parts)


FORGED = [
    ("run-id-traversal", {"run_id": "../../etc"}, "run_id"),
    ("trial-id-traversal", {"trial_id": "../../../tmp/x"}, "trial_id"),
    ("trial-id-colon", {"trial_id": "a:b"}, "trial_id"),
    ("key-not-a-key", {"benchmark_key": "../../etc/passwd"}, "benchmark_key"),
    ("key-too-few-parts", {"benchmark_key": "tiny:hpo_tiny_v2:x"}, "benchmark_key"),
    ("study-not-that-variant", {"study_name": "hpo_tiny"}, "study_name"),
    ("study-of-another-backbone", {"study_name": "hpo_other_v2"}, "study_name"),
]


@pytest.mark.parametrize(("change", "field"), [c[1:] for c in FORGED], ids=[c[0] for c in FORGED])
def test_a_forged_field_is_refused(tmp_path: Path, change: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError, match="malformed BenchmarkJob payload") as exc:
        parse_job(payload(tmp_path, **change), BenchmarkJob)
    assert field in str(exc.value)


@pytest.mark.parametrize(
    ("index", "value", "why"),
    [
        (0, "other", "another backbone"),
        (2, "f" * 32, "another run"),
        (3, "0" * 16, "another trial"),
        (4, "0" * 16, "other data"),
        (5, "zz", "not a fingerprint"),
    ],
)
def test_a_key_that_is_not_this_jobs_key_is_refused(
    tmp_path: Path, index: int, value: str, why: str
) -> None:
    with pytest.raises(InputError, match="benchmark_key"):
        parse_job(payload(tmp_path, benchmark_key=_key_with(tmp_path, index, value)), BenchmarkJob)


def test_parse_benchmark_key_takes_a_key_apart(tmp_path: Path) -> None:
    key = payload(tmp_path)["benchmark_key"]
    parts = parse_benchmark_key(key)
    assert (parts.backbone, parts.variant, parts.run_id) == ("tiny", "hpo_tiny_v2", RUN_ID)
    assert parts.trial_id == trial_key_hash("tiny", "hpo_tiny_v2", 3)
    assert parse_benchmark_key(key.replace(RUN_ID, "none")).run_id is None
    for bad in ("", "a:b:c:d:e", "a:b:c:d:e:f:g", "a::c:d:0123456789abcdef:0123456789abcdef"):
        with pytest.raises(InputError, match="benchmark_key"):
            parse_benchmark_key(bad)
