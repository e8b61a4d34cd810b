"""Final models trained under several seeds: their mean and spread per spec_fp."""

from __future__ import annotations

from typing import Any

import pytest

from hpoq.core.final_runs import seed_summary


def model(backbone: str, spec_fp: str, value: float | None) -> dict[str, Any]:
    metrics = {} if value is None else {"test.macro-f1": value}
    return {"backbone": backbone, "spec_fp": spec_fp, "metrics": metrics}


def test_seeds_of_one_spec_give_a_mean_and_a_spread() -> None:
    summary = seed_summary(
        [
            model("a", "s1", 0.8),
            model("a", "s1", 0.9),
            model("a", "s1", 1.0),
            model("a", "s2", 0.5),  # another best trial: its own group
            model("b", "s3", None),  # not scored: left out
        ],
        "macro-f1",
    )
    assert [(g["backbone"], g["spec_fp"], g["seeds"]) for g in summary] == [
        ("a", "s1", 3),
        ("a", "s2", 1),
    ]
    assert summary[0]["mean"] == pytest.approx(0.9) and summary[0]["stdev"] == pytest.approx(0.1)
    assert summary[1]["stdev"] is None
