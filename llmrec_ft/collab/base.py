"""What SASRec, GRU4Rec and BERT4Rec share: one item table that both reads sequences and scores the catalogue.

Each backbone defines ``item_embeddings`` (row 0 = padding, rows ``1..num_items`` = items), ``encode`` and
``sequence_representation`` (the user embedding). Item scores are dot products with the item rows, so every
lookup goes through ``self.item_embeddings(ids)`` and a text adapter fused into that module
(:mod:`llmrec_ft.adapters.fusion`) reaches inputs and outputs alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel
from transformers.utils import ModelOutput


@dataclass
class SequenceModelOutput(ModelOutput):
    loss: torch.FloatTensor | None = None
    hidden_states: torch.FloatTensor | None = None


class SequentialRecommender(PreTrainedModel):
    """Base class: the loss, full-catalogue scoring and input checks around a subclass's ``encode``."""

    def all_item_embeddings(self) -> torch.Tensor:
        """``[num_items + 1, H]``: padding and the real items (never a special token such as [MASK])."""
        return self.item_embeddings(torch.arange(self.config.num_items + 1, device=self.device))

    def check_length(self, input_ids: torch.Tensor) -> None:
        if input_ids.shape[1] > self.config.max_len:
            raise ValueError(f"sequence length {input_ids.shape[1]} exceeds max_len {self.config.max_len}; "
                             "keep the last items")

    def item_logits(self, states: torch.Tensor) -> torch.Tensor:
        """``[N, H]`` hidden states -> ``[N, num_items + 1]`` scores; column 0 (padding) is ``-inf``, so it is
        never the predicted next item and ``topk`` never returns it."""
        logits = states @ self.all_item_embeddings().T
        logits[:, 0] = float("-inf")
        return logits

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> SequenceModelOutput:
        """``labels``: ``[B, L]`` target item at each position (the next item; BERT4Rec: the masked one),
        0 where there is no loss."""
        hidden = self.encode(input_ids)
        loss = None if labels is None else self.next_item_loss(hidden, labels)
        return SequenceModelOutput(loss=loss, hidden_states=hidden)

    def next_item_loss(self, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labelled = labels.ne(0)
        return self.catalog_cross_entropy(hidden[labelled], labels[labelled])

    def check_left_padded(self, input_ids: torch.Tensor) -> None:
        right_padded = input_ids[:, -1].eq(0)
        if right_padded.any():
            raise ValueError(f"row {int(right_padded.nonzero()[0])} is right-padded; {type(self).__name__} expects "
                             "left padding (the most recent item in the last column)")

    def catalog_cross_entropy(self, states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Softmax cross-entropy of ``targets`` (``[N]`` item ids) over the whole catalogue -- or, in training
        with ``config.train_loss == "infonce"``, over sampled negatives (:mod:`llmrec_ft.adapters.infonce`)."""
        if self.training and getattr(self.config, "train_loss", "ce") == "infonce":
            from llmrec_ft.adapters.infonce import sampled_softmax_loss
            return sampled_softmax_loss(states, targets, self.item_embeddings, self.config.num_items,
                                        self.config.infonce_negatives, self.config.infonce_temperature)
        return F.cross_entropy(self.item_logits(states).float(), targets)

    def score_all_items(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``[B, num_items + 1]`` next-item scores of each user's history."""
        return self.item_logits(self.sequence_representation(input_ids))
