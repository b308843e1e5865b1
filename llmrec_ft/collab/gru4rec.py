"""GRU4Rec (Hidasi et al., ICLR 2016) as a ``PreTrainedModel`` with SASRec's interface.

A GRU reads the item sequence; its state after each item, projected back to the item-embedding width and
dotted with the shared item embeddings, scores the next item. Same contract as
:class:`llmrec_ft.collab.sasrec.SASRec`: left-padded ``input_ids``, ``labels`` = next item per position
(0 = no loss), every item lookup through ``self.item_embeddings(ids)`` (so a text adapter can be fused in),
``sequence_representation`` / ``score_all_items`` for evaluation.

Choices (RecBole's GRU4Rec, which is what ID-model comparisons on ML-100K usually run):

* Full-catalog softmax cross-entropy at every position (RecBole's ``CE``), not the paper's session-parallel
  ranking losses: the same objective as our SASRec, so the backbones differ only in the sequence encoder.
* Embedding dropout, one GRU layer, a linear map ``gru_hidden -> hidden`` before scoring, xavier-initialised
  GRU weights.
* Left padding is turned into packed sequences: a GRU that ran over leading padding would drift away from
  its zero state, so the output would depend on how much padding a batch has.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig

from llmrec_ft.collab.base import SequentialRecommender


class GRU4RecConfig(PretrainedConfig):
    model_type = "llmrec_gru4rec"

    def __init__(self, num_items: int = 1, hidden_size: int = 64, gru_hidden_size: int = 128, num_layers: int = 1,
                 max_len: int = 50, dropout: float = 0.3, initializer_range: float = 0.02, **kwargs):
        if num_items < 1 or max_len < 1 or num_layers < 1:
            raise ValueError("num_items, max_len and num_layers must be >= 1")
        self.num_items = num_items
        self.hidden_size = hidden_size
        self.gru_hidden_size = gru_hidden_size
        self.num_layers = num_layers
        self.max_len = max_len
        self.dropout = dropout
        self.initializer_range = initializer_range
        super().__init__(**kwargs)


def _roll_rows(x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Row ``b`` of ``x`` (``[B, L, ...]``) rotated left by ``shifts[b]`` positions."""
    length = x.shape[1]
    index = (torch.arange(length, device=x.device)[None, :] + shifts[:, None]) % length
    return x.gather(1, index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x))


class GRU4Rec(SequentialRecommender):
    """``input_ids``: ``[B, L]`` item ids, **left**-padded with 0, ``L <= config.max_len``."""

    config_class = GRU4RecConfig
    base_model_prefix = "gru4rec"

    def __init__(self, config: GRU4RecConfig):
        super().__init__(config)
        self.item_embeddings = nn.Embedding(config.num_items + 1, config.hidden_size, padding_idx=0)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.gru = nn.GRU(config.hidden_size, config.gru_hidden_size, config.num_layers, batch_first=True)
        self.output_proj = nn.Linear(config.gru_hidden_size, config.hidden_size)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, nn.GRU):
            for name, param in module.named_parameters():
                nn.init.xavier_uniform_(param) if "weight" in name else nn.init.zeros_(param)
        else:
            super()._init_weights(module)

    def encode(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``[B, L, H]`` states after each item (left-padded like the input; padding positions are zero)."""
        self.check_length(input_ids)
        length = input_ids.shape[1]
        lengths = input_ids.ne(0).sum(1)
        if (lengths == 0).any():
            raise ValueError(f"row {int((lengths == 0).nonzero()[0])} has no item")
        x = self.embedding_dropout(self.item_embeddings(input_ids))
        right = _roll_rows(x, length - lengths)  # items first, padding last: what packing expects
        packed = nn.utils.rnn.pack_padded_sequence(right, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=length)
        hidden = _roll_rows(self.output_proj(out), lengths % length)  # back to left padding
        return hidden * input_ids.ne(0)[..., None]

    def sequence_representation(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``[B, H]``: the state after the most recent item (the user embedding)."""
        self.check_left_padded(input_ids)
        return self.encode(input_ids)[:, -1]


AutoConfig.register(GRU4RecConfig.model_type, GRU4RecConfig)
AutoModel.register(GRU4RecConfig, GRU4Rec)
