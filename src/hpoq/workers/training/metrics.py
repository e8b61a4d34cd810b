"""Entity-level macro-F1, as seqeval computes it in its default (conlleval) mode.

Spans come from BIO tags the conlleval way: B- starts an entity, and so does an I- that
follows O or a tag of another type; an entity ends at O, at B- or at a change of type.
An entity counts as correct only when type, start and end all match.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

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
    scores: dict[str, TypeScore] = {}
    for kind in sorted(gold_count.keys() | pred_count.keys()):
        precision = _ratio(hits[kind], pred_count[kind])
        recall = _ratio(hits[kind], gold_count[kind])
        f1 = _ratio(2 * precision * recall, precision + recall)
        scores[kind] = TypeScore(precision, recall, f1, gold_count[kind])
    return scores


def macro_f1(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> float:
    """Unweighted mean of per-type F1; 0.0 when neither side has any entity (as seqeval)."""
    scores = per_type_scores(gold, predicted)
    if not scores:
        return 0.0
    return sum(score.f1 for score in scores.values()) / len(scores)


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0
