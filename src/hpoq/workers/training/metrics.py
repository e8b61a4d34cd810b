"""Entity-level F1 (micro and macro), precision and recall, as seqeval computes them in
its default (conlleval) mode: `f1_score` (micro, seqeval's default average), `f1_score(
average="macro")`, `precision_score`, `recall_score`, and the per-type rows of its
`classification_report`.

Spans come from BIO tags the conlleval way: B- starts an entity, and so does an I- that
follows O or a tag of another type; an entity ends at O, at B- or at a change of type.
An entity counts as correct only when type, start and end all match.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from hpoq.config.hpo import ENTITY_METRICS

Entity = tuple[str, int, int, int]  # (type, sentence index, first token, last token)


@dataclass(frozen=True)
class TypeScore:
    precision: float
    recall: float
    f1: float
    support: int  # gold entities of this type


def extract_entities(tags: Sequence[str], sentence: int = 0) -> list[Entity]:
    """The entity spans of one BIO-tagged sentence."""
    entities: list[Entity] = []
    current: str | None = None
    start = 0
    for index, tag in enumerate([*tags, "O"]):  # the sentinel closes a trailing entity
        prefix, _, kind = tag.partition("-")
        if current is not None and (prefix != "I" or kind != current):
            entities.append((current, sentence, start, index - 1))
            current = None
        if prefix == "B" or (prefix == "I" and current is None):
            current, start = kind, index
    return entities


def per_type_scores(
    gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]
) -> dict[str, TypeScore]:
    """Precision, recall and F1 of every type found in gold or predictions (0 when undefined)."""
    return entity_scores(gold, predicted).per_type


@dataclass(frozen=True)
class EntityScores:
    """Every entity-level score of one evaluation."""

    micro: TypeScore  # over all entities pooled: seqeval's default f1, precision, recall
    macro_f1: float  # unweighted mean of the per-type F1
    per_type: dict[str, TypeScore]

    def metric(self, name: str) -> float:
        """The score `objective.metric` names (one of ENTITY_METRICS)."""
        if name not in ENTITY_METRICS:
            raise ValueError(f"unknown metric {name!r}; choose from {', '.join(ENTITY_METRICS)}")
        return self.as_metrics()[name]

    def as_metrics(self) -> dict[str, float]:
        """Every score under its MLflow name: the ENTITY_METRICS, then `f1.<TYPE>` per type."""
        values = {
            "micro-f1": self.micro.f1,
            "macro-f1": self.macro_f1,
            "precision": self.micro.precision,
            "recall": self.micro.recall,
        }
        for kind, score in self.per_type.items():
            values[f"f1.{metric_name_part(kind)}"] = score.f1
        return values


def entity_scores(
    gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]
) -> EntityScores:
    """Micro, macro and per-type scores of predicted against gold BIO tags."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    gold_set: set[Entity] = set()
    pred_set: set[Entity] = set()
    for index, (gold_tags, pred_tags) in enumerate(zip(gold, predicted, strict=True)):
        if len(gold_tags) != len(pred_tags):
            raise ValueError(
                f"sentence {index}: {len(gold_tags)} gold tags but {len(pred_tags)} predicted"
            )
        gold_set.update(extract_entities(gold_tags, index))
        pred_set.update(extract_entities(pred_tags, index))
    gold_count = Counter(e[0] for e in gold_set)
    pred_count = Counter(e[0] for e in pred_set)
    hits = Counter(e[0] for e in gold_set & pred_set)
    per_type = {
        kind: _score(hits[kind], pred_count[kind], gold_count[kind])
        for kind in sorted(gold_count.keys() | pred_count.keys())
    }
    micro = _score(sum(hits.values()), len(pred_set), len(gold_set))
    macro = sum(t.f1 for t in per_type.values()) / len(per_type) if per_type else 0.0
    return EntityScores(micro=micro, macro_f1=macro, per_type=per_type)


def macro_f1(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> float:
    """Unweighted mean of per-type F1; 0.0 when neither side has any entity (as seqeval)."""
    return entity_scores(gold, predicted).macro_f1


def micro_f1(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> float:
    """F1 over all entities pooled (seqeval's default `f1_score`); 0.0 when undefined."""
    return entity_scores(gold, predicted).micro.f1


_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. :/]")


def metric_name_part(kind: str) -> str:
    """An entity type as MLflow accepts it in a metric name (other characters become _)."""
    return _UNSAFE.sub("_", kind) or "_"


def _score(hits: int, predicted: int, gold: int) -> TypeScore:
    precision = _ratio(hits, predicted)
    recall = _ratio(hits, gold)
    return TypeScore(precision, recall, _ratio(2 * precision * recall, precision + recall), gold)


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0
