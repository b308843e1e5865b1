"""SASRec (Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018) as a ``PreTrainedModel``.

A causal Transformer reads a user's item sequence; the output at each position, dotted with the (shared)
item embeddings, scores the next item. The output at the last position is the user's collaborative
embedding, which the LLM recipes consume through :meth:`SASRec.sequence_representation`.

Choices where the paper or its re-implementations differ (see each for why):

* **Left padding**, positions counted back from the most recent item (``recency``), as in the authors'
  code: the last column is always the newest item, so the user embedding is simply ``hidden[:, -1]``, and
  extra left padding does not change any output.
* **Pre-LN blocks** (``nn.TransformerEncoderLayer(norm_first=True)``, GELU FFN of ``intermediate_size``)
  plus a final LayerNorm, and item embeddings scaled by ``sqrt(hidden)`` on input, as in the authors' code.
* **Loss** ``"ce"`` (default): softmax cross-entropy over the full catalog at every position. Klenitskiy &
  Vasilev ("Turning Dross Into Gold Loss: is BERT4Rec really better than SASRec?", RecSys 2023) show it
  beats the paper's ``"bce"`` (one sampled negative per position), which stays available. BCE negatives are
  uniform over the catalog; a negative that equals the positive is ignored (the authors also exclude the
  user's other items; with ~1.7k items that changes little and needs the history inside the loss).

Every item lookup, for inputs and for scoring, goes through ``self.item_embeddings(ids)``: swap that module
(e.g. for a text-adapter fusion) and the whole model follows. Nothing else touches its ``.weight``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig

from llmrec_ft.collab.base import SequentialRecommender


class SASRecConfig(PretrainedConfig):
    model_type = "llmrec_sasrec"

    def __init__(self, num_items: int = 1, hidden_size: int = 64, num_blocks: int = 2, num_heads: int = 1,
                 intermediate_size: int = 256, max_len: int = 50, dropout: float = 0.2, loss_type: str = "ce",
                 num_negatives: int = 1, initializer_range: float = 0.02, **kwargs):
        if loss_type not in ("ce", "bce"):
            raise ValueError(f"loss_type must be 'ce' or 'bce', got {loss_type!r}")
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        if num_items < 1 or max_len < 1 or num_negatives < 1:
            raise ValueError("num_items, max_len and num_negatives must be >= 1")
        self.num_items = num_items
        self.hidden_size = hidden_size
        self.num_blocks = num_blocks
        self.num_heads = num_heads
        self.intermediate_size = intermediate_size
        self.max_len = max_len
        self.dropout = dropout
        self.loss_type = loss_type
        self.num_negatives = num_negatives
        self.initializer_range = initializer_range
        super().__init__(**kwargs)


class SASRec(SequentialRecommender):
    """``input_ids``: ``[B, L]`` item ids, **left**-padded with 0, ``L <= config.max_len``."""

    config_class = SASRecConfig
    base_model_prefix = "sasrec"

    def __init__(self, config: SASRecConfig):
        super().__init__(config)
        hidden = config.hidden_size
        self.item_embeddings = nn.Embedding(config.num_items + 1, hidden, padding_idx=0)
        self.position_embeddings = nn.Embedding(config.max_len, hidden)
        self.embedding_dropout = nn.Dropout(config.dropout)
        block = nn.TransformerEncoderLayer(hidden, config.num_heads, config.intermediate_size, config.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, config.num_blocks, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(hidden)
        self.post_init()

    def encode(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``[B, L, H]`` causal hidden states; padding positions are zero."""
        self.check_length(input_ids)
        length = input_ids.shape[1]
        is_item = input_ids.ne(0)
        recency = torch.arange(length - 1, -1, -1, device=input_ids.device)
        x = self.item_embeddings(input_ids) * math.sqrt(self.config.hidden_size) + self.position_embeddings(recency)
        x = self.embedding_dropout(x) * is_item[..., None]
        # Query i sees keys j <= i that are items. A padding query sees itself only, so no row is empty (NaN).
        causal = torch.ones(length, length, dtype=torch.bool, device=input_ids.device).tril()
        diagonal = torch.eye(length, dtype=torch.bool, device=input_ids.device)
        allowed = causal & (is_item[:, None, :] | diagonal)
        blocked = (~allowed).repeat_interleave(self.config.num_heads, dim=0)  # [B * heads, L, L]
        x = self.blocks(x, mask=blocked)
        return self.final_norm(x) * is_item[..., None]

    def next_item_loss(self, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labelled = labels.ne(0)
        states, targets = hidden[labelled], labels[labelled]
        if self.config.loss_type == "ce":
            return self.catalog_cross_entropy(states, targets)
        positive = (states * self.item_embeddings(targets)).sum(-1)
        negative_ids = torch.randint(1, self.config.num_items + 1, (len(targets), self.config.num_negatives),
                                     device=targets.device)
        negative = (states[:, None, :] * self.item_embeddings(negative_ids)).sum(-1)
        keep = negative_ids.ne(targets[:, None]).float()
        negative_loss = (F.softplus(negative.float()) * keep).sum(1) / self.config.num_negatives
        return (F.softplus(-positive.float()) + negative_loss).mean()

    def sequence_representation(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``[B, H]``: the state at the most recent item, i.e. the user embedding."""
        right_padded = input_ids[:, -1].eq(0) & input_ids.ne(0).any(1)
        if right_padded.any():
            raise ValueError(f"row {int(right_padded.nonzero()[0])} is right-padded; SASRec expects left padding "
                             "(the most recent item in the last column)")
        return self.encode(input_ids)[:, -1]


AutoConfig.register(SASRecConfig.model_type, SASRecConfig)
AutoModel.register(SASRecConfig, SASRec)
