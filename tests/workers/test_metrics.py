"""Entity-level scores against values worked out by hand, and against seqeval's documented
output (its default, conlleval mode; seqeval itself is not a dependency)."""

from __future__ import annotations

import pytest

from hpoq.config.hpo import ENTITY_METRICS
from hpoq.workers.training.metrics import (
    entity_scores,
    extract_entities,
    macro_f1,
    metric_name_part,
    micro_f1,
    per_type_scores,
)


@pytest.mark.parametrize(
    ("tags", "entities"),
    [
        (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 0, 1), ("LOC", 0, 3, 3)]),
        # conlleval: an I- after O starts an entity of its own.
        (["O", "I-PER", "I-PER"], [("PER", 0, 1, 2)]),
        # A change of type ends one entity and starts another, even with I-.
        (["B-PER", "I-LOC", "I-LOC"], [("PER", 0, 0, 0), ("LOC", 0, 1, 2)]),
        # B- after an entity of the same type starts a new one.
        (["B-ORG", "I-ORG", "B-ORG"], [("ORG", 0, 0, 1), ("ORG", 0, 2, 2)]),
        (["I-DATE"], [("DATE", 0, 0, 0)]),
        (["O", "O"], []),
        ([], []),
    ],
)
def test_extract_entities(tags: list[str], entities: list[tuple[str, int, int, int]]) -> None:
    assert extract_entities(tags) == entities


def test_macro_f1_by_hand() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-PER"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "O", "B-LOC"]]
    # PER: 1 hit of 1 predicted, 2 gold -> P 1, R 1/2, F1 2/3
    # LOC: 0 hits, 1 predicted, 1 gold -> 0;  ORG: 1 of 1 -> 1
    scores = per_type_scores(gold, pred)
    assert scores["PER"].f1 == pytest.approx(2 / 3)
    assert (scores["PER"].precision, scores["PER"].recall) == (1.0, 0.5)
    assert scores["LOC"].f1 == 0.0
    assert scores["ORG"].f1 == 1.0
    assert macro_f1(gold, pred) == pytest.approx((2 / 3 + 0 + 1) / 3)
    # Micro pools every entity: 2 hits of 3 predicted and 4 gold -> P 2/3, R 1/2, F1 4/7.
    scores = entity_scores(gold, pred)
    assert (scores.micro.precision, scores.micro.recall) == (pytest.approx(2 / 3), 0.5)
    assert micro_f1(gold, pred) == pytest.approx(4 / 7)


def test_seqeval_readme_example() -> None:
    # seqeval's README: f1_score -> 0.50; classification_report: MISC 0.00 / 0.00 / 0.00,
    # PER 1.00 / 1.00 / 1.00, micro avg 0.50 / 0.50 / 0.50, macro avg 0.50 / 0.50 / 0.50.
    gold = [["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    pred = [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    scores = entity_scores(gold, pred)
    assert (scores.micro.precision, scores.micro.recall, scores.micro.f1) == (0.5, 0.5, 0.5)
    assert scores.macro_f1 == 0.5
    assert {k: (t.precision, t.recall, t.f1, t.support) for k, t in scores.per_type.items()} == {
        "MISC": (0.0, 0.0, 0.0, 1),
        "PER": (1.0, 1.0, 1.0, 1),
    }


def test_micro_and_macro_part_ways_on_rare_types() -> None:
    # 9 of 10 PER found, the one LOC missed: micro is dominated by the frequent type.
    gold = [["B-PER"]] * 10 + [["B-LOC"]]
    pred = [["B-PER"]] * 9 + [["O"], ["O"]]
    scores = entity_scores(gold, pred)
    assert scores.micro.precision == 1.0
    assert scores.micro.recall == pytest.approx(9 / 11)
    assert scores.micro.f1 == pytest.approx(2 * (9 / 11) / (1 + 9 / 11))
    assert scores.macro_f1 == pytest.approx((2 * 0.9 / 1.9 + 0.0) / 2)


def test_every_configurable_metric_and_per_type_f1_has_a_name() -> None:
    scores = entity_scores([["B-PER", "B-LOC"]], [["B-PER", "O"]])
    values = scores.as_metrics()
    assert list(values) == [*ENTITY_METRICS, "f1.LOC", "f1.PER"]
    for name in ENTITY_METRICS:
        assert scores.metric(name) == values[name]
    assert values["precision"] == 1.0 and values["recall"] == 0.5
    with pytest.raises(ValueError, match="micro-f1, macro-f1, precision, recall"):
        scores.metric("accuracy")


def test_entity_types_become_valid_mlflow_names() -> None:
    assert metric_name_part("PER") == "PER"
    assert metric_name_part("corporation/org") == "corporation/org"
    assert metric_name_part("Ort$ä") == "Ort__"


def test_i_after_o_matches_a_b_started_entity() -> None:
    assert macro_f1([["O", "B-PER", "I-PER"]], [["O", "I-PER", "I-PER"]]) == 1.0
    assert micro_f1([["O", "B-PER", "I-PER"]], [["O", "I-PER", "I-PER"]]) == 1.0


def test_type_switch_inside_an_entity_breaks_it() -> None:
    # Gold LOC(0..1); predicted LOC(0..0) + ORG(1..1): LOC P=0 R=0, ORG P=0 (no gold ORG).
    assert macro_f1([["B-LOC", "I-LOC"]], [["B-LOC", "I-ORG"]]) == 0.0
    assert micro_f1([["B-LOC", "I-LOC"]], [["B-LOC", "I-ORG"]]) == 0.0


def test_boundaries_must_match_exactly() -> None:
    assert macro_f1([["B-ORG", "I-ORG", "O"]], [["B-ORG", "O", "O"]]) == 0.0
    assert macro_f1([["B-ORG", "O", "O"]], [["B-ORG", "I-ORG", "O"]]) == 0.0


def test_empty_predictions_score_zero() -> None:
    gold = [["B-PER", "O"], ["B-LOC", "I-LOC"]]
    assert macro_f1(gold, [["O", "O"], ["O", "O"]]) == 0.0
    assert micro_f1(gold, [["O", "O"], ["O", "O"]]) == 0.0


def test_type_only_in_predictions_counts_in_the_mean() -> None:
    # PER is perfect (1.0); DATE exists only in predictions (F1 0): mean over both = 0.5.
    assert macro_f1([["B-PER", "O"]], [["B-PER", "B-DATE"]]) == pytest.approx(0.5)
    # Micro: 1 hit, 2 predicted, 1 gold -> P 1/2, R 1, F1 2/3.
    assert micro_f1([["B-PER", "O"]], [["B-PER", "B-DATE"]]) == pytest.approx(2 / 3)


def test_entities_never_span_sentences() -> None:
    gold = [["O", "B-PER"], ["I-PER", "O"]]
    pred = [["O", "B-PER"], ["B-PER", "O"]]  # the I-PER starts a new entity either way
    assert macro_f1(gold, pred) == 1.0
    assert micro_f1(gold, pred) == 1.0


def test_no_entities_anywhere_is_zero() -> None:
    assert macro_f1([["O"]], [["O"]]) == 0.0
    assert entity_scores([["O"]], [["O"]]).micro == entity_scores([], []).micro
    assert micro_f1([["O"]], [["O"]]) == 0.0


def test_lengths_must_agree() -> None:
    with pytest.raises(ValueError, match="sentence 0"):
        macro_f1([["O", "O"]], [["O"]])
    with pytest.raises(ValueError, match="2 gold sentences"):
        macro_f1([["O"], ["O"]], [["O"]])
