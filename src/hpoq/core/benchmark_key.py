"""The benchmark key: `{backbone}:{variant}:{run_id}:{trial_id}:{data_fp}:{bench_fp}`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from hpoq.config.benchmark import BenchmarkConfig
from hpoq.config.data import DataConfig
from hpoq.core.fingerprints import (
    CACHE_NAME_LENGTH,
    FINGERPRINT_LENGTH,
    benchmark_fingerprint,
    data_fingerprint,
    sha256_hex,
)
from hpoq.errors import InputError

NO_RUN_ID = "none"
KEY_FIELDS = ("backbone", "variant", "run_id", "trial_id", "data_fp", "bench_fp")
_FINGERPRINT = re.compile(f"[0-9a-f]{{{FINGERPRINT_LENGTH}}}")


@dataclass(frozen=True)
class BenchmarkKeyParts:
    """A key taken apart; `run_id` is None for a trial that had no MLflow run."""

    backbone: str
    variant: str
    run_id: str | None
    trial_id: str
    data_fp: str
    bench_fp: str


def parse_benchmark_key(key: str) -> BenchmarkKeyParts:
    """The six fields of a key; InputError when it does not have that shape."""
    parts = key.split(":")
    if len(parts) != len(KEY_FIELDS) or not all(parts):
        raise InputError(
            f"benchmark_key: {key[:200]!r} is not {':'.join('{' + f + '}' for f in KEY_FIELDS)}"
        )
    backbone, variant, run, trial_id, data_fp, bench_fp = parts
    for field, value in (("data_fp", data_fp), ("bench_fp", bench_fp)):
        if not _FINGERPRINT.fullmatch(value):
            raise InputError(f"benchmark_key: {field} {value[:80]!r} is not a fingerprint")
    run_id = None if run == NO_RUN_ID else run
    return BenchmarkKeyParts(backbone, variant, run_id, trial_id, data_fp, bench_fp)


def build_benchmark_key(
    *,
    backbone: str,
    variant: str,
    run_id: str | None,
    trial_id: str,
    data: DataConfig,
    benchmark: BenchmarkConfig,
) -> str:
    """The stable identity of one measurement. `variant` is the study name of the variant."""
    parts = {"backbone": backbone, "variant": variant, "trial_id": trial_id}
    for field, value in parts.items():
        if not value or ":" in value:
            raise InputError(f"{field}: {value!r} cannot be part of a benchmark key")
    run = run_id or NO_RUN_ID
    if ":" in run:
        raise InputError(f"run_id: {run!r} cannot be part of a benchmark key")
    return ":".join([backbone, variant, run, trial_id]) + key_suffix(data, benchmark)


def key_suffix(data: DataConfig, benchmark: BenchmarkConfig) -> str:
    """`:{data_fp}:{bench_fp}`: the end shared by every key measured under these configs."""
    return f":{data_fingerprint(data)}:{benchmark_fingerprint(benchmark)}"


def key_suffix_of(key: str) -> str:
    """The `:{data_fp}:{bench_fp}` end of a key (the key itself when it has no such end)."""
    parts = key.rsplit(":", 2)
    return ":" + ":".join(parts[1:]) if len(parts) == 3 else key


def cache_file_name(key: str) -> str:
    """Disk cache name for a key: the key itself may be long or hold unsafe characters."""
    return f"benchmark_{sha256_hex(key)[:CACHE_NAME_LENGTH]}.json"
