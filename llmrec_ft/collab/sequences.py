"""From prepared splits to ID-model batches: next-item training windows and ranking-evaluation batches.

Training: each user's chronological training sequence is cut, from the most recent end, into windows of
``max_len + 1`` items overlapping by one item, so every transition ``s[t] -> s[t+1]`` is a label exactly
once per epoch (taking only the last ``max_len + 1`` items, as the SASRec authors do, would drop half of
ML-100K). Windows are left-padded: the model reads ``window[:-1]`` and predicts ``window[1:]``.

Evaluation: the user's full history masks already-seen items; the model reads its last ``max_len`` items.

Every ID backbone shares the evaluation batches; a backbone with another training objective (BERT4Rec's
masked items) brings its own windows and collator to :func:`llmrec_ft.collab.trainer.train_id_model`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import datasets
import torch


def split_into_windows(items: Sequence[int], max_len: int) -> list[list[int]]:
    """Windows of at most ``max_len + 1`` items, newest first, each overlapping the next (older) by one item."""
    windows, end = [], len(items)
    while end > 1:
        start = max(0, end - (max_len + 1))
        windows.append(list(items[start:end]))
        end = start + 1
    return windows


def training_windows(train: datasets.Dataset, max_len: int) -> datasets.Dataset:
    """``input_ids``/``labels`` rows (unpadded, same length) from the ``items`` column of the train split."""
    inputs, labels = [], []
    for row, items in enumerate(train["items"]):
        if any(item < 1 for item in items):
            raise ValueError(f"train split, row {row}: item ids must be >= 1 (0 is padding), got {items}")
        for window in split_into_windows(items, max_len):
            inputs.append(window[:-1])
            labels.append(window[1:])
    if not inputs:
        raise ValueError("train split has no user with two or more items: nothing to learn from")
    return datasets.Dataset.from_dict({"input_ids": inputs, "labels": labels})


def left_pad(rows: Sequence[Sequence[int]], length: int | None = None) -> torch.Tensor:
    """``[B, length]`` long tensor, each row right-aligned (0 = padding); ``length`` defaults to the longest row."""
    length = max(len(row) for row in rows) if length is None else length
    out = torch.zeros(len(rows), length, dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            out[i, length - len(row):] = torch.as_tensor(list(row), dtype=torch.long)
    return out


@dataclass
class NextItemCollator:
    """Left-pads ``input_ids`` and ``labels`` to the longest window of the batch (labels 0 = no loss)."""

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        return {"input_ids": left_pad([f["input_ids"] for f in features]),
                "labels": left_pad([f["labels"] for f in features])}


def ranking_batches(examples: datasets.Dataset, max_len: int, batch_size: int):
    """Yield dicts ``input_ids`` ``[B, <=max_len]`` (last items of the history, left-padded), ``targets`` ``[B]``,
    ``history`` ``[B, L]`` (the full history, to mask) and ``cold`` ``[B]`` bool or None, from a valid/test split."""
    has_cold = "target_is_cold" in examples.column_names
    for start in range(0, len(examples), batch_size):
        batch = examples[start:start + batch_size]
        histories = batch["history"]
        empty = [start + i for i, history in enumerate(histories) if not history]
        if empty:
            raise ValueError(f"row {empty[0]} has an empty history: nothing to rank from")
        yield {"input_ids": left_pad([history[-max_len:] for history in histories]),
               "targets": torch.as_tensor(batch["target"], dtype=torch.long),
               "history": left_pad(histories),
               "cold": torch.as_tensor(batch["target_is_cold"], dtype=torch.bool) if has_cold else None}
