"""HSTU (Zhai et al., "Actions Speak Louder than Words", ICML 2024, arXiv 2402.17152) with SASRec's interface.

One HSTU layer (the paper's three equations: pointwise projection, spatial aggregation, pointwise
transformation; the authors' ``generative-recommenders`` code for the details):

    U, V, Q, K = Split(SiLU(f1(LayerNorm(X))))                       f1: Linear(d, 4 * d)
    A = SiLU(Q K^T / sqrt(d_head) + rab^p) / n  (causal)             pointwise aggregated attention, no softmax
    Y = X + f2(Dropout(LayerNorm(A V) * U))                          gating by U, then f2: Linear(d, d)

* **Pointwise aggregated attention**: SiLU of the scores instead of a softmax, divided by a constant ``n``
  (``config.max_len``, as the authors divide by the maximum sequence length) -- so the weight of a past item
  does not shrink because others are present, which is what lets HSTU count intensities.
* **Relative attention bias** ``rab^p``: one learned scalar per head and causal distance ``i - j``
  (``0..max_len - 1``). The paper also adds a bucketed *time* bias ``rab^t`` from timestamps; the toolkit's ID
  backbones receive item ids only (no timestamps), so it is left out -- the main simplification.
* **Gating** by ``U``, LayerNorm of the attention output before it (the authors' ``o_input = u * norm(attn)``).

Other choices: item embeddings scaled by ``sqrt(hidden)`` plus a learned *recency* position embedding,
left padding and a final LayerNorm, exactly as our SASRec, so the two differ only in the block; the output is
not L2-normalised (the authors pair that with cosine sampled softmax; here the loss is the toolkit's full
cross-entropy or InfoNCE, :mod:`llmrec_ft.adapters.infonce`, both on dot products). Attention scores are
scaled by ``1/sqrt(d_head)`` for a stable start at our small widths (the reference code has no such factor).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig

from llmrec_ft.collab.base import SequentialRecommender


class HSTUConfig(PretrainedConfig):
    model_type = "llmrec_hstu"

    def __init__(self, num_items: int = 1, hidden_size: int = 64, num_blocks: int = 2, num_heads: int = 1,
                 max_len: int = 50, dropout: float = 0.2, initializer_range: float = 0.02, **kwargs):
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        if num_items < 1 or max_len < 1 or num_blocks < 1:
            raise ValueError("num_items, max_len and num_blocks must be >= 1")
        self.num_items = num_items
        self.hidden_size = hidden_size
        self.num_blocks = num_blocks
        self.num_heads = num_heads
        self.max_len = max_len
        self.dropout = dropout
        self.initializer_range = initializer_range
        super().__init__(**kwargs)


class HSTUBlock(nn.Module):
    """One HSTU layer (module docstring). ``x``: ``[B, L, H]``; ``allowed``: ``[B, L, L]`` bool (query, key)."""

    def __init__(self, config: HSTUConfig):
        super().__init__()
        self.num_heads, self.max_len = config.num_heads, config.max_len
        hidden = config.hidden_size
        self.input_norm = nn.LayerNorm(hidden)
        self.uvqk = nn.Linear(hidden, 4 * hidden)
        self.attention_norm = nn.LayerNorm(hidden)
        self.output = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(config.dropout)
        self.relative_bias = nn.Parameter(torch.zeros(config.num_heads, config.max_len))

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        batch, length, hidden = x.shape
        heads, head_dim = self.num_heads, hidden // self.num_heads
        u, v, q, k = F.silu(self.uvqk(self.input_norm(x))).chunk(4, dim=-1)
        q, k, v = (t.view(batch, length, heads, head_dim).transpose(1, 2) for t in (q, k, v))  # [B, h, L, d]
        distance = (torch.arange(length, device=x.device)[:, None] - torch.arange(length, device=x.device)[None, :])
        bias = self.relative_bias[:, distance.clamp(0, self.max_len - 1)]  # [h, L, L]
        scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim) + bias
        weights = F.silu(scores) / self.max_len * allowed[:, None]
        attended = (weights @ v).transpose(1, 2).reshape(batch, length, hidden)
        return x + self.output(self.dropout(self.attention_norm(attended) * u))


class HSTU(SequentialRecommender):
    """``input_ids``: ``[B, L]`` item ids, **left**-padded with 0, ``L <= config.max_len``."""

    config_class = HSTUConfig
    base_model_prefix = "hstu"

    def __init__(self, config: HSTUConfig):
        super().__init__(config)
        hidden = config.hidden_size
        self.item_embeddings = nn.Embedding(config.num_items + 1, hidden, padding_idx=0)
        self.position_embeddings = nn.Embedding(config.max_len, hidden)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(HSTUBlock(config) for _ in range(config.num_blocks))
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
        causal = torch.ones(length, length, dtype=torch.bool, device=input_ids.device).tril()
        allowed = causal & is_item[:, None, :] & is_item[:, :, None]  # SiLU weights need no "non-empty row" guard
        for block in self.blocks:
            x = block(x, allowed) * is_item[..., None]
        return self.final_norm(x) * is_item[..., None]

    def sequence_representation(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``[B, H]``: the state at the most recent item, i.e. the user embedding."""
        self.check_left_padded(input_ids)
        return self.encode(input_ids)[:, -1]


AutoConfig.register(HSTUConfig.model_type, HSTUConfig)
AutoModel.register(HSTUConfig, HSTU)
