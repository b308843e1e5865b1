"""Fuse an adapted LLM text embedding into a collaborative backbone's item embeddings.

Every backbone in :mod:`llmrec_ft.collab` (SASRec, GRU4Rec, BERT4Rec) looks items up -- for its inputs and
for scoring the whole catalogue -- only through ``model.item_embeddings(ids)``. Swapping that module for a
:class:`FusedItemEmbedding` therefore injects text into both sides of the dot product without touching the
backbone's code.

Fusion is a **sum**, ``e_i = e_i^ID + A(t_i)``: it keeps the backbone's width, makes the ID-only model the
special case ``A = 0``, and lets the ID table learn the collaborative residual the text does not explain.
The SpecTran paper fuses the adapted embedding "with the ID embedding" before the backbone, but the operator
is not in the parts of the paper we could read (see :mod:`llmrec_ft.adapters.spectran`), so the sum is our
choice, for the reasons above.
Concatenation would change the backbone's hidden size and break the drop-in property.
Special ids (0 = padding, ``num_items + 1`` = BERT4Rec's [MASK]) have no text and keep their ID embedding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llmrec_ft.adapters.baselines import MLPAdapter, SVDTopKAdapter
from llmrec_ft.adapters.spectran import SpecTranAdapter

ADAPTERS = {"linear": MLPAdapter, "mlp": MLPAdapter, "svd": SVDTopKAdapter, "spectran": SpecTranAdapter}


def build_adapter(kind: str, text_embeddings: torch.Tensor, output_dim: int, **kwargs) -> nn.Module:
    """``kind`` in ``ADAPTERS``; ``"mlp"`` defaults to a hidden width of ``4 * output_dim``."""
    if kind not in ADAPTERS:
        raise ValueError(f"unknown adapter {kind!r}; choose one of {sorted(ADAPTERS)} (or 'none' for ID-only)")
    if kind == "mlp":
        kwargs.setdefault("hidden_dim", 4 * output_dim)
    return ADAPTERS[kind](text_embeddings, output_dim, **kwargs)


class FusedItemEmbedding(nn.Module):
    """Drop-in replacement for an ``nn.Embedding`` item table: ``forward(ids) = id_embedding(ids) + text[ids]``."""

    def __init__(self, id_embedding: nn.Embedding, adapter: nn.Module):
        super().__init__()
        if adapter.output_dim != id_embedding.embedding_dim:
            raise ValueError(f"adapter output_dim={adapter.output_dim} != item embedding size "
                             f"{id_embedding.embedding_dim}")
        if id_embedding.num_embeddings < adapter.num_items + 1:
            raise ValueError(f"the item table has {id_embedding.num_embeddings} rows but the text embeddings "
                             f"cover {adapter.num_items} items (+1 padding row needed)")
        self.id_embedding = id_embedding
        self.adapter = adapter

    @property
    def num_embeddings(self) -> int:
        return self.id_embedding.num_embeddings

    @property
    def embedding_dim(self) -> int:
        return self.id_embedding.embedding_dim

    def text_table(self) -> torch.Tensor:
        """``[num_embeddings, dim]`` adapted text embedding per id, zero for padding and special ids."""
        extra = self.num_embeddings - 1 - self.adapter.num_items
        return F.pad(self.adapter(), (0, 0, 1, extra))

    @property
    def weight(self) -> torch.Tensor:
        """The fused table, for code that reads ``item_embeddings.weight`` directly."""
        return self.id_embedding.weight + self.text_table()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.id_embedding(ids) + F.embedding(ids, self.text_table())


def attach_adapter(model: nn.Module, adapter: nn.Module) -> nn.Module:
    """Replace ``model.item_embeddings`` by its fusion with ``adapter``; returns ``model``."""
    if not isinstance(getattr(model, "item_embeddings", None), nn.Embedding):
        raise TypeError(f"{type(model).__name__} has no nn.Embedding `item_embeddings` to fuse with")
    catalog = getattr(getattr(model, "config", None), "num_items", adapter.num_items)
    if catalog != adapter.num_items:
        raise ValueError(f"the model has {catalog} items but the text embeddings have {adapter.num_items} rows")
    model.item_embeddings = FusedItemEmbedding(model.item_embeddings, adapter)
    return model
