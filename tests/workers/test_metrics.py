"""Entity-level macro-F1 against values worked out by hand (seqeval default mode)."""

from __future__ import annotations

import pytest

from hpoq.workers.training.metrics import extract_entities, macro_f1, per_type_scores


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


def test_i_after_o_matches_a_b_started_entity() -> None:
    assert macro_f1([["O", "B-PER", "I-PER"]], [["O", "I-PER", "I-PER"]]) == 1.0


def test_type_switch_inside_an_entity_breaks_it() -> None:
    # Gold LOC(0..1); predicted LOC(0..0) + ORG(1..1): LOC P=0 R=0, ORG P=0 (no gold ORG).
    assert macro_f1([["B-LOC", "I-LOC"]], [["B-LOC", "I-ORG"]]) == 0.0


def test_boundaries_must_match_exactly() -> None:
    assert macro_f1([["B-ORG", "I-ORG", "O"]], [["B-ORG", "O", "O"]]) == 0.0
    assert macro_f1([["B-ORG", "O", "O"]], [["B-ORG", "I-ORG", "O"]]) == 0.0


def test_empty_predictions_score_zero() -> None:
    gold = [["B-PER", "O"], ["B-LOC", "I-LOC"]]
    assert macro_f1(gold, [["O", "O"], ["O", "O"]]) == 0.0


def test_type_only_in_predictions_counts_in_the_mean() -> None:
    # PER is perfect (1.0); DATE exists only in predictions (F1 0): mean over both = 0.5.
    assert macro_f1([["B-PER", "O"]], [["B-PER", "B-DATE"]]) == pytest.approx(0.5)


def test_entities_never_span_sentences() -> None:
    gold = [["O", "B-PER"], ["I-PER", "O"]]
    pred = [["O", "B-PER"], ["B-PER", "O"]]  # the I-PER starts a new entity either way
    assert macro_f1(gold, pred) == 1.0


def test_no_entities_anywhere_is_zero() -> None:
    assert macro_f1([["O"]], [["O"]]) == 0.0


def test_lengths_must_agree() -> None:
    with pytest.raises(ValueError, match="sentence 0"):
        macro_f1([["O", "O"]], [["O"]])
    with pytest.raises(ValueError, match="2 gold sentences"):
        macro_f1([["O"], ["O"]], [["O"]])
