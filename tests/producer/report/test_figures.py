"""The Pareto front of accuracy against latency, for both objective directions."""

from __future__ import annotations

from hpoq.config.base import Direction
from hpoq.producer.report.data import TradeoffPoint
from hpoq.producer.report.figures import pareto_front


def point(name: str, latency: float, value: float) -> TradeoffPoint:
    return TradeoffPoint(
        kind="best_trial",
        backbone=name,
        study_name=f"hpo_{name}",
        trial_number=0,
        metric="m",
        value=value,
        precision="fp32",
        padding="sorted",
        batch_size=1,
        latency_p50_ms=latency,
        latency_p95_ms=latency,
        latency_p99_ms=latency,
        throughput_sentences_per_s=None,
    )


def test_the_front_keeps_what_nothing_beats_on_both_latency_and_score() -> None:
    points = [
        point("fast", 1.0, 0.70),
        point("slow-worse", 5.0, 0.65),  # beaten by fast on both
        point("mid", 2.0, 0.80),
        point("slow-best", 9.0, 0.90),
        point("mid-tie", 2.0, 0.75),  # as fast as mid, worse
    ]
    front = pareto_front(points, Direction.MAXIMIZE)
    assert [p.backbone for p in front] == ["fast", "mid", "slow-best"]


def test_when_lower_is_better_the_front_follows_it() -> None:
    points = [point("a", 1.0, 0.5), point("b", 2.0, 0.3), point("c", 3.0, 0.4)]
    assert [p.backbone for p in pareto_front(points, Direction.MINIMIZE)] == ["a", "b"]
