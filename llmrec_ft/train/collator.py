"""Batching encoded Yes/No samples for ``CollaborativeLM``: token ids plus the collaborative inputs.

TRL's ``DataCollatorForLanguageModeling`` pads tokens and labels only; the hybrid model also needs
``cf_history`` (the user's item ids for SASRec) and ``cf_items`` (ids of the ``<|item_cf|>`` slots). So the
datasets are passed pre-tokenized (``skip_prepare_dataset``) and this collator builds the whole batch.

Padding conventions:

* tokens: right padding for training (labels carry the answer); left padding for scoring, so the last
  prompt token of every row sits in the last column and only that column's logits are needed.
  ``position_ids`` count real tokens only, so a row gets the same positions, and the same logits, whichever
  side it is padded on and whatever else is in the batch.
* ``cf_history``: **left** padding with 0, as SASRec expects (most recent item in the last column).
* ``cf_items``: right padding with 0, in slot order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def pad(rows: list[list[int]], value: int, side: str) -> torch.Tensor:
    width = max((len(row) for row in rows), default=0)
    out = torch.full((len(rows), max(width, 1)), value, dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            if side == "right":
                out[i, : len(row)] = torch.as_tensor(row)
            else:
                out[i, width - len(row):] = torch.as_tensor(row)
    return out


@dataclass
class PointwiseCollator:
    """``collaborative=False`` for text-only (TALLRec-style) prompts: no cf inputs are produced.
    ``prompt_only=True`` drops the answer token (the last one) and the labels: the scoring batch."""

    pad_token_id: int
    collaborative: bool = True
    padding_side: str = "right"
    prompt_only: bool = False

    def __post_init__(self):
        if self.padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {self.padding_side!r}")

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        ids = [list(row["input_ids"][:-1] if self.prompt_only else row["input_ids"]) for row in rows]
        input_ids = pad(ids, self.pad_token_id, self.padding_side)
        attention_mask = pad([[1] * len(row) for row in ids], 0, self.padding_side)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask,
                 "position_ids": (attention_mask.cumsum(1) - 1).clamp(min=0)}
        if not self.prompt_only:
            batch["labels"] = pad([list(row["labels"]) for row in rows], -100, self.padding_side)
        if self.collaborative:
            batch["cf_history"] = pad([list(row["cf_history"]) for row in rows], 0, "left")
            batch["cf_items"] = pad([list(row["cf_items"]) for row in rows], 0, "right")
        return batch
