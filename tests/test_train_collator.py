"""The hybrid-model collator: padding sides, positions, answer-only labels, SASRec's left padding."""

import torch

from llmrec_ft.train.collator import PointwiseCollator

ROWS = [{"input_ids": [5, 6, 7, 8], "labels": [-100, -100, -100, 8], "cf_history": [3, 4], "cf_items": [1, 2]},
        {"input_ids": [9, 10], "labels": [-100, 10], "cf_history": [7], "cf_items": [2]}]


def test_right_padded_training_batch():
    batch = PointwiseCollator(pad_token_id=0)(ROWS)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8], [9, 10, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, -100, -100, 8], [-100, 10, -100, -100]]
    assert batch["cf_history"].tolist() == [[3, 4], [0, 7]]  # SASRec: newest item in the last column
    assert batch["cf_items"].tolist() == [[1, 2], [2, 0]]


def test_scoring_batch_drops_the_answer_and_keeps_positions():
    left = PointwiseCollator(pad_token_id=0, padding_side="left", prompt_only=True)(ROWS)
    right = PointwiseCollator(pad_token_id=0, padding_side="right", prompt_only=True)(ROWS)
    assert "labels" not in left
    assert left["input_ids"].tolist() == [[5, 6, 7], [0, 0, 9]]
    assert left["input_ids"][:, -1].tolist() == [7, 9]  # last prompt token in the last column
    # A token's position counts real tokens only, whichever side is padded.
    for batch in (left, right):
        positions = [batch["position_ids"][i][batch["attention_mask"][i].bool()].tolist() for i in range(2)]
        assert positions == [[0, 1, 2], [0]]


def test_text_only_batch_has_no_collaborative_inputs():
    batch = PointwiseCollator(pad_token_id=0, collaborative=False)(
        [{k: v for k, v in row.items() if k in ("input_ids", "labels")} for row in ROWS])
    assert set(batch) == {"input_ids", "attention_mask", "position_ids", "labels"}
    assert batch["input_ids"].dtype == torch.long
