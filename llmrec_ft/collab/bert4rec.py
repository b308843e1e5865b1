"""BERT4Rec (Sun et al., CIKM 2019): a bidirectional Transformer trained to fill in masked items.

Same contract as :class:`llmrec_ft.collab.sasrec.SASRec` (left-padded ``input_ids``, every item lookup
through ``self.item_embeddings(ids)``, ``sequence_representation`` / ``score_all_items``), with the two
differences the cloze objective brings:

* Training data are whole windows in which :class:`MaskedItemCollator` replaces random items by
  ``[MASK] = num_items + 1`` (fresh masks every epoch); ``labels`` hold the original item at masked
  positions and 0 elsewhere. Pass :func:`masked_item_windows` and the collator to
  :func:`llmrec_ft.collab.trainer.train_id_model`.
* Scoring appends a ``[MASK]`` after the history (dropping the oldest item if the window is full) and
  ranks the catalogue at that position, as in the paper.

Choices: pre-LN blocks with a final LayerNorm (as our SASRec, so the two Transformers differ only in
attention direction and objective), learned positions counted back from the newest item (invariant to
extra left padding), BERT's output transform (dense, GELU, LayerNorm) and a per-item output bias, softmax
cross-entropy over the full catalogue at masked positions. A row that drew no mask gets its last item
masked, which is also the position evaluation asks about.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import datasets
import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig

from llmrec_ft.collab.base import SequentialRecommender
from llmrec_ft.collab.sequences import left_pad, split_into_windows


class BERT4RecConfig(PretrainedConfig):
    model_type = "llmrec_bert4rec"

    def __init__(self, num_items: int = 1, hidden_size: int = 64, num_blocks: int = 2, num_heads: int = 2,
                 intermediate_size: int = 256, max_len: int = 50, dropout: float = 0.2, mask_prob: float = 0.2,
                 initializer_range: float = 0.02, **kwargs):
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        if num_items < 1 or max_len < 2:
            raise ValueError("num_items must be >= 1 and max_len >= 2 (history + [MASK])")
        if not 0.0 < mask_prob < 1.0:
            raise ValueError(f"mask_prob must be in (0, 1), got {mask_prob}")
        self.num_items = num_items
        self.hidden_size = hidden_size
        self.num_blocks = num_blocks
        self.num_heads = num_heads
        self.intermediate_size = intermediate_size
        self.max_len = max_len
        self.dropout = dropout
        self.mask_prob = mask_prob
        self.initializer_range = initializer_range
        super().__init__(**kwargs)

    @property
    def mask_token_id(self) -> int:
        return self.num_items + 1


class BERT4Rec(SequentialRecommender):
    """``input_ids``: ``[B, L]`` ids in ``0..num_items + 1`` (0 = padding, left; ``num_items + 1`` = [MASK])."""

    config_class = BERT4RecConfig
    base_model_prefix = "bert4rec"

    def __init__(self, config: BERT4RecConfig):
        super().__init__(config)
        hidden = config.hidden_size
        self.item_embeddings = nn.Embedding(config.num_items + 2, hidden, padding_idx=0)
        self.position_embeddings = nn.Embedding(config.max_len, hidden)
        self.embedding_dropout = nn.Dropout(config.dropout)
        block = nn.TransformerEncoderLayer(hidden, config.num_heads, config.intermediate_size, config.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, config.num_blocks, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(hidden)
        self.output_transform = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden))
        self.output_bias = nn.Parameter(torch.zeros(config.num_items + 1))
        self.post_init()

    def encode(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``[B, L, H]`` bidirectional hidden states; padding positions are zero."""
        self.check_length(input_ids)
        length = input_ids.shape[1]
        is_token = input_ids.ne(0)
        if not is_token.any(1).all():
            raise ValueError(f"row {int((~is_token.any(1)).nonzero()[0])} is all padding")
        recency = torch.arange(length - 1, -1, -1, device=input_ids.device)
        x = self.item_embeddings(input_ids) + self.position_embeddings(recency)
        x = self.embedding_dropout(x) * is_token[..., None]
        x = self.blocks(x, src_key_padding_mask=~is_token)
        return self.final_norm(x) * is_token[..., None]

    def item_logits(self, states: torch.Tensor) -> torch.Tensor:
        """BERT's output head: transform, then dot products with the items plus a per-item bias."""
        return super().item_logits(self.output_transform(states)) + self.output_bias

    def with_mask_appended(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The history's last ``max_len - 1`` columns followed by a [MASK] column."""
        self.check_left_padded(input_ids)
        mask = input_ids.new_full((input_ids.shape[0], 1), self.config.mask_token_id)
        return torch.cat([input_ids[:, -(self.config.max_len - 1):], mask], dim=1)

    def sequence_representation(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``[B, H]``: the hidden state at the [MASK] appended after the history (the user embedding)."""
        return self.encode(self.with_mask_appended(input_ids))[:, -1]


def masked_item_windows(train: datasets.Dataset, max_len: int) -> datasets.Dataset:
    """``input_ids`` rows: each user's training sequence cut into windows of at most ``max_len`` items."""
    windows = []
    for row, items in enumerate(train["items"]):
        if any(item < 1 for item in items):
            raise ValueError(f"train split, row {row}: item ids must be >= 1 (0 is padding), got {items}")
        windows.extend(split_into_windows(items, max_len - 1) if len(items) > 1 else [list(items)])
    if not windows:
        raise ValueError("train split is empty: nothing to learn from")
    return datasets.Dataset.from_dict({"input_ids": windows})


@dataclass
class MaskedItemCollator:
    """Left-pads windows and masks each item with probability ``mask_prob`` (at least one per row)."""

    mask_token_id: int
    mask_prob: float = 0.2

    def __call__(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        items = left_pad([f["input_ids"] for f in features])
        is_item = items.ne(0)
        masked = (torch.rand(items.shape) < self.mask_prob) & is_item
        masked[~masked.any(1), -1] = True  # rows that drew no mask: the last item, as at evaluation
        return {"input_ids": items.masked_fill(masked, self.mask_token_id),
                "labels": items.masked_fill(~masked, 0)}


AutoConfig.register(BERT4RecConfig.model_type, BERT4RecConfig)
AutoModel.register(BERT4RecConfig, BERT4Rec)
